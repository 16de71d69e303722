/**
 * Quantization of one group of linears that share an input (pure numeric; no I/O):
 *   rtn  — sign binarization, per-output-channel scale mean|w|, fixed activation quantizer;
 *   bwta — same weights, ternary activation threshold calibrated on output MSE;
 *   bwla — OKT rotation (EM) fused into the weights, PSP low-rank refinement, int activation
 *          clip ratio calibrated on output MSE; the OKT initialisation (identity / random
 *          orthogonal) is chosen by the same output error (docs/ALGORITHMS.md).
 */
import type { ActivationQuantizer, LinearRole } from './recipe.js';
import { binarizeRows, dequantizeBinary } from './binarize.js';
import { learnSplitOkt } from './okt-split.js';
import type { OktDevice } from './okt.js';
import { activationTail, crestFactor } from './okt-stats.js';
import { rotateRowsWith } from './kronecker.js';
import { psp, reconstructWeight, type PspResult } from './psp.js';
import { jsWeightPasses, type WeightPasses } from './weight-passes.js';
import { quantizeRowsInto, type QuantizeRowsInto } from './quantizers.js';
import { compensateColumnBlocks, compensationFrame, type CompensationFrame } from './column-blocks.js';
import { withKept, type Matmul, type Numerics } from '../linalg/matmul.js';
import { candidateQuantizers, linearOutputError, referenceOutputs, searchLinearQuantizer, type LinearTarget } from './act-calib.js';
import { quantizeBaselineGroup } from './baseline-group.js';

export type GroupName = 'attn_in' | 'attn_out' | 'mlp_in' | 'mlp_out';

export interface GroupLinear {
  role: LinearRole;
  weight: Float32Array; // [rows, cols] float
  rows: number;
}

export interface QuantizedLinear {
  role: LinearRole;
  rows: number;
  cols: number;
  /** simulated weight (rotated when the group has a rotation) [rows, cols] */
  simulated: Float32Array;
  signs: Int8Array;
  scales: Float32Array;
  lrA: Float32Array;
  lrB: Float32Array;
  rank: number;
  /** ‖W R − Ŵ'‖_F / ‖W‖_F */
  weightRelError: number;
  /** ‖W − α sign(W)‖_F / ‖W‖_F of the unrotated weight (plain binarization) */
  plainRelError: number;
  /** relative binarization error² of W and (bwla) of W R before PSP (Gaussian rows: 1 − 2/π) */
  binarizationError: { plain: number; rotated: number };
  /** billm / arb: salient columns over the weight's blocks (src/quant/billm.ts) */
  salientColumns?: number;
}

export interface GroupSettings {
  method: 'bwta' | 'bwla' | 'rtn' | 'billm' | 'arb';
  aBits: number | 'ternary';
  rank: number;
  /** OKT: iteration cap of the exact stage, its relative tolerance, the activation-term weight λ,
   *  the smoothing schedule σ and the iteration cap of each smoothing stage (okt.ts) */
  oktIterations: number;
  oktTolerance?: number;
  oktActivationWeight?: number;
  oktAnneal?: readonly number[];
  oktAnnealIterations?: number;
  pspIterations: number;
  /** PSP relative tolerance per alternation (0: run pspIterations) */
  pspTolerance?: number;
  pspTauRatio: number;
  seed: number;
  /** OKT initialisation: one of them, or 'best' = try both, keep the lower output error */
  oktInit: 'identity' | 'random' | 'best';
  /** PSP L-step weighted by the RMS of the (rotated) calibration inputs per channel */
  weightedPsp: boolean;
  /** replace α by the output-optimal scale (bᵀHw)/(bᵀHb), H = X'ᵀX' */
  dataAwareScale: boolean;
  /** BWLA: after PSP, re-choose the signs block by block with GPTQ-style error compensation on H' = Rᵀ H R damped
   *  by this fraction of its mean diagonal (src/quant/column-blocks.ts); 0 turns it off */
  compensationDamping?: number;
}

