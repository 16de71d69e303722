/**
 * A model with random weights from a real config (for benchmarks: no large checkpoint can be downloaded here),
 * as a ModelSource the runtime loader streams one tensor at a time, generating each on demand:
 *  - 'fp16':  every weight bf16 (the float baseline);
 *  - 'bwla':  W1A6 as `bwq quantize --method bwla` writes it: per linear input an online Kronecker rotation
 *             (signed permutations, so orthogonal) and a 6-bit activation quantizer, packed signs, scales and a
 *             rank-8 low-rank term;
 *  - 'bwta':  ternary activations on every linear and on the four attention operands, packed signs and scales.
 * Embeddings and lm_head stay bf16 in every variant, as in a packed OUT_DIR.
 */
import type { ModelConfig } from '../model/config.js';
import { expectedShapes, modelWeightNames } from '../model/weights.js';
import type { ActivationQuantizer, LayerRecipe, LinearRole, QuantizationConfig } from '../quant/recipe.js';
import { kroneckerSplit } from '../quant/kronecker.js';
import type { ModelSource, TensorStore } from './load.js';

export type RandomVariant = 'fp16' | 'bwla' | 'bwta';
export const RANDOM_VARIANTS: readonly RandomVariant[] = ['fp16', 'bwla', 'bwta'];

const GROUP: Record<LinearRole, string> = {
  q_proj: 'attn_in', k_proj: 'attn_in', v_proj: 'attn_in', o_proj: 'attn_out', gate_proj: 'mlp_in', up_proj: 'mlp_in',
  down_proj: 'mlp_out',
};
const ROLES = Object.keys(GROUP) as LinearRole[];
const RANK = 8;

/** xorshift32 words */
function fillRandom(words: Uint32Array, seed: number): void {
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
}

/** bf16 values of magnitude in [2^-9, 2^-5) with random signs (about the scale of trained LLM weights). */
function randomBf16(count: number, seed: number): Uint8Array {
  const words = new Uint32Array(Math.ceil(count / 2));
  fillRandom(words, seed);
  const half = new Uint16Array(words.buffer, 0, count);
  for (let i = 0; i < count; i++) {
    const r = half[i]!;
    half[i] = (r & 0x8000) | ((118 + ((r >>> 7) & 3)) << 7) | (r & 0x7f);
  }
  return new Uint8Array(half.buffer, 0, count * 2);
}

/** A signed permutation of size n (orthogonal), row-major. */
function signedPermutation(n: number, seed: number): Float32Array {
  const words = new Uint32Array(n);
  fillRandom(words, seed);
  const perm = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = words[i]! % (i + 1);
    [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  }
  const m = new Float32Array(n * n);
  for (let i = 0; i < n; i++) m[i * n + perm[i]!] = words[i]! & 1 ? 1 : -1;
  return m;
}

