/**
 * Rotary position embeddings as in transformers (modeling_rope_utils.py):
 *   default: inv_freq[i] = 1 / θ^(2i/d), i = 0 … d/2−1, d = head_dim · partial_rotary_factor
 *   linear:  inv_freq / factor
 *   llama3:  wavelen = 2π / inv_freq; low-frequency bands (wavelen > L/low_freq_factor) divided by
 *            factor, high-frequency bands (wavelen < L/high_freq_factor) kept, the band between
 *            blended with smooth = (L/wavelen − low) / (high − low), L = original_max_position_embeddings
 *   dynamic: default while seq ≤ max_position_embeddings, else θ' = θ·(factor·seq/max − (factor−1))^(d/(d−2))
 * and applied with rotate_half: q' = q ⊙ cos + rotate_half(q) ⊙ sin with cos/sin of cat(freqs, freqs),
 * freqs[t, i] = t · inv_freq[i]. Intermediates are rounded to float32 as torch does.
 */
import { BwqError } from '../errors.js';

/** The subset of A's RopeConfig this module reads. */
export interface RopeParameters {
  theta: number;
  type: 'default' | 'linear' | 'llama3' | 'dynamic' | 'yarn';
  factor?: number;
  lowFreqFactor?: number;
  highFreqFactor?: number;
  originalMaxPositionEmbeddings?: number;
  partialRotaryFactor?: number;
}

const f32 = Math.fround;

/** Number of rotated dimensions of a head (even). */
export function rotaryDim(headDim: number, rope: RopeParameters): number {
  const d = Math.trunc(headDim * (rope.partialRotaryFactor ?? 1));
  return d - (d % 2);
}

function defaultInvFreq(theta: number, dim: number): Float64Array {
  const inv = new Float64Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) inv[i] = f32(1 / f32(Math.pow(theta, f32((2 * i) / dim))));
  return inv;
}

/** inv_freq for a head, for sequences of length `seqLen` (which only `dynamic` looks at). */
export function ropeInvFreq(rope: RopeParameters, headDim: number, seqLen: number, maxPositionEmbeddings: number,
  file?: string): Float64Array {
  const dim = rotaryDim(headDim, rope);
  const need = (what: number | undefined, name: string): number => {
    if (what === undefined || !Number.isFinite(what)) {
      throw new BwqError(`rope type ${rope.type} needs ${name}`, file === undefined ? {} : { file });
    }
    return what;
  };
  switch (rope.type) {
    case 'default':
      return defaultInvFreq(rope.theta, dim);
    case 'linear': {
      const factor = need(rope.factor, 'factor');
      return defaultInvFreq(rope.theta, dim).map((v) => f32(v / factor));
    }
    case 'dynamic': {
      const factor = need(rope.factor, 'factor');
      if (seqLen <= maxPositionEmbeddings) return defaultInvFreq(rope.theta, dim);
      const base = rope.theta * Math.pow((factor * seqLen) / maxPositionEmbeddings - (factor - 1), dim / (dim - 2));
      return defaultInvFreq(base, dim);
    }
    case 'llama3': {
      const factor = need(rope.factor, 'factor');
      const low = need(rope.lowFreqFactor, 'low_freq_factor');
      const high = need(rope.highFreqFactor, 'high_freq_factor');
      const old = need(rope.originalMaxPositionEmbeddings, 'original_max_position_embeddings');
      const lowWavelen = old / low;
      const highWavelen = old / high;
      return defaultInvFreq(rope.theta, dim).map((inv) => {
        const wavelen = f32((2 * Math.PI) / inv);
        const scaled = wavelen > lowWavelen ? f32(inv / factor) : inv;
        const isMedium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
        if (!isMedium) return scaled;
        const smooth = f32((f32(old / wavelen) - low) / (high - low));
        return f32(f32(f32(1 - smooth) * f32(scaled / factor)) + f32(smooth * scaled));
      });
    }
    case 'yarn':
      throw new BwqError('rope type yarn is not supported by the native backend', file === undefined ? {} : { file });
  }
}

/** cos/sin tables [seq, dim/2] (the two halves of cat(freqs, freqs) are equal). */
export interface RopeTables {
  readonly half: number;
  readonly cos: Float32Array;
  readonly sin: Float32Array;
}

export function ropeTables(invFreq: Float64Array, seq: number): RopeTables {
  const half = invFreq.length;
  const cos = new Float32Array(seq * half);
  const sin = new Float32Array(seq * half);
  for (let t = 0; t < seq; t++) {
    for (let i = 0; i < half; i++) {
      const angle = f32(t * invFreq[i]!);
      cos[t * half + i] = Math.cos(angle);
      sin[t * half + i] = Math.sin(angle);
    }
  }
  return { half, cos, sin };
}

/**
 * In place on x [seq, heads·headDim] (token-major): rotates the first 2·half dims of every head
 * of token t with position t.
 */
export function applyRope(x: Float32Array, seq: number, heads: number, headDim: number, tables: RopeTables): void {
  const { half, cos, sin } = tables;
  for (let t = 0; t < seq; t++) {
    const to = t * half;
    for (let h = 0; h < heads; h++) {
      const o = (t * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const a = x[o + i]!;
        const b = x[o + i + half]!;
        const c = cos[to + i]!;
        const s = sin[to + i]!;
        x[o + i] = f32(a * c) - f32(b * s);
        x[o + i + half] = f32(b * c) + f32(a * s);
      }
    }
  }
}
