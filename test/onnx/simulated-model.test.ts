/**
 * Simulated (fake-quantized) models: a float checkpoint with Kronecker rotations fused into its
 * weights and a `quantization_config` recipe. Checks, against independent JS computations:
 *  - rotations alone reproduce the float model (W R with x R, R orthogonal) through the full graph;
 *  - linear-input quantizers (after the online rotation) and attention operand quantizers
 *    (Q, K after RoPE, P, V) in the block graph, via its taps.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openModelDir, type ModelDir } from '../../src/model/model-dir.js';
import { createModelRunner } from '../../src/onnx/model-runner.js';
import { createBlockRunner } from '../../src/onnx/block-runner.js';
import type { ActivationQuantizer, LayerRecipe, LinearRole } from '../../src/quant/recipe.js';
import { quantizeRows } from '../../src/quant/quantizers.js';
import { kroneckerRotateRow } from './helpers.js';
import { GROUP_OF, makeSimulated, type Group } from './sim-model.js';

const ROOT = join(import.meta.dirname, '..', '..');
const IDS = Int32Array.from([17, 400, 9, 3000, 12, 77, 1024, 5, 600, 42, 8, 2222]);

const NONE: ActivationQuantizer = { kind: 'none' };

function allLinears(rot: (g: Group) => { kind: 'kronecker'; r1: string; r2: string }, q: ActivationQuantizer, roles: LinearRole[]): LayerRecipe['linears'] {
  const out: Partial<Record<LinearRole, { rotation: { kind: 'kronecker'; r1: string; r2: string }; quantizer: ActivationQuantizer }>> = {};
  for (const role of roles) out[role] = { rotation: rot(GROUP_OF[role]), quantizer: q };
  return out;
}

const ROLES: LinearRole[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'bwq-sim-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe.each(['tiny-llama', 'tiny-qwen2', 'tiny-qwen3'])('%s', (name) => {
  const src = join(ROOT, 'test/fixtures/models', name);

  test('fused rotations with float activations reproduce the float model', async () => {
    const dir = join(tmp, `${name}-rot`);
    await makeSimulated(src, dir, (_l, rot) => ({ linears: allLinears(rot, NONE, ROLES) }));
    const float = await openModelDir(src);
    const sim = await openModelDir(dir);
    expect(sim.config.quantization?.layers[0]?.linears.q_proj?.rotation).toBeDefined();
    const a = await createModelRunner(float, { threads: 1 });
    const b = await createModelRunner(sim, { threads: 1 });
    const la = await a.logits(IDS, 2, 6);
    const lb = await b.logits(IDS, 2, 6);
    let maxRef = 0;
    let maxDiff = 0;
    for (let i = 0; i < la.length; i++) {
      maxRef = Math.max(maxRef, Math.abs(la[i]!));
      maxDiff = Math.max(maxDiff, Math.abs(la[i]! - lb[i]!));
    }
    expect(maxDiff).toBeLessThan(1e-4 * maxRef);
    // and the rotation is really applied: the same weights without the online rotation differ
    const blocks = await createBlockRunner(sim, { threads: 1 });
    const h = await blocks.embed(IDS, 1, 12);
    const withRot = await blocks.run(0, h, 1, 12);
    const withoutRot = await blocks.run(0, h, 1, 12, { recipe: { linears: {} } });
    let d = 0;
    for (let i = 0; i < h.length; i++) d = Math.max(d, Math.abs(withRot.output[i]! - withoutRot.output[i]!));
    expect(d).toBeGreaterThan(1e-2);
    for (const r of [a, b]) await r.close();
    await blocks.close();
    await float.checkpoint.close();
    await sim.checkpoint.close();
  });

  test('linear input quantizers after the online rotation (v_proj via the value tap, down_proj via the output)', async () => {
    const dir = join(tmp, `${name}-q`);
    const int6: ActivationQuantizer = { kind: 'int', bits: 6, clipRatio: 0.9 };
    const tern: ActivationQuantizer = { kind: 'ternary', thresholdRatio: 0.6 };
    await makeSimulated(src, dir, (_l, rot) => ({ linears: allLinears(rot, NONE, ROLES) }));
    const sim = await openModelDir(dir);
    const { config } = sim;
    const blocks = await createBlockRunner(sim, { threads: 1 });
    const S = 12;
    const h = await blocks.embed(IDS, 1, S);
    const layer = 1;
    const base = config.quantization!.layers[layer]!;
    const w = await blocks.loadBlockWeights(layer);
    const rot = (g: Group) => ({ kind: 'kronecker' as const, r1: `model.layers.${layer}.${g}.okt_r1`, r2: `model.layers.${layer}.${g}.okt_r2` });
    const recipe: LayerRecipe = { linears: { ...base.linears, v_proj: { rotation: rot('attn_in'), quantizer: int6 }, down_proj: { rotation: rot('mlp_out'), quantizer: tern } } };
    const floatRun = await blocks.run(layer, h, 1, S, { taps: ['attn_input', 'mlp_hidden'] });
    const quantRun = await blocks.run(layer, h, 1, S, { recipe, taps: ['attn_input', 'value', 'mlp_hidden'] });
    // v = Wv' · q(rot(attn_input)) + b, laid out [nKv, S, hd]
    const H = config.hiddenSize;
    const hd = config.headDim;
    const nKv = config.numKvHeads;
    const rotAndQuant = (x: Float32Array, n: number, group: Group, q: ActivationQuantizer): Float32Array => {
      const r1 = w.extra.get(rot(group).r1)!;
      const r2 = w.extra.get(rot(group).r2)!;
      const rows = x.length / n;
      const rotated = new Float32Array(x.length);
      for (let t = 0; t < rows; t++) rotated.set(kroneckerRotateRow(x.subarray(t * n, (t + 1) * n), r1.data, r2.data, r1.shape[0]!, r2.shape[0]!), t * n);
      return quantizeRows(rotated, n, q);
    };
    const xin = rotAndQuant(quantRun.taps.get('attn_input')!, H, 'attn_in', int6);
    const wv = w.linears.v_proj!;
    const value = quantRun.taps.get('value')!;
    for (let t = 0; t < S; t++) {
      for (let o = 0; o < nKv * hd; o++) {
        let s = w.biases.v_proj?.[o] ?? 0;
        for (let i = 0; i < H; i++) s += wv[o * H + i]! * xin[t * H + i]!;
        const head = Math.floor(o / hd);
        expect(Math.abs(value[(head * S + t) * hd + (o % hd)]! - s)).toBeLessThan(1e-4 * (1 + Math.abs(s)));
      }
    }
    // output difference = down(q(rot(m))) - down(rot(m)) when only the down_proj quantizer changes…
    // …but v_proj also changed, so compare against a run with the same v_proj recipe and float down_proj.
    const vOnly = await blocks.run(layer, h, 1, S, { recipe: { linears: { ...recipe.linears, down_proj: base.linears.down_proj! } }, taps: ['mlp_hidden'] });
    const m = vOnly.taps.get('mlp_hidden')!;
    const I = config.intermediateSize;
    const mq = rotAndQuant(m, I, 'mlp_out', tern);
    const mf = rotAndQuant(m, I, 'mlp_out', NONE);
    const wd = w.linears.down_proj!;
    let maxDelta = 0;
    for (let t = 0; t < S; t++) {
      for (let o = 0; o < H; o++) {
        let s = 0;
        for (let i = 0; i < I; i++) s += wd[o * I + i]! * (mq[t * I + i]! - mf[t * I + i]!);
        const got = quantRun.output[t * H + o]! - vOnly.output[t * H + o]!;
        expect(Math.abs(got - s)).toBeLessThan(1e-4 * (1 + Math.abs(s)));
        maxDelta = Math.max(maxDelta, Math.abs(s));
      }
    }
    expect(maxDelta).toBeGreaterThan(1e-3); // the quantizer changed something
    expect(Array.from(floatRun.output).some((v, i) => v !== quantRun.output[i])).toBe(true);
    await blocks.close();
    await sim.checkpoint.close();
  });
});

describe('attention operand quantizers (Q, K after RoPE; P; V)', () => {
  const recipes: [string, LayerRecipe['attention']][] = [
    ['int', { query: { kind: 'int', bits: 4, clipRatio: 1 }, key: { kind: 'int', bits: 5, clipRatio: 0.9 }, probs: { kind: 'int', bits: 8, clipRatio: 1 }, value: { kind: 'int', bits: 4, clipRatio: 1 } }],
    ['ternary/binary', { query: { kind: 'ternary', thresholdRatio: 0.7 }, key: { kind: 'binary' }, probs: { kind: 'ternary', thresholdRatio: 0.5 }, value: { kind: 'ternary', thresholdRatio: 0.7 } }],
  ];
  for (const model of ['tiny-llama', 'tiny-gpt2']) {
    test.each(recipes)(`${model} %s`, async (_label, attention) => {
      const dir = join(ROOT, 'test/fixtures/models', model);
      const m: ModelDir = await openModelDir(dir);
      const { config } = m;
      const blocks = await createBlockRunner(m, { threads: 1 });
      const B = 2;
      const S = 6;
      const h = await blocks.embed(IDS, B, S);
      const { taps } = await blocks.run(0, h, B, S, { recipe: { linears: {}, attention }, taps: ['query', 'key', 'value', 'attn_context'] });
      const nH = config.numHeads;
      const nKv = config.numKvHeads;
      const hd = config.headDim;
      const g = nH / nKv;
      const q = quantizeRows(taps.get('query')!, hd, attention!.query);
      const k = quantizeRows(taps.get('key')!, hd, attention!.key);
      const v = quantizeRows(taps.get('value')!, hd, attention!.value);
      const context = taps.get('attn_context')!;
      for (let b = 0; b < B; b++) {
        for (let head = 0; head < nH; head++) {
          const kvh = Math.floor(head / g);
          const probs = new Float32Array(S * S);
          for (let i = 0; i < S; i++) {
            const scores: number[] = [];
            for (let j = 0; j <= i; j++) {
              let s = 0;
              for (let d = 0; d < hd; d++) s += q[((b * nH + head) * S + i) * hd + d]! * k[((b * nKv + kvh) * S + j) * hd + d]!;
              scores.push(s / Math.sqrt(hd));
            }
            const max = Math.max(...scores);
            const e = scores.map((s) => Math.exp(s - max));
            const z = e.reduce((x, y) => x + y, 0);
            e.forEach((x, j) => (probs[i * S + j] = x / z));
          }
          const pq = quantizeRows(probs, S, attention!.probs);
          for (let i = 0; i < S; i++) {
            for (let d = 0; d < hd; d++) {
              let s = 0;
              for (let j = 0; j < S; j++) s += pq[i * S + j]! * v[((b * nKv + kvh) * S + j) * hd + d]!;
              const got = context[(b * S + i) * nH * hd + head * hd + d]!;
              expect(Math.abs(got - s)).toBeLessThan(2e-4 * (1 + Math.abs(s)));
            }
          }
        }
      }
      await blocks.close();
      await m.checkpoint.close();
    });
  }
});
