import { Command } from 'commander';
import { isGimError } from '../../gim/errors.js';
import { StackStore } from '../../gim/store/stack-store.js';
import { isUntrained, latestProbe } from '../../gim/store/manifest.js';
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
      // A stack or version damaged on disk is listed with the reason, not fatal to the listing.
      const unavailable: { name: string; version?: number; unavailable: string }[] = [];
      for (const s of stacks) {
        if (s.unavailable !== undefined)
          unavailable.push({ name: s.name, unavailable: s.unavailable.message });
        for (const v of s.versions) {
          let m;
          try {
            m = await store.check(`${s.name}@${v}`);
          } catch (e) {
            if (!isGimError(e) || e.code !== 'model_unavailable') throw e;
            unavailable.push({ name: s.name, version: v, unavailable: e.message });
            continue;
          }
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
            // Published with its initial weights (train --epochs 0): a random-init baseline.
            untrained: isUntrained(m),
            probe: latestProbe(m)?.score ?? null,
            seed: m.training.seed,
            createdAt: m.createdAt,
          });
        }
      }
      if (o.json) {
        process.stdout.write(`${JSON.stringify([...rows, ...unavailable], null, 2)}\n`);
        return;
      }
      for (const u of unavailable) {
        const at = u.version === undefined ? u.name : `${u.name}@${u.version}`;
        process.stdout.write(`${at}  UNAVAILABLE: ${u.unavailable}\n`);
      }
      if (rows.length === 0 && unavailable.length === 0) {
        process.stdout.write(`no stacks in ${store.root}\n`);
        return;
      }
      for (const r of rows) {
        const layers = r.layers.map((l) => `${l.layer}:${l.dim}`).join(' ');
        const grid = r.layers[0]?.grid.join('x') ?? '';
        process.stdout.write(
          `${r.name}@${r.version}${r.labels.length ? ` [${r.labels.join(', ')}]` : ''}  ${r.modality}  ` +
            `grid ${grid}  layers(dim) ${layers}  ${r.schedule}` +
            `${r.untrained ? `  UNTRAINED (initial weights, seed ${r.seed})` : ''}` +
            `${r.probe ? `  probe ${(100 * r.probe.accuracy).toFixed(1)}% (layer ${r.probe.best.layer} ${r.probe.best.pooling})` : ''}` +
            `  ${r.createdAt}\n`,
        );
      }
    });
}
