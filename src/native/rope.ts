/**
 * Applies rotary position embeddings; the inverse frequencies come from src/onnx/rope.ts
 * (`inverseFrequencies`, shared with the ONNX graphs). Rotary embeddings as in transformers (modeling_rope_utils.py):
 *   default: inv_freq[i] = 1 / θ^(2i/d), i = 0 … d/2−1, d = head_dim · partial_rotary_factor
 *   linear:  inv_freq / factor
 *   llama3:  wavelen = 2π / inv_freq; low-frequency bands (wavelen > L/low_freq_factor) divided by
 *            factor, high-frequency bands (wavelen < L/high_freq_factor) kept, the band between
 *            blended with smooth = (L/wavelen − low) / (high − low), L = original_max_position_embeddings
 *   dynamic: default while seq ≤ max_position_embeddings, else θ' = θ·(factor·seq/max − (factor−1))^(d/(d−2))
 * and applied with rotate_half: q' = q ⊙ cos + rotate_half(q) ⊙ sin with cos/sin of cat(freqs, freqs),
 * freqs[t, i] = t · inv_freq[i]. Intermediates are rounded to float32 as torch does.
 */

const f32 = Math.fround;

/** cos/sin tables [seq, dim/2] (the two halves of cat(freqs, freqs) are equal). */
export interface RopeTables {
  readonly half: number;
  readonly cos: Float32Array;
  readonly sin: Float32Array;
}

export function ropeTables(invFreq: Float32Array, seq: number): RopeTables {
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