/** bwq's BWLA defaults (docs/ALGORITHMS.md §BWLA); the optional GroupSettings fields fall back to them. */
// OKT: 20 exact EM iterations with the activation term and no smoothing stages. With the 128-wide R2 the EM has
// not converged after 10 (bundled model, seeds 0/1/2: 170.8/163.7/177.1 at 10, 165.5/160.0/170.8 at 20, 161.5
// at 40 for seed 0; docs/ALGORITHMS.md §OKT); the OKT is a fifth of a 7B-shape block on 2 CPU cores.
export const BWLA_DEFAULTS = {
  oktIterations: 20,
  oktTolerance: 1e-4,
  oktActivationWeight: 0.1,
  oktAnneal: [] as readonly number[],
  oktAnnealIterations: 20,
  pspIterations: 3,
  pspTolerance: 0,
  pspTauRatio: 0.25,
  compensationDamping: 0.1,
  compensationBlock: 64,
} as const;

/** H = Σ_t x_t x_tᵀ of the group's raw (unrotated) input over every calibration token [cols, cols], and the
 *  token count T (docs/ALGORITHMS.md "Calibration statistics"). */
export interface InputGram {
  data: Float32Array;
  tokens: number;
}

export interface QuantizedGroup {
  linears: QuantizedLinear[];
  quantizer: ActivationQuantizer;
  rotation: {
    r1: Float64Array; r2: Float64Array; a: number; b: number; init: 'identity' | 'random'; history: number[];
    /** the remainder block R3 [r, r] of R = diag(R1 ⊗ R2, R3) (r = 0, undefined: R = R1 ⊗ R2; src/quant/okt-split.ts) */
    r: number; r3: Float64Array | undefined;
    iterations: number; converged: boolean;
    /** mean per-token crest factor max|x|/rms(x) and 4th moment κ of the input, before and after R */
    crestFactor: { before: number; after: number };
    activationTail: { before: number; after: number };
  } | undefined;
  /** sqrt(Σ‖XWᵀ − Q(X')Ŵ'ᵀ‖² / Σ‖XWᵀ‖²) on the sampled calibration tokens */
  outputRelError: number;
  /** error of each tried candidate (bwla inits) */
  candidates: Array<{ init: string; outputRelError: number }>;
  /** activation grid curve of the chosen candidate */
  curve: Array<{ value: number; error: number }>;
}

function norm(a: Float32Array | Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * a[i]!;
  return Math.sqrt(s);
}

function diffNorm(a: Float32Array | Float64Array, b: Float32Array | Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i]! - b[i]!) ** 2;
  return Math.sqrt(s);
}

/**
 * Output-optimal per-row scale for fixed signs: α_n = bₙᵀH(w_n − l_n) / bₙᵀHbₙ with H = XᵀX
 * (minimises ‖X(w_n − l_n − α bₙ)‖²); falls back to the current α when the denominator vanishes
 * or the result is not positive.
 */
async function refitScales(
  w: Float32Array, signs: Int8Array, scales: Float32Array, lrA: Float32Array, lrB: Float32Array, rank: number,
  rows: number, cols: number, gram: Float32Array, mm: Matmul, passes: WeightPasses = jsWeightPasses,
): Promise<void> {
  const low = rank > 0 ? await mm(lrA, lrB, rows, rank, cols) : new Float32Array(0);
  const bh = await mm(Float32Array.from(signs), gram, rows, cols, cols); // B H  [rows, cols]
  const num = new Float64Array(rows);
  const den = new Float64Array(rows);
  passes.scaleFit(bh, w, low, signs, rows, cols, num, den);
  for (let r = 0; r < rows; r++) {
    const alpha = num[r]! / den[r]!;
    if (den[r]! > 0 && Number.isFinite(alpha) && alpha > 0) scales[r] = alpha;
  }
}

/** ε(W) = Σ_n err_n / Σ_n ‖w_n‖² (src/quant/okt-stats.ts relativeBinarizationError) from the passes' per-row sums, added in row order. */
function relativeBinarizationErrorWith(passes: WeightPasses, w: Float32Array, rows: number, cols: number): number {
  const err = new Float64Array(rows);
  const energy = new Float64Array(rows);
  passes.binarization(w, rows, cols, err, energy);
  let e = 0;
  let total = 0;
  for (let r = 0; r < rows; r++) {
    e += err[r]!;
    total += energy[r]!;
  }
  return total > 0 ? e / total : 0;
}

