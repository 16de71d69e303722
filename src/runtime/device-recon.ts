/**
 * The block-wise reconstruction's steps on the block engine's GPU (issue #16): a BlockStepper
 * (src/quant/reconstruct/train.ts) whose student — latent weights, scales, low-rank factors and their Adam
 * moments — lives on the device (native/runtime/recon_trainer.h; native/ops/recon/), one native call per step.
 * The sites' scalar parameters and their Adam stay on the host (train.ts): each step takes the sites' points and
 * returns their gradients. The TypeScript ops of src/quant/reconstruct/ are its reference
 * (test/quant/reconstruct/gpu-check-device-step.mjs compares the two on the GPU machine).
 */
import type { TrainQuantizer } from '../quant/reconstruct/act-quant.js';
import type { ReconBlock, SiteName } from '../quant/reconstruct/block.js';
import type { QuantSite } from '../quant/reconstruct/quant-site.js';
import { FINAL_STAGE, type StagePoint } from '../quant/reconstruct/schedule.js';
import { BLOCK_LINEAR_ROLES } from '../quant/reconstruct/student.js';
import type { BlockStepper, LinearRates, StepperFactory } from '../quant/reconstruct/train.js';
import { runtimeError } from './engine.js';
import type { RuntimeModelHandle } from './load.js';

/** The native trainer (native/src/addon_runtime.cpp). */
export type RuntimeTrainerHandle = { readonly __brand: 'bwq-recon-trainer' };

export interface ReconAddon {
  rtReconCreate(model: RuntimeModelHandle, dims: Float64Array, fixed: (Float32Array | null)[],
    linears: (Float32Array | null)[][], linearDims: Int32Array, rates: Float64Array, rotations: ((Float32Array | null)[] | null)[],
    rotationDims: Int32Array): RuntimeTrainerHandle;
  rtReconStep(trainer: RuntimeTrainerHandle, x: Float32Array, y: Float32Array, batch: number, sites: Float64Array, lrScale: number): Float64Array;
  rtReconLoss(trainer: RuntimeTrainerHandle, x: Float32Array, y: Float32Array, batch: number, sites: Float64Array): number;
  rtReconRead(trainer: RuntimeTrainerHandle, linear: number, what: 0 | 1, latent: Float32Array, alpha: Float32Array,
    a: Float32Array | null, b: Float32Array | null): void;
  rtFree(handle: RuntimeTrainerHandle): void;
}

export function hasReconBinding(addon: object): addon is ReconAddon {
  return typeof (addon as Partial<ReconAddon>).rtReconCreate === 'function';
}

const SITES = 8;
const SITE_VALUES = 13;
const ROTATED_SITES: readonly SiteName[] = ['attn_in', 'attn_out', 'mlp_in', 'mlp_out'];

function kindOf(q: TrainQuantizer): [number, number] {
  switch (q.kind) {
    case 'none': return [0, 0];
    case 'int': return [1, q.bits];
    case 'ternary': return [2, 0];
    case 'levels': return [3, q.levels];
  }
}

function f32(a: ArrayLike<number>): Float32Array {
  return a instanceof Float32Array ? a : Float32Array.from(a);
}

/** The sites of a block in the trainer's order (attention operands undefined without an attention recipe). */
function blockSites(block: ReconBlock<Float32Array>): (QuantSite | undefined)[] {
  const s = block.params.sites;
  const a = block.params.attention;
  return [s.attn_in, s.attn_out, s.mlp_in, s.mlp_out, a?.query, a?.key, a?.value, a?.probs];
}

/** quant-site.ts forward's point of each site at `at` (QuantSite.pointAt), written into `out` (13 values per site). */
function sitePoints(sites: (QuantSite | undefined)[], at: StagePoint, out: Float64Array): ReturnType<QuantSite['pointAt']>[] {
  out.fill(0);
  return sites.map((site, i) => {
    if (site === undefined) return { stage: 0, lambda: 1, blend: false };
    const point = site.pointAt(at);
    const { stage, blend } = point;
    const [ck, ca] = kindOf(site.stages[stage]!);
    const [pk, pa] = blend ? kindOf(site.stages[stage - 1]!) : [0, 0];
    const [lk, la] = kindOf(site.stages[site.stages.length - 1]!);
    out.set([1, ck, ca, blend ? 1 : 0, pk, pa, point.lambda, site.param, site.align ? 1 : 0, lk, la,
      site.p[stage]!, blend ? site.p[stage - 1]! : Number.NaN], i * SITE_VALUES);
    return point;
  });
}