function hashName(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

export function randomModelSource(base: ModelConfig, variant: RandomVariant, label: string): ModelSource {
  const names = modelWeightNames(base);
  const ternary = (thresholdRatio: number): ActivationQuantizer => ({ kind: 'ternary', thresholdRatio });
  const floatTensors = new Map<string, { shape: number[]; dtype: string; make: () => Uint8Array | Float32Array }>();
  const packed = new Map<string, { shape: number[]; dtype: string; make: () => Uint8Array | Float32Array }>();
  for (const [name, shape] of expectedShapes(base, names)) {
    const count = shape.reduce((a, b) => a * b, 1);
    const isNorm = shape.length === 1;
    floatTensors.set(name, isNorm
      ? { shape, dtype: 'F32', make: () => new Float32Array(count).fill(1) }
      : { shape, dtype: 'BF16', make: () => randomBf16(count, hashName(name)) });
  }
  let quantization: QuantizationConfig | undefined;
  if (variant !== 'fp16') {
    const layers: LayerRecipe[] = [];
    for (let i = 0; i < base.numLayers; i++) {
      const linears: LayerRecipe['linears'] = {};
      for (const role of ROLES) {
        const ln = names.layers[i]!;
        const wn = { q_proj: ln.q, k_proj: ln.k, v_proj: ln.v, o_proj: ln.o, gate_proj: ln.gate, up_proj: ln.up, down_proj: ln.down }[role]!;
        const prefix = wn.weight.replace(/\.weight$/, '');
        const [n, k] = floatTensors.get(wn.weight)!.shape as [number, number];
        const kw = Math.ceil(k / 32);
        packed.set(`${prefix}.qweight`, { shape: [n, kw], dtype: 'U32', make: () => {
          const w = new Uint32Array(n * kw);
          fillRandom(w, hashName(prefix));
          return new Uint8Array(w.buffer);
        } });
        packed.set(`${prefix}.wscale`, { shape: [n], dtype: 'F32', make: () => new Float32Array(n).fill(0.02) });
        if (variant === 'bwla') {
          packed.set(`${prefix}.lr_a`, { shape: [n, RANK], dtype: 'F32', make: () => new Float32Array(n * RANK).fill(1e-3) });
          packed.set(`${prefix}.lr_b`, { shape: [RANK, k], dtype: 'F32', make: () => new Float32Array(RANK * k).fill(1e-3) });
          const group = `model.layers.${i}.${GROUP[role]}`;
          const { a, b, r } = kroneckerSplit(k);  // as bwq quantize splits K (src/quant/kronecker.ts)
          floatTensors.set(`${group}.okt_r1`, { shape: [a, a], dtype: 'F32', make: () => signedPermutation(a, hashName(`${group}1`)) });
          floatTensors.set(`${group}.okt_r2`, { shape: [b, b], dtype: 'F32', make: () => signedPermutation(b, hashName(`${group}2`)) });
          if (r > 0) floatTensors.set(`${group}.okt_r3`, { shape: [r, r], dtype: 'F32', make: () => signedPermutation(r, hashName(`${group}3`)) });
          linears[role] = {
            rotation: r > 0
              ? { kind: 'kronecker_remainder', r1: `${group}.okt_r1`, r2: `${group}.okt_r2`, r3: `${group}.okt_r3` }
              : { kind: 'kronecker', r1: `${group}.okt_r1`, r2: `${group}.okt_r2` },
            quantizer: { kind: 'int', bits: 6, clipRatio: 1 } };
        } else {
          linears[role] = { quantizer: ternary(0.7) };
        }
      }
      layers.push(variant === 'bwta'
        ? { linears, attention: { query: ternary(0.8), key: ternary(0.65), probs: ternary(1), value: ternary(0.8), probsRow: 'unmasked' } }
        : { linears });
    }
    quantization = { quant_method: 'bwq', bwq_version: 'random', method: variant, w_bits: 1,
      a_bits: variant === 'bwta' ? 'ternary' : 6, layers, packed_weights: 'random', settings: {} };
  }
  const store = (map: typeof floatTensors, storeLabel: string): TensorStore => ({
    label: storeLabel,
    has: (n) => map.has(n),
    info: (n) => {
      const t = map.get(n)!;
      return { shape: t.shape, dtype: t.dtype };
    },
    readBytes: async (n) => {
      const d = map.get(n)!.make();
      return d instanceof Uint8Array ? d : new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    },
    readFloat32: async (n) => {
      const d = map.get(n)!.make();
      if (d instanceof Float32Array) return d;
      const out = new Float32Array(d.length / 2);
      const h = new Uint16Array(d.buffer, d.byteOffset, d.length / 2);
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < h.length; i++) u[i] = h[i]! << 16;
      return out;
    },
  });
  const config: ModelConfig = { ...base, ...(quantization === undefined ? {} : { quantization }) };
  const stores = quantization === undefined ? [store(floatTensors, label)] : [store(packed, `${label} (packed)`), store(floatTensors, label)];
  return { config, weightNames: names, stores, quantized: quantization !== undefined };
}
