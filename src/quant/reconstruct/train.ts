/**
 * The reconstruction loop of one block: minimise the block output MSE against the teacher with
 * Adam over minibatches of calibration windows, under the smooth multi-stage schedule, and keep the
 * result only if it beats the starting point.
 *
 *   L = mean_{t,j} (block_student(x_t)_j − y_t,j)²      (x: the student's inputs, y: the teacher's outputs)
 *
 * Learning rates are relative to each tensor's initial mean magnitude (latent weights: mean|Λ|,
 * scales: mean α, low-rank factors: their RMS, thresholds / clip ratios: max(|t|, 0.1)) and decay
 * with a cosine from 1 to 0 over the iterations.
 */
import { Rng } from '../../linalg/random.js';
import { Adam } from './adam.js';
import type { ReconBlock } from './block.js';
import type { Gemm } from './gemm.js';
import type { QuantSite } from './quant-site.js';
import { buildSchedule, FINAL_STAGE, type StagePoint } from './schedule.js';

export interface TrainSettings {
  iterations: number;
  /** windows per step */
  batch: number;
  lrWeight: number;
  lrScale: number;
  lrAct: number;
  /** fraction of the iterations in the final (target) stage */
  finalFraction: number;
  /** fraction of each stage spent handing over from the previous one */
  handover: number;
  /** windows (the first ones) on which the loss before / after is measured */
  evalWindows: number;
  seed: number;
}

export interface BlockData {
  /** the student's inputs [windows, seq, hidden] */
  inputs: Float32Array;
  /** the teacher's outputs [windows, seq, hidden] */
  targets: Float32Array;
  windows: number;
  seq: number;
  hidden: number;
}

export interface TrainReport {
  /** output MSE of the starting point (the no-reconstruction quantization) on the eval windows */
  lossBefore: number;
  /** output MSE of the frozen student on the same windows */
  lossAfter: number;
  /** false when the reconstruction did not lower the loss and the starting point was kept */
  kept: boolean;
  /** mean training loss over each tenth of the iterations */
  history: number[];
  stageLengths: number[];
}

/** The sites' scalars and factors, to put back when the reconstruction is refused (the steppers keep the tensors). */
interface SiteSnapshot {
  params: number[];
  factors: Float64Array[];
}

function snapshotSites(sites: QuantSite[]): SiteSnapshot {
  return { params: sites.map((s) => s.param), factors: sites.map((s) => Float64Array.from(s.p)) };
}

function restoreSites(sites: QuantSite[], s: SiteSnapshot): void {
  sites.forEach((site, i) => {
    site.param = s.params[i]!;
    site.p.set(s.factors[i]!);
  });
}

function meanAbs(a: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i]!);
  return a.length === 0 ? 0 : s / a.length;
}

function rms(a: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * a[i]!;
  return a.length === 0 ? 0 : Math.sqrt(s / a.length);
}

/**
 * One training step of the block, wherever its parameters live: the block's forward at `at`, the output MSE, its
 * backward, and Adam on every linear's tensors; each site's `grad` gets its parameter gradient (and, with the
 * magnitude alignment, `p` the factors the step computed). The host stepper below runs src/quant/reconstruct/'s
 * ops with `gemm`; a device stepper (src/runtime/device-recon.ts) holds the parameters on the GPU.
 */
export interface BlockStepper {
  step(x: Float32Array, y: Float32Array, batch: number, at: StagePoint, lrScale: number): Promise<number>;
  /** Σ (block(x) − y)² at the final stage on `batch` windows */
  sumSquares(x: Float32Array, y: Float32Array, batch: number): Promise<number>;
  /**
   * Ends the training: with `keep` the trained parameters in the block's arrays, else the block's arrays as they were
   * when the stepper was made (a device stepper: its memory freed either way).
   */
  finish(keep: boolean): Promise<void>;
}

/** The Adam base rate of each linear's tensors (latent, α, A, B) in BLOCK_LINEAR_ROLES order of the block. */
export interface LinearRates {
  latent: number;
  alpha: number;
  a: number;
  b: number;
}

/** Makes a device stepper for the block (windows of `seq` tokens, at most `batch` per step). */
export type StepperFactory = (block: ReconBlock<Float32Array>, rates: LinearRates[], batch: number, seq: number) => Promise<BlockStepper>;

/** The reference stepper: the block's ops in TypeScript, products on `gemm`, Adam (adam.ts) on the host. */
export function hostStepper(block: ReconBlock<Float32Array>, rates: LinearRates[], gemm: Gemm): BlockStepper {
  const linears = Object.values(block.params.linears);
  const opt = linears.map((l, i) => ({
    latent: new Adam(l.latent.length, { lr: rates[i]!.latent }),
    alpha: new Adam(l.alpha.length, { lr: rates[i]!.alpha }),
    a: new Adam(l.lrA.length, { lr: rates[i]!.a }),
    b: new Adam(l.lrB.length, { lr: rates[i]!.b }),
  }));
  const learnable = block.allSites().filter((x) => x.learnable);
  // the tensors are trained in place: a copy of the start for finish(false)
  const tensors = linears.flatMap((l) => [l.latent, l.alpha, l.lrA, l.lrB]);
  const start = tensors.map((t) => Float32Array.from(t));
  return {
    async step(x, y, batch, at, lrScale) {
      const { out, cache } = await block.forward(x, batch, x.length / batch / block.dims.hidden, at, gemm);
      const n = out.length;
      let loss = 0;
      const g = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const d = out[i]! - y[i]!;
        loss += d * d;
        g[i] = (2 * d) / n;
      }
      for (const l of linears) l.zeroGrad();
      for (const site of learnable) site.grad = 0;
      await block.backward(g, cache, gemm);
      linears.forEach((l, i) => {
        const o = opt[i]!;
        o.latent.step(l.latent, l.gLatent, lrScale);
        o.alpha.step(l.alpha, l.gAlpha, lrScale);
        if (l.rank > 0) {
          o.a.step(l.lrA, l.gA, lrScale);
          o.b.step(l.lrB, l.gB, lrScale);
        }
        l.invalidate();
      });
      return loss / n;
    },
    async sumSquares(x, y, batch) {
      const { out } = await block.forward(x, batch, x.length / batch / block.dims.hidden, FINAL_STAGE, gemm);
      let sum = 0;
      for (let i = 0; i < out.length; i++) sum += (out[i]! - y[i]!) ** 2;
      return sum;
    },
    finish(keep) {
      if (!keep) {
        tensors.forEach((t, i) => t.set(start[i]!));
        for (const l of linears) l.invalidate();
      }
      return Promise.resolve();
    },
  };
}

