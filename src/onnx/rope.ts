/**
 * Rotary position embedding tables, computed exactly as Hugging Face transformers does
 * (float32 arithmetic at every step, `Math.fround` after each torch op):
 *
 *   inv_freq[i] = 1 / theta^(2i / d)                       i = 0 .. d/2-1, d = rotary dim
 *   linear:  inv_freq /= factor
 *   llama3:  wavelen = 2π / inv_freq;  low = L / lowFreqFactor, high = L / highFreqFactor
 *            (L = original_max_position_embeddings)
 *            wavelen > low  → inv_freq / factor
 *            wavelen < high → inv_freq
 *            otherwise      → (1 - s)·inv_freq/factor + s·inv_freq,  s = (L/wavelen - lowFreqFactor)/(highFreqFactor - lowFreqFactor)
 *   freqs[p, i] = p · inv_freq[i];  emb = [freqs, freqs];  cos = cos(emb), sin = sin(emb)   (shape [S, d])
 *
 * `dynamic` NTK scaling equals `default` for sequences within max_position_embeddings (the
 * only ones eval runs), so it is treated as default. `yarn` is not supported.
 */
import type { ModelConfig } from '../model/config.js';
import { BwqError } from '../errors.js';

const f = Math.fround;

/** Rotary dimension (head_dim × partial_rotary_factor, even). */
export function rotaryDim(config: ModelConfig): number {
  const factor = config.rope?.partialRotaryFactor ?? 1;
  const d = Math.floor(config.headDim * factor);
  return d - (d % 2);
}

export function inverseFrequencies(config: ModelConfig): Float32Array {
  const rope = config.rope;
  if (rope === undefined) throw new BwqError(`${config.modelType} has no rotary embedding`);
  const d = rotaryDim(config);
  const half = d / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const exponent = f(f(2 * i) / d);
    inv[i] = f(1 / f(Math.pow(rope.theta, exponent)));
  }
  switch (rope.type) {
    case 'default':
    case 'dynamic':
      return inv;
    case 'linear': {
      const factor = rope.factor ?? 1;
      for (let i = 0; i < half; i++) inv[i] = f(inv[i]! / factor);
      return inv;
    }
    case 'llama3': {
      const factor = rope.factor ?? 8;
      const lowFreqFactor = rope.lowFreqFactor ?? 1;
      const highFreqFactor = rope.highFreqFactor ?? 4;
      const oldContext = rope.originalMaxPositionEmbeddings ?? 8192;
      const lowFreqWavelen = oldContext / lowFreqFactor;
      const highFreqWavelen = oldContext / highFreqFactor;
      for (let i = 0; i < half; i++) {
        const x = inv[i]!;
        const wavelen = f((2 * Math.PI) / x);
        const scaled = wavelen > lowFreqWavelen ? f(x / factor) : x;
        const smooth = f(f(f(oldContext / wavelen) - lowFreqFactor) / (highFreqFactor - lowFreqFactor));
        const smoothed = f(f(f(f(1 - smooth) * scaled) / factor) + f(smooth * scaled));
        const isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
        inv[i] = isMedium ? smoothed : scaled;
      }
      return inv;
    }
    default:
      throw new BwqError(`rope type "${rope.type}" is not supported (supported: default, linear, llama3, dynamic)`);
  }
}

/** cos/sin tables [seq, d] for positions 0..seq-1, plus the rotary dim d. */
export function ropeTables(config: ModelConfig, seq: number): { cos: Float32Array; sin: Float32Array; dim: number } {
  const inv = inverseFrequencies(config);
  const half = inv.length;
  const d = 2 * half;
  const cos = new Float32Array(seq * d);
  const sin = new Float32Array(seq * d);
  for (let p = 0; p < seq; p++) {
    for (let i = 0; i < half; i++) {
      const angle = f(p * inv[i]!);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      cos[p * d + i] = c;
      cos[p * d + half + i] = c;
      sin[p * d + i] = s;
      sin[p * d + half + i] = s;
    }
  }
  return { cos, sin, dim: d };
}

/** Additive causal mask [seq, seq]: 0 where key j ≤ query i (and within the sliding window), else -3.4e38. */
export function causalMask(seq: number, slidingWindow?: number): Float32Array {
  const mask = new Float32Array(seq * seq);
  const lowest = -3.4028234663852886e38;
  for (let i = 0; i < seq; i++) {
    for (let j = 0; j < seq; j++) {
      const visible = j <= i && (slidingWindow === undefined || i - j < slidingWindow);
      if (!visible) mask[i * seq + j] = lowest;
    }
  }
  return mask;
}
