import { Command } from 'commander';
import { StackStore } from '../../gim/store/stack-store.js';
import { modelsDirOption } from '../shared.js';

export function modelsCommand(): Command {
  return new Command('models')
    .description('list stacks, versions, labels, layers and embedding dimensions')
    .addOption(modelsDirOption())
    .option('--json', 'print JSON')
    .action(async (o: { modelsDir: string; json?: boolean }) => {
      const store = new StackStore(o.modelsDir);
      const stacks = await store.list();
      const rows = [];
      for (const s of stacks)
        for (const v of s.versions) {
          const m = await store.loadManifest(`${s.name}@${v}`);
          const labels = Object.entries(s.labels)
            .filter(([, lv]) => lv === v)
            .map(([l]) => l);
          rows.push({
            name: s.name,
            version: v,
            labels,
            modality: m.modality,
            layers: m.modules.map((mod) => ({
              layer: mod.index,
              grid: mod.gridShape,
              outputShape: mod.outputShape,
              dim: mod.embeddingDim,
              finalLoss: mod.finalLoss,
            })),
            schedule: m.training.schedule,
            createdAt: m.createdAt,
          });
        }
      if (o.json) {
        process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return;
      }
      if (rows.length === 0) {
        process.stdout.write(`no stacks in ${store.root}\n`);
        return;
      }
      for (const r of rows) {
        const layers = r.layers.map((l) => `${l.layer}:${l.dim}`).join(' ');
        const grid = r.layers[0]?.grid.join('x') ?? '';
        process.stdout.write(
          `${r.name}@${r.version}${r.labels.length ? ` [${r.labels.join(', ')}]` : ''}  ${r.modality}  ` +
            `grid ${grid}  layers(dim) ${layers}  ${r.schedule}  ${r.createdAt}\n`,
        );
      }
    });
}
