/**
 * The float path of the native forward pass (no quantization_config: every linear in float)
 * against logits and perplexities computed by Hugging Face transformers in float32
 * (test/fixtures/reference, written by test/fixtures/generate/make_fixtures.py).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { openModelDir } from '../../src/model/model-dir.js';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { createNativeModelRunner } from '../../src/native/forward.js';
import { createReferenceKernels } from '../../src/native/reference-kernels.js';
import { FLOAT_FIXTURES } from '../helpers/float-fixtures.js';

const REF = 'test/fixtures/reference';
const reference = JSON.parse(readFileSync(`${REF}/reference.json`, 'utf8')) as {
  models: Record<string, { ppl: { seqlen: number; windows: number; tokens: number; mean_nll: number; ppl: number }[] }>;
};

async function referenceLogits(name: string): Promise<{ ids: Int32Array; logits: Float32Array; vocab: number }> {
  const f = await SafetensorsFile.open(`${REF}/${name}.logits.safetensors`);
  const ids = Int32Array.from(await f.readFloat32('input_ids'));
  const logits = Float32Array.from(await f.readFloat32('logits'));
  const vocab = f.info('logits').shape[1]!;
  await f.close();
  return { ids, logits, vocab };
}

const kernels = createReferenceKernels();

describe.each(FLOAT_FIXTURES)('native float forward of %s', (name, dir) => {
  it('matches transformers logits and perplexity', async () => {
    const model = await openModelDir(dir);
    const runner = await createNativeModelRunner(model, { kernels });
    expect(runner.packedLinears).toBe(0);
    const ref = await referenceLogits(name);
    const seq = ref.ids.length;
    const logits = await runner.logits(ref.ids, 1, seq);
    expect(logits.length).toBe(seq * ref.vocab);
    let maxErr = 0;
    let maxRef = 0;
    for (let i = 0; i < logits.length; i++) {
      maxErr = Math.max(maxErr, Math.abs(logits[i]! - ref.logits[i]!));
      maxRef = Math.max(maxRef, Math.abs(ref.logits[i]!));
    }
    expect(maxRef).toBeGreaterThan(1);
    expect(maxErr).toBeLessThan(1e-5 * Math.max(1, maxRef));
    // perplexity over the same 64 tokens equals the one from the reference logits
    const { sum, count } = await runner.nll(ref.ids, 1, seq);
    expect(count).toBe(seq - 1);
    let refSum = 0;
    for (let t = 0; t < seq - 1; t++) {
      const o = t * ref.vocab;
      let max = -Infinity;
      for (let j = 0; j < ref.vocab; j++) max = Math.max(max, ref.logits[o + j]!);
      let z = 0;
      for (let j = 0; j < ref.vocab; j++) z += Math.exp(ref.logits[o + j]! - max);
      refSum += max + Math.log(z) - ref.logits[o + ref.ids[t + 1]!]!;
    }
    expect(Math.abs(sum - refSum) / count).toBeLessThan(1e-5);
    await runner.close();
    await model.checkpoint.close();
  });
});

describe('native float forward perplexity on data/sotu-test.txt', () => {
  it('matches transformers for sotu-llama, seqlen 256, 8 windows', async () => {
    const tok = JSON.parse(readFileSync(`${REF}/tokenizer.json`, 'utf8')) as { test_text_ids_head: number[] };
    const expected = reference.models['sotu-llama']!.ppl.find((p) => p.seqlen === 256)!;
    const ids = Int32Array.from(tok.test_text_ids_head.slice(0, 256 * expected.windows));
    const model = await openModelDir('models/sotu-llama');
    const runner = await createNativeModelRunner(model, { kernels });
    const { sum, count } = await runner.nll(ids, expected.windows, 256);
    expect(count).toBe(expected.tokens);
    expect(Math.abs(sum / count - expected.mean_nll)).toBeLessThan(1e-6);
    await runner.close();
    await model.checkpoint.close();
  });
});

describe('sliding-window attention (mistral, window 16 < 64 tokens)', () => {
  it('matches the ONNX runner and differs from plain causal attention', async () => {
    const { mkdtempSync, cpSync, writeFileSync: write, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { createModelRunner } = await import('../../src/onnx/model-runner.js');
    const dir = mkdtempSync(`${tmpdir()}/bwq-sliding-`);
    try {
      cpSync('test/fixtures/models/tiny-mistral', dir, { recursive: true });
      const cfg = JSON.parse(readFileSync(`${dir}/config.json`, 'utf8')) as Record<string, unknown>;
      cfg['sliding_window'] = 16;
      write(`${dir}/config.json`, JSON.stringify(cfg));
      const model = await openModelDir(dir);
      expect(model.config.slidingWindow).toBe(16);
      const ref = await referenceLogits('tiny-mistral');
      const native = await createNativeModelRunner(model, { kernels });
      const onnx = await createModelRunner(model);
      const a = await native.logits(ref.ids, 1, 64);
      const b = await onnx.logits(ref.ids, 1, 64);
      let maxErr = 0;
      let maxFromCausal = 0;
      for (let i = 0; i < a.length; i++) {
        maxErr = Math.max(maxErr, Math.abs(a[i]! - b[i]!));
        maxFromCausal = Math.max(maxFromCausal, Math.abs(a[i]! - ref.logits[i]!));
      }
      expect(maxErr).toBeLessThan(5e-5);
      expect(maxFromCausal).toBeGreaterThan(1e-2);
      // the first 16 positions see the same keys as with plain causal attention
      for (let i = 0; i < 16 * ref.vocab; i++) expect(Math.abs(a[i]! - ref.logits[i]!)).toBeLessThan(5e-5);
      await onnx.close();
      await native.close();
      await model.checkpoint.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