/** Output MSE of the block at the final stage on the first `windows` windows. */
async function stepperLoss(stepper: BlockStepper, data: BlockData, windows: number): Promise<number> {
  const n = data.seq * data.hidden;
  let sum = 0;
  for (let w = 0; w < windows; w++) sum += await stepper.sumSquares(data.inputs.subarray(w * n, (w + 1) * n), data.targets.subarray(w * n, (w + 1) * n), 1);
  return sum / (windows * n);
}

/** The Adam base rates of the block's linears: relative to each tensor's initial magnitude (see above). */
export function linearRates(block: ReconBlock<Float32Array>, s: TrainSettings): LinearRates[] {
  return Object.values(block.params.linears).map((l) => ({
    latent: s.lrWeight * meanAbs(l.latent), alpha: s.lrScale * meanAbs(l.alpha), a: s.lrScale * rms(l.lrA), b: s.lrScale * rms(l.lrB),
  }));
}

/**
 * Reconstructs the block in place. With `device`, the steps run on the stepper it makes (the parameters on the GPU);
 * otherwise on the host stepper with `gemm`.
 */
export async function reconstructBlock(block: ReconBlock<Float32Array>, data: BlockData, s: TrainSettings, gemm: Gemm,
  onStep?: (step: number, loss: number) => void, device?: StepperFactory): Promise<TrainReport> {
  const sites = block.allSites();
  const learnable = sites.filter((x) => x.learnable);
  const { seq, hidden } = data;
  const evalWindows = Math.max(1, Math.min(s.evalWindows, data.windows));
  const rates = linearRates(block, s);
  const stepper = device === undefined ? hostStepper(block, rates, gemm) : await device(block, rates, s.batch, seq);
  let finished = false;
  try {
    // the starting point: the calibrated block, as the pipeline would write it without reconstruction
    const lossBefore = await stepperLoss(stepper, data, evalWindows);
    const start = snapshotSites(sites);
    const stageCount = Math.max(...sites.map((x) => x.stages.length));
    const schedule = buildSchedule(stageCount, s.iterations, s.finalFraction, s.handover);
    const siteOpt = learnable.map((x) => new Adam(1, { lr: s.lrAct * Math.max(Math.abs(x.param), 0.1) }));
    const rng = new Rng(s.seed);
    const history: number[] = [];
    const chunk = Math.max(1, Math.ceil(s.iterations / 10));
    let chunkSum = 0;
    let chunkCount = 0;
    const window = seq * hidden;
    // one window per step (the default) is passed as it lies; several are gathered into x, y
    const x = s.batch === 1 ? undefined : new Float32Array(s.batch * window);
    const y = s.batch === 1 ? undefined : new Float32Array(s.batch * window);
    const drawWindows = (): [Float32Array, Float32Array] => {
      const windowPair = (w: number): [Float32Array, Float32Array] =>
        [data.inputs.subarray(w * window, (w + 1) * window), data.targets.subarray(w * window, (w + 1) * window)];
      if (x === undefined || y === undefined) return windowPair(rng.int(data.windows));
      for (let b = 0; b < s.batch; b++) {
        const [xw, yw] = windowPair(rng.int(data.windows));
        x.set(xw, b * window);
        y.set(yw, b * window);
      }
      return [x, y];
    };
    const one = new Float32Array(1);
    const grad = new Float32Array(1);
    for (let step = 0; step < s.iterations; step++) {
      const at = schedule.at(step);
      const lrScale = 0.5 * (1 + Math.cos((Math.PI * step) / s.iterations));
      const [xs, ys] = drawWindows();
      const loss = await stepper.step(xs, ys, s.batch, at, lrScale);
      learnable.forEach((site, i) => {
        one[0] = site.param;
        grad[0] = site.grad;
        siteOpt[i]!.step(one, grad, lrScale);
        const kind = site.stages[site.stages.length - 1]!.kind;
        site.param = kind === 'int' ? Math.min(1, Math.max(0.05, one[0]!)) : Math.max(0, one[0]!);
      });
      chunkSum += loss;
      chunkCount++;
      if (chunkCount === chunk || step === s.iterations - 1) {
        history.push(chunkSum / chunkCount);
        chunkSum = 0;
        chunkCount = 0;
      }
      onStep?.(step, loss);
    }
    const lossAfter = await stepperLoss(stepper, data, evalWindows);
    const kept = lossAfter < lossBefore;
    await stepper.finish(kept);
    finished = true;
    if (!kept) restoreSites(sites, start);
    return { lossBefore, lossAfter, kept, history, stageLengths: [...schedule.lengths] };
  } finally {
    if (!finished) await stepper.finish(false).catch(() => undefined);
  }
}