/** PSP's signs re-chosen with error compensation: the target W R − A·B, each block α_n · sign (α from PSP). */
async function compensateSigns(wr: Float32Array, p: PspResult, rows: number, cols: number, frame: CompensationFrame, mm: Matmul,
  passes: WeightPasses): Promise<Int8Array> {
  const target = Float32Array.from(wr);
  if (p.rank > 0) passes.subtract(target, await mm(p.lrA, p.lrB, rows, p.rank, cols), target.length);
  const signs = new Int8Array(rows * cols);
  await compensateColumnBlocks(target, rows, cols, frame, BWLA_DEFAULTS.compensationBlock, (block, r, width, start) => {
    const out = new Float32Array(r * width);
    passes.signBlock(block, r, width, p.scales, signs, cols, start, out);
    return out;
  }, mm, passes);
  return signs;
}

export function fixedQuantizer(aBits: number | 'ternary'): ActivationQuantizer {
  if (aBits === 'ternary') return { kind: 'ternary', thresholdRatio: 0.7 };
  if (aBits >= 16) return { kind: 'none' };
  return { kind: 'int', bits: aBits, clipRatio: 1 };
}

function binaryLinear(l: GroupLinear, cols: number): QuantizedLinear {
  const { signs, scales } = binarizeRows(l.weight, l.rows, cols);
  const sim = Float32Array.from(dequantizeBinary(signs, scales, l.rows, cols));
  const w = norm(l.weight);
  const rel = w > 0 ? diffNorm(l.weight, sim) / w : 0;
  return {
    role: l.role, rows: l.rows, cols, simulated: sim, signs, scales,
    lrA: new Float32Array(0), lrB: new Float32Array(0), rank: 0, weightRelError: rel, plainRelError: rel,
    binarizationError: { plain: rel * rel, rotated: rel * rel },
  };
}

/** PSP's column weights d_c = sqrt((H_cc + 10⁻³·mean_c H_cc + 10⁻³⁰) / T): the RMS of each input channel. */
function columnWeightsOf(gram: Float32Array, cols: number, tokens: number): Float64Array {
  const d = new Float64Array(cols);
  let mean = 0;
  for (let c = 0; c < cols; c++) mean += gram[c * cols + c]! / cols;
  for (let c = 0; c < cols; c++) d[c] = Math.sqrt((gram[c * cols + c]! + 1e-3 * mean + 1e-30) / Math.max(tokens, 1));
  return d;
}

/** The numerics a group is quantized with: the products, and optionally learnOkt on a device (the block engine's GPU). */
export interface GroupNumerics extends Numerics {
  okt?: OktDevice;
  /** PSP's passes over the weights on the engine's threads (src/quant/weight-passes.ts); default the TypeScript loops */
  weightPasses?: WeightPasses;
  /** the activation searches' row quantizer on the engine's threads (src/quant/quantizers.ts); default the reference */
  quantizeRows?: QuantizeRowsInto;
}

/**
 * x: sampled calibration inputs of the group [tokens, cols] (raw, unrotated): the reference outputs, the activation
 * searches, OKT's activation term and the output errors use them. `gram`: H over every calibration token (raw), for
 * the output-optimal scales (BWLA: H' = Rᵀ H R) and PSP's column weights (diag(H')/T); without it both come from
 * the sampled rows (H = xᵀx).
 */
