/**
 * Test-only: turns a float model directory into a quantized model directory the way
 * `bwq quantize` lays it out (config.json with quantization_config, the simulated
 * model.safetensors and model.packed.safetensors in bwq-packed-v1), with random orthogonal
 * Kronecker rotations, row-wise binarized rotated weights (C's binarizeRows / packSignRows) and
 * an optional random low-rank term. No calibration: the point is two representations of the same
 * quantized model, not a good one.
 *
 *   W' = W (R1 ⊗ R2)  (row n of W' = rotation of row n of W)
 *   B = sign⁺(W'), wscale[n] = mean|W'[n, :]|, W_sim = diag(wscale)·B + lr_a·lr_b
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openModelDir } from '../../src/model/model-dir.js';
import { linearByRole } from '../../src/model/weights.js';
import { Rng } from '../../src/linalg/random.js';
import { qr } from '../../src/linalg/qr.js';
import { binarizeRows } from '../../src/quant/binarize.js';
import { packSignRows } from '../../src/quant/pack.js';
import type { AttentionRecipe, LayerRecipe, LinearInputRecipe, LinearRole, QuantizationConfig } from '../../src/quant/recipe.js';
import { writeSafetensors, type TensorToWrite } from '../../src/safetensors/writer.js';
import { rotateRows } from '../../src/quant/kronecker.js';

export type Group = 'attn_in' | 'attn_out' | 'mlp_in' | 'mlp_out';

export const GROUP_OF: Record<LinearRole, Group> = {
  q_proj: 'attn_in', k_proj: 'attn_in', v_proj: 'attn_in', o_proj: 'attn_out',
  gate_proj: 'mlp_in', up_proj: 'mlp_in', down_proj: 'mlp_out',
};

export interface LayerPlan {
  /** Recipe of each linear's input; roles missing run with quantizer none and no rotation. */
  linears: Partial<Record<LinearRole, { quantizer: LinearInputRecipe['quantizer']; rotate: boolean }>>;
  attention?: AttentionRecipe;
  /** Low-rank term rank (0 = none). */
  rank: number;
}

export interface BuildOptions {
  method: QuantizationConfig['method'];
  aBits: number | 'ternary';
  layers: LayerPlan[];
  seed: number;
}

function orthogonal(n: number, rng: Rng): Float32Array {
  const a = new Float64Array(n * n);
  for (let i = 0; i < a.length; i++) a[i] = rng.normal();
  return Float32Array.from(qr(a, n, n).q);
}

/** Factor n = a·b with a ≠ b when possible (catches R1/R2 mix-ups). */
function kroneckerFactors(n: number): [number, number] {
  let best: [number, number] = [1, n];
  for (let a = 2; a * a <= n; a++) if (n % a === 0) best = [a, n / a];
  const [a, b] = best;
  if (a === b && a % 2 === 0) return [a / 2, b * 2];
  return best;
}

