/**
 * The native runtime (native/runtime: one native call per forward, CPU backend here) against
 *  - transformers' float32 logits and perplexity (test/fixtures/reference, make_fixtures.py) on the float fixtures;
 *  - the TypeScript reference forward (src/native/forward.ts with the reference kernels) on packed models
 *    built by test/native-forward/build-quantized.ts (rotations, int / binary / ternary / 12-bit quantizers,
 *    low-rank terms, biases, ternary attention operands);
 *  - itself: decoding token by token from the KV cache gives the logits of the one-call prefill (with the attention
 *    probs quantized over each query's unmasked keys too; the pre-#16 whole-window rows cannot).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openModelDir, type ModelDir } from '../../src/model/model-dir.js';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { createNativeModelRunner } from '../../src/native/forward.js';
import { createReferenceKernels } from '../../src/native/reference-kernels.js';
import { openRuntime } from '../../src/runtime/engine.js';
import { createRuntimeRunner } from '../../src/runtime/runner.js';
import type { ActivationQuantizer } from '../../src/quant/recipe.js';
import { buildQuantizedModel, type BuildOptions } from '../native-forward/build-quantized.js';
import { FLOAT_FIXTURES } from '../helpers/float-fixtures.js';
import { maxAbsDiff } from '../helpers/reference-math.js';

const REF = 'test/fixtures/reference';
const reference = JSON.parse(readFileSync(`${REF}/reference.json`, 'utf8')) as {
  models: Record<string, { ppl: { seqlen: number; windows: number; tokens: number; mean_nll: number }[] }>;
};
const tok = JSON.parse(readFileSync(`${REF}/tokenizer.json`, 'utf8')) as { test_text_ids_head: number[] };


describe.each(FLOAT_FIXTURES)('runtime float forward of %s', (name, dir) => {
  it('matches transformers logits; decoding from the cache matches the prefill', async () => {
    const f = await SafetensorsFile.open(`${REF}/${name}.logits.safetensors`);
    const ids = Int32Array.from(await f.readFloat32('input_ids'));
    const ref = await f.readFloat32('logits');
    const vocab = f.info('logits').shape[1]!;
    await f.close();
    const model = await openModelDir(dir);
    const rt = await openRuntime(model, { device: 'cpu', maxSeq: ids.length });
    try {
      expect(rt.device).toMatch(/^cpu \(/);
      expect(rt.packedLinears).toBe(0);
      const seq = ids.length;
      const logits = rt.forward(ids, seq, 'all');
      let maxRef = 0;
      for (const v of ref) maxRef = Math.max(maxRef, Math.abs(v));
      expect(maxAbsDiff(logits, ref)).toBeLessThan(2e-5 * Math.max(1, maxRef));
      expect(rt.position).toBe(seq);
      // prefill half, then one token at a time
      rt.reset();
      const half = seq >> 1;
      const last = rt.forward(ids.subarray(0, half), half, 'last');
      expect(maxAbsDiff(last, logits.subarray((half - 1) * vocab, half * vocab))).toBeLessThan(2e-5 * maxRef);
      for (let t = half; t < seq; t++) {
        const step = rt.forward(ids.subarray(t, t + 1), 1, 'last');
        expect(maxAbsDiff(step, logits.subarray(t * vocab, (t + 1) * vocab))).toBeLessThan(2e-5 * maxRef);
      }
      // the cache is full: one more token is refused
      expect(() => rt.forward(Int32Array.of(1), 1, 'last')).toThrow(/exceeds the cache/);
    } finally {
      rt.close();
      await model.checkpoint.close();
    }
  });
});

describe('runtime eval runner', () => {
  it('gives transformers\' perplexity for sotu-llama (seqlen 256, 8 windows, batch 4)', async () => {
    const expected = reference.models['sotu-llama']!.ppl.find((p) => p.seqlen === 256)!;
    const ids = Int32Array.from(tok.test_text_ids_head.slice(0, 256 * expected.windows));
    const model = await openModelDir('models/sotu-llama');
    const runner = await createRuntimeRunner(model, { device: 'cpu' });
    try {
      let sum = 0;
      let count = 0;
      for (let w = 0; w < expected.windows; w += 4) {
        const r = await runner.nll(ids.subarray(w * 256, (w + 4) * 256), 4, 256);
        sum += r.sum;
        count += r.count;
      }
      expect(count).toBe(expected.tokens);
      expect(Math.abs(sum / count - expected.mean_nll)).toBeLessThan(2e-6);
    } finally {
      await runner.close();
      await model.checkpoint.close();
    }
  });

  it('refuses token ids outside the vocabulary in one line', async () => {
    const model = await openModelDir('test/fixtures/models/tiny-llama');
    const rt = await openRuntime(model, { device: 'cpu', maxSeq: 8 });
    try {
      expect(() => rt.forward(Int32Array.of(1, 99999), 2, 'last')).toThrow(/token id 99999 is outside the model's vocabulary/);
    } finally {
      rt.close();
      await model.checkpoint.close();
    }
  });
});

const root = mkdtempSync(join(tmpdir(), 'bwq-runtime-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const int = (bits: number, clipRatio = 1): ActivationQuantizer => ({ kind: 'int', bits, clipRatio });
const ter = (thresholdRatio = 0.7): ActivationQuantizer => ({ kind: 'ternary', thresholdRatio });
const all = (quantizer: ActivationQuantizer, rotate = true) => ({
  q_proj: { quantizer, rotate }, k_proj: { quantizer, rotate }, v_proj: { quantizer, rotate }, o_proj: { quantizer, rotate },
  gate_proj: { quantizer, rotate }, up_proj: { quantizer, rotate }, down_proj: { quantizer, rotate },
});
const variants: [string, string, BuildOptions, boolean][] = [
  ['bwla W1A6 + int8/binary/int4 (tiny-llama)', 'test/fixtures/models/tiny-llama', {
    method: 'bwla', aBits: 6, seed: 11, layers: [
      { linears: all(int(6)), rank: 4 },
      { linears: { q_proj: { quantizer: int(8, 0.9), rotate: true }, k_proj: { quantizer: int(8, 0.9), rotate: true },
        v_proj: { quantizer: int(8, 0.9), rotate: true }, o_proj: { quantizer: { kind: 'binary' }, rotate: true },
        gate_proj: { quantizer: int(4), rotate: false }, up_proj: { quantizer: int(4), rotate: false } }, rank: 0 },
    ] }, true],
  ['ternary linears + attention, 12-bit down_proj (tiny-qwen3)', 'test/fixtures/models/tiny-qwen3', {
    method: 'bwta', aBits: 'ternary', seed: 12, layers: [
      { linears: all(ter()), rank: 2, attention: { query: ter(), key: ter(), probs: ter(), value: ter() } },
      { linears: { ...all(ter(0.5)), down_proj: { quantizer: int(12), rotate: true } }, rank: 0,
        attention: { query: int(8), key: int(8), probs: { kind: 'none' }, value: ter() } },
    ] }, false],
  ['ternary with biases (tiny-qwen2)', 'test/fixtures/models/tiny-qwen2', {
    method: 'bwta', aBits: 'ternary', seed: 13, layers: [
      { linears: all(ter()), rank: 0, attention: { query: ter(), key: ter(), probs: ter(), value: ter() } },
    ] }, false],
  // the probs threshold over each query's unmasked keys (issue #16): a row is the same in the prefill and in decoding
  ['ternary attention, probs over the unmasked keys (tiny-qwen2)', 'test/fixtures/models/tiny-qwen2', {
    method: 'bwta', aBits: 'ternary', seed: 14, layers: [
      { linears: all(ter()), rank: 0, attention: { query: ter(), key: ter(), probs: ter(1.5), value: ter(), probsRow: 'unmasked' } },
    ] }, true],
];

describe.each(variants)('runtime packed forward: %s', (label, src, options, cacheConsistent) => {
  let dir: string;
  let model: ModelDir;
  beforeAll(async () => {
    dir = await buildQuantizedModel(src, join(root, label.replace(/\W+/g, '_')), options);
    model = await openModelDir(dir);
  });
  afterAll(async () => {
    await model.checkpoint.close();
  });

  it('matches the TypeScript reference forward (logits; perplexity within 0.5%)', async () => {
    const SEQ = 64;
    const WINDOWS = 4;
    const ids = Int32Array.from(tok.test_text_ids_head.slice(0, SEQ * WINDOWS));
    const reference = await createNativeModelRunner(model, { kernels: createReferenceKernels(), floatGemm: 'js' });
    const rt = await openRuntime(model, { device: 'cpu', maxSeq: SEQ, batch: WINDOWS });
    try {
      expect(rt.packedLinears).toBe(7 * model.config.numLayers);
      const a = rt.forward(ids, SEQ, 'all');
      const b = await reference.logits(ids, WINDOWS, SEQ);
      // float summation orders differ, so a code can flip at a rounding boundary (docs/NATIVE_FORWARD.md)
      expect(maxAbsDiff(a, b)).toBeLessThan(2e-2);
      const na = rt.nll(ids, SEQ);
      const nb = await reference.nll(ids, WINDOWS, SEQ);
      expect(na.count).toBe(nb.count);
      expect(Math.abs(Math.exp((na.sum - nb.sum) / na.count) - 1)).toBeLessThan(0.005);
    } finally {
      rt.close();
      await reference.close();
    }
  });

  it.runIf(cacheConsistent)('decodes from the KV cache with the prefill\'s logits', async () => {
    const SEQ = 32;
    const ids = Int32Array.from(tok.test_text_ids_head.slice(0, SEQ));
    const rt = await openRuntime(model, { device: 'cpu', maxSeq: SEQ });
    try {
      const all = rt.forward(ids, SEQ, 'all');
      rt.reset();
      rt.forward(ids.subarray(0, 8), 8, 'none');
      const V = model.config.vocabSize;
      for (let t = 8; t < SEQ; t++) {
        const step = rt.forward(ids.subarray(t, t + 1), 1, 'last');
        expect(maxAbsDiff(step, all.subarray(t * V, (t + 1) * V))).toBeLessThan(1e-3);
      }
    } finally {
      rt.close();
    }
  });
});
