/**
 * An independent, deliberately plain JavaScript forward pass of a llama-family decoder with the
 * recipe of src/quant/recipe.ts (float64 accumulation, float32 storage between ops), used to
 * check the ONNX graphs of simulated-quantized models. Batch 1.
 */
import type { ModelDir } from '../../src/model/model-dir.js';
import type { ActivationQuantizer, LayerRecipe, LinearRole } from '../../src/quant/recipe.js';
import { quantizeRows } from '../../src/quant/quantizers.js';
import { ropeTables } from '../../src/onnx/rope.js';
import { readLinearWeight } from '../../src/model/load-weights.js';
import { linearByRole } from '../../src/model/weights.js';
import { kroneckerRotateRow } from './helpers.js';

function rmsNorm(x: Float32Array, rows: number, n: number, w: Float32Array, eps: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let j = 0; j < n; j++) ss += x[r * n + j]! ** 2;
    const inv = 1 / Math.sqrt(ss / n + eps);
    for (let j = 0; j < n; j++) out[r * n + j] = w[j]! * (x[r * n + j]! * inv);
  }
  return out;
}

/** y[rows, out] = x[rows, in] · Wᵀ (+ b) */
function matmulT(x: Float32Array, rows: number, w: Float32Array, out: number, inp: number, b?: Float32Array): Float32Array {
  const y = new Float32Array(rows * out);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < out; o++) {
      let s = b?.[o] ?? 0;
      for (let i = 0; i < inp; i++) s += x[r * inp + i]! * w[o * inp + i]!;
      y[r * out + o] = s;
    }
  }
  return y;
}

export async function jsForwardLogits(model: ModelDir, ids: Int32Array): Promise<Float32Array> {
  const { config, checkpoint } = model;
  const S = ids.length;
  const H = config.hiddenSize;
  const nH = config.numHeads;
  const nKv = config.numKvHeads;
  const hd = config.headDim;
  const g = nH / nKv;
  const names = model.weightNames;
  const embed = await checkpoint.readFloat32(names.embedTokens);
  let x = new Float32Array(S * H);
  for (let t = 0; t < S; t++) x.set(embed.subarray(ids[t]! * H, (ids[t]! + 1) * H), t * H);
  const { cos, sin, dim } = ropeTables(config, S);
  const rope = (v: Float32Array, heads: number): void => {
    const half = dim / 2;
    for (let h = 0; h < heads; h++) {
      for (let t = 0; t < S; t++) {
        const o = (t * heads + h) * hd;
        const x1 = v.slice(o, o + half);
        const x2 = v.slice(o + half, o + dim);
        for (let i = 0; i < half; i++) {
          v[o + i] = x1[i]! * cos[t * dim + i]! - x2[i]! * sin[t * dim + i]!;
          v[o + half + i] = x2[i]! * cos[t * dim + half + i]! + x1[i]! * sin[t * dim + half + i]!;
        }
      }
    }
  };
  for (let l = 0; l < config.numLayers; l++) {
    const recipe: LayerRecipe | undefined = config.quantization?.layers[l];
    const ln = names.layers[l]!;
    const linear = async (role: LinearRole, input: Float32Array): Promise<Float32Array> => {
      const w = await readLinearWeight(checkpoint, linearByRole(ln, role)!);
      const r = recipe?.linears[role];
      let v = input;
      if (r?.rotation !== undefined) {
        const r1 = await checkpoint.readTensor(r.rotation.r1);
        const r2 = await checkpoint.readTensor(r.rotation.r2);
        const rotated = new Float32Array(v.length);
        for (let t = 0; t < S; t++) rotated.set(kroneckerRotateRow(v.subarray(t * w.cols, (t + 1) * w.cols), r1.data, r2.data, r1.shape[0]!, r2.shape[0]!), t * w.cols);
        v = rotated;
      }
      if (r !== undefined) v = quantizeRows(v, w.cols, r.quantizer);
      return matmulT(v, S, w.weight, w.rows, w.cols, w.bias);
    };
    const h = rmsNorm(x, S, H, await checkpoint.readFloat32(ln.inputNorm.weight), config.normEps);
    const q = await linear('q_proj', h);
    const k = await linear('k_proj', h);
    const v = await linear('v_proj', h);
    if (ln.qNorm !== undefined) {
      q.set(rmsNorm(q, S * nH, hd, await checkpoint.readFloat32(ln.qNorm.weight), config.normEps));
      k.set(rmsNorm(k, S * nKv, hd, await checkpoint.readFloat32(ln.kNorm!.weight), config.normEps));
    }
    rope(q, nH);
    rope(k, nKv);
    // quantize per head row: layout [S, heads, hd] rows of hd are the same rows as [heads, S, hd]
    const att = recipe?.attention;
    const qq = att ? quantizeRows(q, hd, att.query) : q;
    const kq = att ? quantizeRows(k, hd, att.key) : k;
    const vq = att ? quantizeRows(v, hd, att.value) : v;
    const ctx = new Float32Array(S * nH * hd);
    for (let head = 0; head < nH; head++) {
      const kv = Math.floor(head / g);
      const probs = new Float32Array(S * S);
      for (let i = 0; i < S; i++) {
        const sc: number[] = [];
        for (let j = 0; j <= i; j++) {
          let s = 0;
          for (let d = 0; d < hd; d++) s += qq[(i * nH + head) * hd + d]! * kq[(j * nKv + kv) * hd + d]!;
          sc.push(s / Math.sqrt(hd));
        }
        const m = Math.max(...sc);
        const e = sc.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j <= i; j++) probs[i * S + j] = e[j]! / z;
      }
      const pq = att ? quantizeRows(probs, S, att.probs as ActivationQuantizer) : probs;
      for (let i = 0; i < S; i++) {
        for (let d = 0; d < hd; d++) {
          let s = 0;
          for (let j = 0; j < S; j++) s += pq[i * S + j]! * vq[(j * nKv + kv) * hd + d]!;
          ctx[(i * nH + head) * hd + d] = s;
        }
      }
    }
    const o = await linear('o_proj', ctx);
    const x1 = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) x1[i] = x[i]! + o[i]!;
    const m = rmsNorm(x1, S, H, await checkpoint.readFloat32(ln.postAttentionNorm.weight), config.normEps);
    const gate = await linear('gate_proj', m);
    const up = await linear('up_proj', m);
    const act = new Float32Array(gate.length);
    for (let i = 0; i < gate.length; i++) act[i] = (gate[i]! / (1 + Math.exp(-gate[i]!))) * up[i]!;
    const down = await linear('down_proj', act);
    x = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) x[i] = x1[i]! + down[i]!;
  }
  const f = rmsNorm(x, S, H, await checkpoint.readFloat32(names.finalNorm.weight), config.normEps);
  const head = await checkpoint.readFloat32(names.lmHead);
  return matmulT(f, S, head, config.vocabSize, H);
}
