/**
 * Causal grouped-query attention for one sequence, with the recipe's optional operand
 * quantizers (per head, per row):
 *
 *   scores[i, j] = scaling · q̂_i · k̂_j          (j ≤ i, and i − j < window when sliding)
 *   P[i, :]      = softmax(scores[i, :])          (masked entries exactly 0)
 *   ctx[i, :]    = Σ_j P̂[i, j] · v̂_j
 *
 * Q·Kᵀ: when query and key are both ternary, q̂_i = s_q[i]·t_q[i], k̂_j = s_k[j]·t_k[j] and
 *   q̂_i·k̂_j = s_q[i]·s_k[j]·(t_q[i]·t_k[j]) where the integer dot comes from ternaryTernaryGemm.
 * P·V: P̂[i, j] = s_p[i]·t_p[i, j] but v̂_j = s_v[j]·t_v[j] carries a per-key scale on the
 *   contraction axis, so Σ_j t_p[i,j]·s_v[j]·t_v[j,d] is not an integer sum; it is the float
 *   GEMM P̂·V̂ (docs/NATIVE_FORWARD.md).
 * Probabilities are quantized per query row over its unmasked keys (recipe.probsRow 'unmasked'), or over
 * the whole row of length seq, masked zeros included ('window', recipes before issue #16), as the simulated
 * graph's quantizer on the [batch, heads, seq, seq] softmax output (src/quant/attention-probs.ts).
 */
import { firstVisibleKey, quantizeProbRows } from '../quant/attention-probs.js';
import type { ActivationQuantizer, AttentionRecipe } from '../quant/recipe.js';
import { activationCodes, dequantize, type ActivationCodes } from './activation-codes.js';
import type { FloatGemm } from './float-gemm.js';
import type { IntegerGemmKernels } from './reference-kernels.js';

export interface AttentionShape {
  seq: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** keys with i − j ≥ slidingWindow are masked; undefined = plain causal. */
  slidingWindow: number | undefined;
}

function gatherHead(x: Float32Array, seq: number, heads: number, headDim: number, h: number): Float32Array {
  const out = new Float32Array(seq * headDim);
  for (let t = 0; t < seq; t++) {
    out.set(x.subarray((t * heads + h) * headDim, (t * heads + h + 1) * headDim), t * headDim);
  }
  return out;
}

function quantized(x: Float32Array, rows: number, cols: number, q: ActivationQuantizer | undefined): ActivationCodes {
  return activationCodes(x, rows, cols, q ?? { kind: 'none' });
}

/** Attention of one sequence: q [seq, nH·hd], k/v [seq, nKV·hd] → context [seq, nH·hd]. */
export async function causalAttention(q: Float32Array, k: Float32Array, v: Float32Array, shape: AttentionShape,
  recipe: AttentionRecipe | undefined, kernels: IntegerGemmKernels, gemm: FloatGemm): Promise<Float32Array> {
  const { seq, numHeads, numKvHeads, headDim, slidingWindow } = shape;
  const group = numHeads / numKvHeads;
  const scaling = 1 / Math.sqrt(headDim);
  const ctx = new Float32Array(seq * numHeads * headDim);
  const keyCodes: ActivationCodes[] = [];
  const keyFloat: Float32Array[] = [];
  const valueFloat: Float32Array[] = [];
  for (let g = 0; g < numKvHeads; g++) {
    const kh = gatherHead(k, seq, numKvHeads, headDim, g);
    const vh = gatherHead(v, seq, numKvHeads, headDim, g);
    const kc = quantized(kh, seq, headDim, recipe?.key);
    keyCodes.push(kc);
    keyFloat.push(dequantize(kc, seq, headDim));
    valueFloat.push(dequantize(quantized(vh, seq, headDim, recipe?.value), seq, headDim));
  }
  const rowExp = new Float64Array(seq);
  const lo = (i: number): number => firstVisibleKey(i, slidingWindow);
  for (let h = 0; h < numHeads; h++) {
    const g = Math.floor(h / group);
    const qh = gatherHead(q, seq, numHeads, headDim, h);
    const qc = quantized(qh, seq, headDim, recipe?.query);
    const kc = keyCodes[g]!;
    // scores[i, j] = scaling · q̂_i·k̂_j (only the unmasked entries are read below)
    let scores: Float32Array;
    let scale: number;
    if (qc.kind === 'ternary' && kc.kind === 'ternary') {
      const acc = kernels.ternaryTernaryGemm(qc.plus, qc.minus, kc.plus, kc.minus, seq, seq, headDim);
      scores = new Float32Array(seq * seq);
      for (let i = 0; i < seq; i++) {
        const si = qc.scales[i]! * scaling;
        for (let j = lo(i); j <= i; j++) scores[i * seq + j] = si * kc.scales[j]! * acc[i * seq + j]!;
      }
      scale = 1;
    } else {
      scores = await gemm.transB(dequantize(qc, seq, headDim), seq, headDim, keyFloat[g]!, seq);
      scale = scaling;
    }
    // softmax of scale·scores over the unmasked keys; masked probabilities are exactly 0
    for (let i = 0; i < seq; i++) {
      const o = i * seq;
      const start = lo(i);
      let max = -Infinity;
      for (let j = start; j <= i; j++) {
        const v = Math.fround(scores[o + j]! * scale);
        rowExp[j] = v;
        if (v > max) max = v;
      }
      let sum = 0;
      for (let j = start; j <= i; j++) {
        const e = Math.exp(rowExp[j]! - max);
        rowExp[j] = e;
        sum += e;
      }
      const inv = 1 / sum;
      scores.fill(0, o, o + start);
      for (let j = start; j <= i; j++) scores[o + j] = rowExp[j]! * inv;
      scores.fill(0, o + i + 1, o + seq);
    }
    // ctx_h = P̂ · V̂ (float GEMM; with ternary P the products t_p·v̂ are exact)
    const pHat = quantizeProbRows(scores, seq, recipe?.probs ?? { kind: 'none' }, recipe?.probsRow, slidingWindow);
    const ch = await gemm.plain(pHat, seq, seq, valueFloat[g]!, headDim);
    for (let t = 0; t < seq; t++) ctx.set(ch.subarray(t * headDim, (t + 1) * headDim), (t * numHeads + h) * headDim);
  }
  return ctx;
}
