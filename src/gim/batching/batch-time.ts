/**
 * How long a batch takes, learnt from the batches that ran: ms ≈ perItem × items + perCost × cost,
 * where `cost` is the sum of the items' costs (1 per image; seconds for an audio clip). Two terms
 * because an audio batch pays both per clip (one forward pass per clip length, ~55 ms each on
 * wasm for the default recipe) and per second of audio (~30 ms), and batches mix them in any
 * proportion; for images cost = items and the fit is one rate per item.
 *
 * An exponentially weighted least-squares fit (the newest batch weighs `weight`), so it follows a
 * change of load or backend within a few batches. Until a batch has run there is no estimate.
 */
export class BatchTimeModel {
  // Decayed sums of n², n·c, c², n·ms, c·ms over the observed batches.
  private nn = 0;
  private nc = 0;
  private cc = 0;
  private ny = 0;
  private cy = 0;
  private perItem = 0;
  private perCost = 0;
  private observed = false;
  /** Batches observed so far. */
  samples = 0;

  constructor(private readonly weight = 0.2) {}

  /** A batch of `items` items of total `cost` took `ms`. */
  observe(items: number, cost: number, ms: number): void {
    if (!(items > 0) || !(cost >= 0) || !Number.isFinite(cost) || !(ms >= 0)) return;
    const keep = this.observed ? 1 - this.weight : 0;
    this.nn = keep * this.nn + items * items;
    this.nc = keep * this.nc + items * cost;
    this.cc = keep * this.cc + cost * cost;
    this.ny = keep * this.ny + items * ms;
    this.cy = keep * this.cy + cost * ms;
    this.observed = true;
    this.samples++;
    this.fit();
  }

  /** Estimated ms of a batch of `items` items of total `cost`; undefined before any batch ran. */
  estimate(items: number, cost: number): number | undefined {
    if (!this.observed) return undefined;
    return this.perItem * items + this.perCost * cost;
  }

  /** The fitted rates, for messages. */
  rates(): { perItemMs: number; perCostMs: number } | undefined {
    return this.observed ? { perItemMs: this.perItem, perCostMs: this.perCost } : undefined;
  }

  private fit(): void {
    const det = this.nn * this.cc - this.nc * this.nc;
    // Costs proportional to item counts (images; clips all of one length) leave the two rates
    // unidentifiable: then one rate per item, which is exact for that mix.
    if (det > 1e-9 * this.nn * this.cc) {
      const perItem = (this.ny * this.cc - this.cy * this.nc) / det;
      const perCost = (this.cy * this.nn - this.ny * this.nc) / det;
      if (perItem >= 0 && perCost >= 0) {
        this.perItem = perItem;
        this.perCost = perCost;
        return;
      }
      // A negative rate is noise: keep the term that explains the time on its own.
      if (perCost < 0) this.onlyPerItem();
      else this.onlyPerCost();
      return;
    }
    this.onlyPerItem();
  }

  private onlyPerItem(): void {
    this.perItem = this.ny / this.nn;
    this.perCost = 0;
  }

  private onlyPerCost(): void {
    this.perItem = 0;
    this.perCost = this.cy / this.cc;
  }
}