/** The device stepper factory of a block engine's model (CUDA with cuBLAS). */
export function deviceRecon(addon: ReconAddon, model: RuntimeModelHandle): StepperFactory {
  return async (block, rates: LinearRates[], batch, seq) => {
    const d = block.dims;
    const rope = block.ropeFor(seq);
    const window = d.slidingWindow !== undefined && seq > d.slidingWindow ? d.slidingWindow : 0;
    const p = block.params;
    const dims = Float64Array.from([d.hidden, d.intermediate, d.numHeads, d.numKvHeads, d.headDim, d.normEps, window,
      rope?.half ?? 0, p.attention?.probsRow === 'unmasked' ? 1 : 0, batch, seq]);
    const fixed = [f32(p.inputNorm), f32(p.postNorm), p.qNorm === undefined ? null : f32(p.qNorm),
      p.kNorm === undefined ? null : f32(p.kNorm), rope?.cos ?? null, rope?.sin ?? null];
    const linears = BLOCK_LINEAR_ROLES.map((role) => p.linears[role]);
    const linearDims = new Int32Array(3 * linears.length);
    const rateValues = new Float64Array(4 * linears.length);
    linears.forEach((l, i) => {
      linearDims.set([l.rows, l.cols, l.rank], 3 * i);
      const r = rates[i]!;
      rateValues.set([r.latent, r.alpha, r.a, r.b], 4 * i);
    });
    const rotationDims = new Int32Array(12);
    const rotations = ROTATED_SITES.map((site, i) => {
      const r = p.rotations[site];
      if (r === undefined) return null;
      rotationDims.set([r.a, r.b, r.r ?? 0], 3 * i);
      return [f32(r.r1), f32(r.r2), r.r3 === undefined || (r.r ?? 0) === 0 ? null : f32(r.r3)];
    });
    const call = <T>(f: () => T): T => {
      try {
        return f();
      } catch (error) {
        throw runtimeError(error);
      }
    };
    const trainer = call(() => addon.rtReconCreate(model, dims, fixed,
      linears.map((l) => [l.latent, l.alpha, l.rank > 0 ? l.lrA : null, l.rank > 0 ? l.lrB : null, l.bias === undefined ? null : f32(l.bias)]),
      linearDims, rateValues, rotations, rotationDims));
    const sites = blockSites(block);
    const points = new Float64Array(SITES * SITE_VALUES);
    const stepper: BlockStepper & { readGradients(linear: number): Record<'latent' | 'alpha' | 'a' | 'b', Float32Array> } = {
      step(x, y, n, at, lrScale) {
        const used = sitePoints(sites, at, points);
        const out = call(() => addon.rtReconStep(trainer, x, y, n, points, lrScale));
        sites.forEach((site, i) => {
          if (site === undefined) return;
          site.grad = out[1 + i]!;
          if (site.align) {
            const { stage, blend } = used[i]!;
            site.p[stage] = out[1 + SITES + i]!;
            if (blend) site.p[stage - 1] = out[1 + 2 * SITES + i]!;
          }
        });
        return Promise.resolve(out[0]!);
      },
      sumSquares(x, y, n) {
        sitePoints(sites, FINAL_STAGE, points);
        return Promise.resolve(call(() => addon.rtReconLoss(trainer, x, y, n, points)));
      },
      /** the last step's gradients of linear `linear` (BLOCK_LINEAR_ROLES order): the GPU check's comparison */
      readGradients(linear) {
        const l = linears[linear]!;
        const g = { latent: new Float32Array(l.latent.length), alpha: new Float32Array(l.rows), a: new Float32Array(l.lrA.length), b: new Float32Array(l.lrB.length) };
        call(() => addon.rtReconRead(trainer, linear, 1, g.latent, g.alpha, l.rank > 0 ? g.a : null, l.rank > 0 ? g.b : null));
        return g;
      },
      finish(keep) {
        try {
          // the block's arrays still hold the start: only a kept result is read back
          if (keep) {
            linears.forEach((l, i) => {
              call(() => addon.rtReconRead(trainer, i, 0, l.latent, l.alpha, l.rank > 0 ? l.lrA : null, l.rank > 0 ? l.lrB : null));
              l.invalidate();
            });
          }
        } finally {
          addon.rtFree(trainer);
        }
        return Promise.resolve();
      },
    };
    return stepper;
  };
}