export async function quantizeGroup(group: GroupName, linears: readonly GroupLinear[], cols: number, x: Float32Array, tokens: number, s: GroupSettings, seed: number, numerics: GroupNumerics, gram?: InputGram): Promise<QuantizedGroup> {
  const mm = numerics.matmul;
  const passes = numerics.weightPasses ?? jsWeightPasses;
  const quantize = numerics.quantizeRows ?? quantizeRowsInto;
  // the peer baselines: their own weight binarization, no rotation, bwla's int activation search (src/quant/baseline-group.ts)
  if (s.method === 'billm' || s.method === 'arb') {
    if (s.aBits === 'ternary') throw new Error(`quantizeGroup: --method ${s.method} takes integer activation bits`);
    return quantizeBaselineGroup(s.method, linears, cols, x, tokens, s.aBits, mm, gram);
  }
  if (gram !== undefined && gram.data.length !== cols * cols) throw new Error(`quantizeGroup: Gram matrix of ${gram.data.length} values for ${cols} columns`);
  const refs = await referenceOutputs(x, tokens, cols, linears, mm);
  let energy = 0;
  for (const r of refs) for (let i = 0; i < r.length; i++) energy += r[i]! ** 2;
  const rel = (err: number): number => (energy > 0 ? Math.sqrt(err / energy) : 0);

  if (s.method === 'rtn' || s.method === 'bwta') {
    const q = linears.map((l) => binaryLinear(l, cols));
    if (s.method === 'bwta' && s.dataAwareScale) {
      const h = gram?.data ?? await mm(x, x, cols, tokens, cols, { transposeA: true });
      for (let i = 0; i < q.length; i++) {
        const ql = q[i]!;
        const src = linears[i]!;
        await refitScales(src.weight, ql.signs, ql.scales, ql.lrA, ql.lrB, 0, ql.rows, cols, h, mm);
        ql.simulated = Float32Array.from(dequantizeBinary(ql.signs, ql.scales, ql.rows, cols));
        const w = norm(src.weight);
        ql.weightRelError = w > 0 ? diffNorm(src.weight, ql.simulated) / w : 0;
      }
    }
    const targets: LinearTarget[] = q.map((ql, i) => ({ weight: ql.simulated, rows: ql.rows, reference: refs[i]! }));
    if (s.method === 'bwta') {
      const res = await searchLinearQuantizer(x, tokens, cols, candidateQuantizers('ternary', 0), targets, mm, quantize);
      return { linears: q, quantizer: res.quantizer, rotation: undefined, outputRelError: rel(res.error), candidates: [], curve: res.curve };
    }
    const quantizer = fixedQuantizer(s.aBits);
    const err = await linearOutputError(x, tokens, cols, quantizer, targets, mm, quantize);
    return { linears: q, quantizer, rotation: undefined, outputRelError: rel(err), candidates: [], curve: [] };
  }

  // BWLA
  const inits: Array<'identity' | 'random'> = s.oktIterations <= 0 ? ['identity'] : s.oktInit === 'best' ? ['identity', 'random'] : [s.oktInit];
  let best: QuantizedGroup | undefined;
  let bestErr = Infinity;
  const candidates: Array<{ init: string; outputRelError: number }> = [];
  for (const init of inits) {
    const okt = await learnSplitOkt(linears.map((l) => ({ data: l.weight, rows: l.rows })), cols, {
      iterations: s.oktIterations, tolerance: s.oktTolerance ?? BWLA_DEFAULTS.oktTolerance, init, seed, matmul: mm,
      activations: { data: x, rows: tokens }, activationWeight: s.oktActivationWeight ?? BWLA_DEFAULTS.oktActivationWeight,
      anneal: s.oktIterations > 0 ? s.oktAnneal ?? BWLA_DEFAULTS.oktAnneal : [],
      annealIterations: Math.min(s.oktAnnealIterations ?? BWLA_DEFAULTS.oktAnnealIterations, s.oktIterations),
      ...(numerics.okt === undefined ? {} : { device: numerics.okt }),
    });
    const xr = await rotateRowsWith(numerics, x, tokens, okt);
    // H' = Rᵀ H R: rows of H R, transposed (Rᵀ H, H symmetric), rotated again; or x'ᵀx' of the sampled rows
    const damping = s.compensationDamping ?? BWLA_DEFAULTS.compensationDamping;
    const rotatedGram = !s.dataAwareScale && !s.weightedPsp && !(damping > 0) ? undefined : gram !== undefined
      ? { data: await rotateRowsWith(numerics, passes.transpose(await rotateRowsWith(numerics, gram.data, cols, okt), cols, cols), cols, okt), tokens: gram.tokens }
      : { data: await mm(xr, xr, cols, tokens, cols, { transposeA: true }), tokens };
    const columnWeights = s.weightedPsp && rotatedGram !== undefined ? columnWeightsOf(rotatedGram.data, cols, rotatedGram.tokens) : undefined;
    const scaleGram = s.dataAwareScale ? rotatedGram?.data : undefined;
    const frame = damping > 0 && rotatedGram !== undefined ? await compensationFrame(rotatedGram.data, cols, damping, mm) : undefined;
    const quantizeLinear = async (l: GroupLinear, li: number): Promise<QuantizedLinear> => {
      const wr = await rotateRowsWith(numerics, l.weight, l.rows, okt);
      const p = await psp(wr, l.rows, cols, { rank: s.rank, iterations: s.pspIterations, tolerance: s.pspTolerance ?? BWLA_DEFAULTS.pspTolerance, tauRatio: s.pspTauRatio, seed: seed + 101 * (li + 1), matmul: mm, passes, ...(numerics.qr === undefined ? {} : { qr: numerics.qr }), ...(columnWeights === undefined ? {} : { columnWeights }) });
      if (frame !== undefined) p.signs = await compensateSigns(wr, p, l.rows, cols, frame, mm, passes);
      if (scaleGram !== undefined) await refitScales(wr, p.signs, p.scales, p.lrA, p.lrB, p.rank, l.rows, cols, scaleGram, mm, passes);
      const sim = reconstructWeight(p.signs, p.scales, p.lrA, p.lrB, p.rank, l.rows, cols, passes);
      const w = norm(l.weight);
      // ‖W − diag(mean|w_n|)·sign(W)‖ / ‖W‖ = √ε(W): the plain binarization's error without materialising it
      const plain = relativeBinarizationErrorWith(passes, l.weight, l.rows, cols);
      return {
        role: l.role, rows: l.rows, cols, simulated: sim, signs: p.signs, scales: p.scales, lrA: p.lrA, lrB: p.lrB, rank: p.rank,
        weightRelError: w > 0 ? diffNorm(wr, sim) / w : 0,
        plainRelError: Math.sqrt(plain),
        binarizationError: { plain, rotated: relativeBinarizationErrorWith(passes, wr, l.rows, cols) },
      };
    };
    const q: QuantizedLinear[] = [];
    // every linear's output-optimal scales multiply by H': it stays on the products' device for the loop (Matmul.keep)
    await withKept(mm, scaleGram === undefined ? [] : [scaleGram], async () => {
      for (let li = 0; li < linears.length; li++) q.push(await quantizeLinear(linears[li]!, li));
    });
    const targets: LinearTarget[] = q.map((ql, i) => ({ weight: ql.simulated, rows: ql.rows, reference: refs[i]! }));
    let quantizer: ActivationQuantizer;
    let err: number;
    let curve: Array<{ value: number; error: number }> = [];
    if (s.aBits === 'ternary' || s.aBits >= 16) {
      quantizer = fixedQuantizer(s.aBits);
      err = await linearOutputError(xr, tokens, cols, quantizer, targets, mm, quantize);
    } else {
      const res = await searchLinearQuantizer(xr, tokens, cols, candidateQuantizers('int', s.aBits), targets, mm, quantize);
      quantizer = res.quantizer;
      err = res.error;
      curve = res.curve;
    }
    candidates.push({ init, outputRelError: rel(err) });
    if (err < bestErr) {
      bestErr = err;
      best = {
        linears: q, quantizer, outputRelError: rel(err), candidates, curve,
        rotation: {
          r1: okt.r1, r2: okt.r2, a: okt.a, b: okt.b, r: okt.r, r3: okt.r3, init, history: okt.history, iterations: okt.iterations, converged: okt.converged,
          crestFactor: { before: crestFactor(x, tokens, cols), after: crestFactor(xr, tokens, cols) },
          activationTail: { before: activationTail(x, tokens, cols), after: activationTail(xr, tokens, cols) },
        },
      };
    }
  }
  void group;
  return best!;
}
