/**
 * The packed integer path of the native forward pass against two independent float
 * computations of the same simulated model: B's ONNX runner (createModelRunner) on the simulated
 * model.safetensors, and the native forward's own float path on the simulated weights
 * (fake-quantized activations × float W_sim). Models are built from the tiny float fixtures by
 * build-quantized.ts with random rotations, binarized weights and low-rank terms.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openModelDir, type ModelDir } from '../../src/model/model-dir.js';
import { createModelRunner } from '../../src/onnx/model-runner.js';
import { createNativeModelRunner, nativeRunnerFromModel, type NativeModelRunner } from '../../src/native/forward.js';
import { loadNativeModel, tensorSourceOf } from '../../src/native/packed-model.js';
import { createReferenceKernels } from '../../src/native/reference-kernels.js';
import { loadNativeKernels, type NativeKernels } from '../../src/native/kernels.js';
import type { ActivationQuantizer } from '../../src/quant/recipe.js';
import { buildQuantizedModel, type BuildOptions } from './build-quantized.js';
import { maxAbsDiff } from '../helpers/reference-math.js';

const kernels = createReferenceKernels();
// D's addon (CPU kernels) when built: `npm install` builds it; without it the comparison is skipped.
let addon: NativeKernels | undefined;
try {
  addon = loadNativeKernels({ device: 'cpu' });
} catch {
  addon = undefined;
}
const root = mkdtempSync(join(tmpdir(), 'bwq-native-fwd-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const tok = JSON.parse(readFileSync('test/fixtures/reference/tokenizer.json', 'utf8')) as { test_text_ids_head: number[] };
const SEQ = 64;
const WINDOWS = 4;
const ids = Int32Array.from(tok.test_text_ids_head.slice(0, SEQ * WINDOWS));

const int = (bits: number, clipRatio = 1): ActivationQuantizer => ({ kind: 'int', bits, clipRatio });
const ter = (thresholdRatio = 0.7): ActivationQuantizer => ({ kind: 'ternary', thresholdRatio });
const all = (quantizer: ActivationQuantizer, rotate = true) => ({
  q_proj: { quantizer, rotate }, k_proj: { quantizer, rotate }, v_proj: { quantizer, rotate }, o_proj: { quantizer, rotate },
  gate_proj: { quantizer, rotate }, up_proj: { quantizer, rotate }, down_proj: { quantizer, rotate },
});

const variants: [string, string, BuildOptions][] = [
  ['bwla W1A6 + mixed (tiny-llama, llama3 rope)', 'test/fixtures/models/tiny-llama', {
    method: 'bwla', aBits: 6, seed: 11, layers: [
      { linears: all(int(6)), rank: 4 },
      { linears: { q_proj: { quantizer: int(8, 0.9), rotate: true }, k_proj: { quantizer: int(8, 0.9), rotate: true },
        v_proj: { quantizer: int(8, 0.9), rotate: true }, o_proj: { quantizer: { kind: 'binary' }, rotate: true },
        gate_proj: { quantizer: int(4), rotate: false }, up_proj: { quantizer: int(4), rotate: false } }, rank: 0 },
    ] }],
  ['bwta ternary linears + ternary attention (tiny-qwen3, qk-norm)', 'test/fixtures/models/tiny-qwen3', {
    method: 'bwta', aBits: 'ternary', seed: 12, layers: [
      { linears: all(ter()), rank: 2, attention: { query: ter(), key: ter(), probs: ter(), value: ter() } },
      { linears: { ...all(ter(0.5)), down_proj: { quantizer: int(12), rotate: true } }, rank: 0,
        attention: { query: int(8), key: int(8), probs: { kind: 'none' }, value: ter() } },
    ] }],
  ['bwta (tiny-qwen2, biases, linear rope)', 'test/fixtures/models/tiny-qwen2', {
    method: 'bwta', aBits: 'ternary', seed: 13, layers: [
      { linears: all(ter()), rank: 0, attention: { query: ter(), key: ter(), probs: ter(), value: ter() } },
    ] }],
  // the probs threshold over each query's unmasked keys (issue #16)
  ['bwta, attention probs over the unmasked keys (tiny-llama)', 'test/fixtures/models/tiny-llama', {
    method: 'bwta', aBits: 'ternary', seed: 16, layers: [
      { linears: all(ter(), false), rank: 0, attention: { query: ter(), key: ter(), probs: ter(1.5), value: ter(), probsRow: 'unmasked' } },
    ] }],
];


describe.each(variants)('%s', (label, src, options) => {
  let dir: string;
  let model: ModelDir;
  let native: NativeModelRunner;
  beforeAll(async () => {
    dir = await buildQuantizedModel(src, join(root, label.replace(/\W+/g, '_')), options);
    model = await openModelDir(dir);
    native = await createNativeModelRunner(model, { kernels });
  });
  afterAll(async () => {
    await native.close();
    await model.checkpoint.close();
  });

  it('runs every linear from the packed file', () => {
    expect(native.packedLinears).toBe(7 * model.config.numLayers);
    expect(native.backend).toBe('js-reference');
  });

  it.skipIf(addon === undefined)('gives bit-identical logits with the native addon kernels and the reference kernels', async () => {
    const withAddon = await createNativeModelRunner(model, { kernels: addon! });
    expect(withAddon.backend).toMatch(/^cpu \(/);
    const a = await withAddon.logits(ids.subarray(0, SEQ), 1, SEQ);
    const b = await native.logits(ids.subarray(0, SEQ), 1, SEQ);
    let differing = 0;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) differing++;
    expect(differing).toBe(0);
    await withAddon.close();
  });

  it('matches the native float path on the simulated weights', async () => {
    const simModel = await loadNativeModel(model.config, model.weightNames, undefined,
      tensorSourceOf(model.checkpoint, model.checkpoint.files[0]!));
    expect(simModel.packedLinears).toBe(0);
    const sim = nativeRunnerFromModel(simModel, kernels);
    const a = await native.logits(ids.subarray(0, SEQ), 1, SEQ);
    const b = await sim.logits(ids.subarray(0, SEQ), 1, SEQ);
    expect(maxAbsDiff(a, b)).toBeLessThan(2e-3);
    const na = await native.nll(ids, WINDOWS, SEQ);
    const nb = await sim.nll(ids, WINDOWS, SEQ);
    expect(Math.abs(na.sum - nb.sum) / na.count).toBeLessThan(1e-4);
  });

  it('matches the ONNX runner on the simulated model (logits, and perplexity within 0.5%)', async () => {
    const onnx = await createModelRunner(model);
    try {
      const a = await native.logits(ids.subarray(0, SEQ), 1, SEQ);
      const b = await onnx.logits(ids.subarray(0, SEQ), 1, SEQ);
      expect(maxAbsDiff(a, b)).toBeLessThan(2e-3);
      const na = await native.nll(ids, WINDOWS, SEQ);
      const nb = await onnx.nll(ids, WINDOWS, SEQ);
      expect(na.count).toBe(nb.count);
      const pplNative = Math.exp(na.sum / na.count);
      const pplSim = Math.exp(nb.sum / nb.count);
      expect(Math.abs(pplNative / pplSim - 1)).toBeLessThan(0.005);
      expect(Math.abs(na.sum - nb.sum) / na.count).toBeLessThan(1e-4);
    } finally {
      await onnx.close();
    }
  });
});
