/**
 * The student of the block-wise reconstruction: a ReconBlock whose learnable parts start from the
 * no-reconstruction quantization of the block (signs, scales, low-rank factors, calibrated
 * thresholds / clip ratios), and the frozen result in the pipeline's output form.
 *
 * Latent weights start as Λ = B ⊙ max(|W' − L|, 10⁻⁶·mean|W'|): the float weight (rotated for BWLA, less
 * the low-rank term) with the sign of the calibrated binarization, so sign⁺(Λ) = B at step 0.
 */
import type { RopeTables } from '../../native/rope.js';
import type { ActivationQuantizer, AttentionRecipe, LinearRole } from '../recipe.js';
import type { ActQuantKernels, TrainQuantizer } from './act-quant.js';
import { BinaryLinear } from './binary-linear.js';
import { ReconBlock, type BlockDims, type SiteName } from './block.js';
import { QuantSite } from './quant-site.js';
import type { Rotation } from './rotation.js';
import { ternaryStages } from './schedule.js';

export const BLOCK_LINEAR_ROLES: readonly LinearRole[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export interface StudentLinear {
  rows: number;
  cols: number;
  /** float weight as the simulated model holds it (rotated for BWLA) [rows, cols] */
  target: Float32Array;
  signs: Int8Array;
  scales: Float32Array;
  rank: number;
  lrA: Float32Array;
  lrB: Float32Array;
  bias: Float32Array | undefined;
}

export interface StudentInput {
  dims: BlockDims;
  ropeFor: (seq: number) => RopeTables | undefined;
  inputNorm: Float32Array;
  postNorm: Float32Array;
  /** Qwen3's q_norm / k_norm weights [headDim] (absent for blocks without them) */
  qNorm?: Float32Array | undefined;
  kNorm?: Float32Array | undefined;
  linears: Record<LinearRole, StudentLinear>;
  quantizers: Record<SiteName, ActivationQuantizer>;
  attention: AttentionRecipe | undefined;
  rotations: Partial<Record<SiteName, Rotation>>;
}

export interface StudentSettings {
  /** levels of the intermediate stages of every ternary site (empty: ternary from the start) */
  levels: readonly number[];
  /** magnitude-alignment projection factors */
  align: boolean;
  /** the activation quantizers on an engine's threads (src/native/act-quant.ts); default the TypeScript reference */
  actQuant?: ActQuantKernels;
}

function siteFor(name: string, q: ActivationQuantizer, s: StudentSettings): QuantSite {
  switch (q.kind) {
    case 'ternary':
      return new QuantSite(name, ternaryStages(s.levels), q.thresholdRatio, s.align, s.actQuant);
    case 'int':
      return new QuantSite(name, [{ kind: 'int', bits: q.bits }], q.clipRatio, s.align, s.actQuant);
    case 'none':
      return new QuantSite(name, [{ kind: 'none' }], 0, false);
    case 'binary':
      throw new Error(`site ${name}: binary activations are not reconstructed`);
  }
}

function latentOf(l: StudentLinear): Float32Array {
  const { rows, cols, rank } = l;
  let mean = 0;
  for (let i = 0; i < l.target.length; i++) mean += Math.abs(l.target[i]!) / l.target.length;
  const floor = 1e-6 * mean + 1e-30;
  const latent = new Float32Array(rows * cols);
  for (let n = 0; n < rows; n++) {
    for (let k = 0; k < cols; k++) {
      let low = 0;
      for (let r = 0; r < rank; r++) low += l.lrA[n * rank + r]! * l.lrB[r * cols + k]!;
      const mag = Math.max(Math.abs(l.target[n * cols + k]! - low), floor);
      latent[n * cols + k] = l.signs[n * cols + k]! > 0 ? mag : -mag;
    }
  }
  return latent;
}

export function createStudent(input: StudentInput, settings: StudentSettings): ReconBlock<Float32Array> {
  const linears = {} as Record<LinearRole, BinaryLinear<Float32Array>>;
  for (const role of BLOCK_LINEAR_ROLES) {
    const l = input.linears[role];
    linears[role] = new BinaryLinear(l.rows, l.cols, latentOf(l), Float32Array.from(l.scales), l.rank,
      Float32Array.from(l.lrA), Float32Array.from(l.lrB), l.bias);
  }
  const sites = {} as Record<SiteName, QuantSite>;
  for (const name of ['attn_in', 'attn_out', 'mlp_in', 'mlp_out'] as const) sites[name] = siteFor(name, input.quantizers[name], settings);
  const a = input.attention;
  const attention = a === undefined ? undefined : {
    query: siteFor('query', a.query, settings), key: siteFor('key', a.key, settings),
    value: siteFor('value', a.value, settings), probs: siteFor('probs', a.probs, settings), probsRow: a.probsRow,
  };
  return new ReconBlock(input.dims, {
    linears, inputNorm: input.inputNorm, postNorm: input.postNorm, qNorm: input.qNorm, kNorm: input.kNorm, sites, attention,
    rotations: input.rotations,
  }, input.ropeFor);
}

/** The recipe quantizer a site freezes to (its last stage with the learned parameter). */
export function frozenQuantizer(site: QuantSite): ActivationQuantizer {
  const q: TrainQuantizer = site.stages[site.stages.length - 1]!;
  switch (q.kind) {
    case 'ternary': return { kind: 'ternary', thresholdRatio: site.param };
    case 'int': return { kind: 'int', bits: q.bits, clipRatio: site.param };
    case 'none': return { kind: 'none' };
    case 'levels': throw new Error(`site ${site.name}: a levels stage cannot be the last one`);
  }
}

export interface FrozenLinear {
  signs: Int8Array;
  scales: Float32Array;
  lrA: Float32Array;
  lrB: Float32Array;
  rank: number;
  /** diag(α)·B + A·B_lr [rows, cols] */
  simulated: Float32Array;
}

export interface FrozenBlock {
  linears: Record<LinearRole, FrozenLinear>;
  quantizers: Record<SiteName, ActivationQuantizer>;
  attention: AttentionRecipe | undefined;
}

/** Signs, scales and thresholds of the student (its factors must already be folded). */
export function freezeStudent(block: ReconBlock<Float32Array>): FrozenBlock {
  const p = block.params;
  const linears = {} as Record<LinearRole, FrozenLinear>;
  for (const role of BLOCK_LINEAR_ROLES) {
    const l = p.linears[role];
    l.invalidate();
    const simulated = l.materialize(); // a new array, handed over: the linear's cache is dropped below
    l.invalidate();
    linears[role] = {
      signs: l.signs(), scales: Float32Array.from(l.alpha), lrA: Float32Array.from(l.lrA), lrB: Float32Array.from(l.lrB),
      rank: l.rank, simulated,
    };
  }
  const quantizers = {} as Record<SiteName, ActivationQuantizer>;
  for (const name of ['attn_in', 'attn_out', 'mlp_in', 'mlp_out'] as const) quantizers[name] = frozenQuantizer(p.sites[name]);
  const a = p.attention;
  return {
    linears, quantizers,
    attention: a === undefined ? undefined : {
      query: frozenQuantizer(a.query), key: frozenQuantizer(a.key), value: frozenQuantizer(a.value), probs: frozenQuantizer(a.probs),
      ...(a.probsRow === undefined ? {} : { probsRow: a.probsRow }),
    },
  };
}
