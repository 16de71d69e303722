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
 *   contraction axis, so Σ_j t_p[i,j]·s_v[j]·t_v[j,d] is not an integer sum; it is a float
 *   gather-add over the non-zero codes of P (docs/NATIVE_FORWARD.md).
 * Probabilities are quantized over the whole row of length seq (masked zeros included), like a
 * quantizer on the [batch, heads, seq, seq] softmax output of the simulated graph.
 */
import type { ActivationQuantizer, AttentionRecipe } from '../quant/recipe.js';
import { activationCodes, dequantize, type ActivationCodes } from './activation-codes.js';
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
export function causalAttention(q: Float32Array, k: Float32Array, v: Float32Array, shape: AttentionShape,
  recipe: AttentionRecipe | undefined, kernels: IntegerGemmKernels): Float32Array {
  const { seq, numHeads, numKvHeads, headDim, slidingWindow } = shape;
  const group = numHeads / numKvHeads;
  const scaling = 1 / Math.sqrt(headDim);
  const ctx = new Float32Array(seq * numHeads * headDim);
  const keyCodes: ActivationCodes[] = [];
  const valueCodes: ActivationCodes[] = [];
  const valueFloat: Float32Array[] = [];
  for (let g = 0; g < numKvHeads; g++) {
    const kh = gatherHead(k, seq, numKvHeads, headDim, g);
    const vh = gatherHead(v, seq, numKvHeads, headDim, g);
    keyCodes.push(quantized(kh, seq, headDim, recipe?.key));
    const vc = quantized(vh, seq, headDim, recipe?.value);
    valueCodes.push(vc);
    valueFloat.push(dequantize(vc, seq, headDim));
  }
  const scores = new Float32Array(seq * seq);
  const rowExp = new Float64Array(seq);
  const out = new Float64Array(headDim);
  const lo = (i: number): number => (slidingWindow === undefined ? 0 : Math.max(0, i - slidingWindow + 1));
  for (let h = 0; h < numHeads; h++) {
    const g = Math.floor(h / group);
    const qh = gatherHead(q, seq, numHeads, headDim, h);
    const qc = quantized(qh, seq, headDim, recipe?.query);
    const kc = keyCodes[g]!;
    // scores (unmasked entries only are used)
    if (qc.kind === 'ternary' && kc.kind === 'ternary') {
      const acc = kernels.ternaryTernaryGemm(qc.plus, qc.minus, kc.plus, kc.minus, seq, seq, headDim);
      for (let i = 0; i < seq; i++) {
        const si = qc.scales[i]! * scaling;
        for (let j = lo(i); j <= i; j++) scores[i * seq + j] = si * kc.scales[j]! * acc[i * seq + j]!;
      }
    } else {
      const qf = dequantize(qc, seq, headDim);
      const kf = dequantize(kc, seq, headDim);
      for (let i = 0; i < seq; i++) {
        const qo = i * headDim;
        for (let j = lo(i); j <= i; j++) {
          const ko = j * headDim;
          let s = 0;
          for (let d = 0; d < headDim; d++) s += qf[qo + d]! * kf[ko + d]!;
          scores[i * seq + j] = s * scaling;
        }
      }
    }
    // softmax over the unmasked keys; masked probabilities are exactly 0
    for (let i = 0; i < seq; i++) {
      const o = i * seq;
      const start = lo(i);
      let max = -Infinity;
      for (let j = start; j <= i; j++) if (scores[o + j]! > max) max = scores[o + j]!;
      let sum = 0;
      for (let j = start; j <= i; j++) {
        const e = Math.exp(scores[o + j]! - max);
        rowExp[j] = e;
        sum += e;
      }
      const inv = 1 / sum;
      scores.fill(0, o, o + start);
      for (let j = start; j <= i; j++) scores[o + j] = rowExp[j]! * inv;
      scores.fill(0, o + i + 1, o + seq);
    }
    const pc = quantized(scores, seq, seq, recipe?.probs);
    const vc = valueCodes[g]!;
    const vf = valueFloat[g]!;
    for (let i = 0; i < seq; i++) {
      out.fill(0);
      const start = lo(i);
      if (pc.kind === 'ternary' && vc.kind === 'ternary') {
        // s_p[i] · Σ_j t_p[i,j] · (s_v[j] · t_v[j, :]) over the non-zero codes of P
        const sp = pc.scales[i]!;
        for (let j = start; j <= i; j++) {
          const t = pc.codes[i * seq + j]!;
          if (t === 0) continue;
          const vo = j * headDim;
          const sv = vc.scales[j]! * t;
          for (let d = 0; d < headDim; d++) out[d] = out[d]! + sv * vc.codes[vo + d]!;
        }
        for (let d = 0; d < headDim; d++) out[d] = out[d]! * sp;
      } else {
        const pf = pc.kind === 'float' ? pc.values : dequantizeRow(pc, i, seq);
        const po = pc.kind === 'float' ? i * seq : 0;
        for (let j = start; j <= i; j++) {
          const p = pf[po + j]!;
          if (p === 0) continue;
          const vo = j * headDim;
          for (let d = 0; d < headDim; d++) out[d] = out[d]! + p * vf[vo + d]!;
        }
      }
      const co = (i * numHeads + h) * headDim;
      for (let d = 0; d < headDim; d++) ctx[co + d] = out[d]!;
    }
  }
  return ctx;
}

function dequantizeRow(a: Exclude<ActivationCodes, { kind: 'float' }>, row: number, cols: number): Float32Array {
  const out = new Float32Array(cols);
  const s = a.scales[row]!;
  for (let j = 0; j < cols; j++) out[j] = a.codes[row * cols + j]! * s;
  return out;
}