/** Builds OUT (a directory) from the float model in SRC; returns OUT. */
export async function buildQuantizedModel(src: string, out: string, options: BuildOptions): Promise<string> {
  const model = await openModelDir(src);
  const { config, checkpoint, weightNames } = model;
  const rng = new Rng(options.seed);
  mkdirSync(out, { recursive: true });
  const sim: TensorToWrite[] = [];
  const packed: TensorToWrite[] = [];
  const linearWeights = new Set<string>();
  const layers: LayerRecipe[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const plan = options.layers[i] ?? options.layers[options.layers.length - 1]!;
    const names = weightNames.layers[i]!;
    const rotations = new Map<Group, { r1: string; r2: string; r1d: Float32Array; r2d: Float32Array; a: number; b: number }>();
    const linears: Partial<Record<LinearRole, LinearInputRecipe>> = {};
    for (const role of ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const) {
      const ln = linearByRole(names, role)!;
      linearWeights.add(ln.weight);
      const info = checkpoint.info(ln.weight);
      const [n, k] = info.shape as [number, number];
      const w = Float32Array.from(await checkpoint.readFloat32(ln.weight));
      const entry = plan.linears[role];
      let wr = w;
      let rotation: LinearInputRecipe['rotation'];
      if (entry?.rotate) {
        const group = GROUP_OF[role];
        let rot = rotations.get(group);
        if (rot === undefined) {
          const [a, b] = kroneckerFactors(k);
          rot = { r1: `model.layers.${i}.${group}.okt_r1`, r2: `model.layers.${i}.${group}.okt_r2`,
            r1d: orthogonal(a, rng), r2d: orthogonal(b, rng), a, b };
          rotations.set(group, rot);
          for (const [name, data, d] of [[rot.r1, rot.r1d, a], [rot.r2, rot.r2d, b]] as const) {
            sim.push({ name, dtype: 'F32', shape: [d, d], data });
            packed.push({ name, dtype: 'F32', shape: [d, d], data });
          }
        }
        wr = rotateRows(w, n, rot.r1d, rot.a, rot.r2d, rot.b);
        rotation = { kind: 'kronecker', r1: rot.r1, r2: rot.r2 };
      }
      if (entry !== undefined) linears[role] = rotation === undefined ? { quantizer: entry.quantizer } : { rotation, quantizer: entry.quantizer };
      const { signs, scales } = binarizeRows(wr, n, k);
      const wsim = new Float64Array(n * k);
      for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) wsim[r * k + c] = scales[r]! * signs[r * k + c]!;
      const prefix = ln.weight.replace(/\.weight$/, '');
      packed.push({ name: `${prefix}.qweight`, dtype: 'U32', shape: [n, Math.ceil(k / 32)], data: packSignRows(signs, n, k) });
      packed.push({ name: `${prefix}.wscale`, dtype: 'F32', shape: [n], data: scales });
      if (plan.rank > 0) {
        const r = plan.rank;
        const lrA = new Float32Array(n * r);
        const lrB = new Float32Array(r * k);
        for (let j = 0; j < lrA.length; j++) lrA[j] = 0.05 * rng.normal();
        for (let j = 0; j < lrB.length; j++) lrB[j] = 0.05 * rng.normal();
        for (let a = 0; a < n; a++) {
          for (let c = 0; c < k; c++) {
            let s = 0;
            for (let p = 0; p < r; p++) s += lrA[a * r + p]! * lrB[p * k + c]!;
            wsim[a * k + c] = wsim[a * k + c]! + s;
          }
        }
        packed.push({ name: `${prefix}.lr_a`, dtype: 'F32', shape: [n, r], data: lrA });
        packed.push({ name: `${prefix}.lr_b`, dtype: 'F32', shape: [r, k], data: lrB });
      }
      sim.push({ name: ln.weight, dtype: 'F32', shape: [n, k], data: Float32Array.from(wsim) });
    }
    layers.push(plan.attention === undefined ? { linears } : { linears, attention: plan.attention });
  }
  // everything else as F32 under its HF name, in both files
  for (const name of checkpoint.names()) {
    if (linearWeights.has(name)) continue;
    const info = checkpoint.info(name);
    const data = Float32Array.from(await checkpoint.readFloat32(name));
    sim.push({ name, dtype: 'F32', shape: info.shape, data });
    packed.push({ name, dtype: 'F32', shape: info.shape, data });
  }
  await checkpoint.close();
  const quantization: QuantizationConfig = {
    quant_method: 'bwq', bwq_version: 'test', method: options.method, w_bits: 1, a_bits: options.aBits,
    layers, packed_weights: 'model.packed.safetensors', settings: { builder: 'test/native-forward/build-quantized.ts' },
  };
  const raw = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  raw['quantization_config'] = quantization;
  raw['dtype'] = 'float32';
  writeFileSync(join(out, 'config.json'), JSON.stringify(raw, null, 2));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
    try {
      writeFileSync(join(out, f), readFileSync(join(src, f)));
    } catch {
      // tokenizer files are optional here
    }
  }
  await writeSafetensors(join(out, 'model.safetensors'), sim, { format: 'pt' });
  await writeSafetensors(join(out, 'model.packed.safetensors'), packed, { format: 'bwq-packed-v1' });
  return out;
}
