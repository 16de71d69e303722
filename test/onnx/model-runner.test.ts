import { describe, expect, test } from 'vitest';
import { join } from 'node:path';
import { openModelDir } from '../../src/model/model-dir.js';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { createModelRunner } from '../../src/onnx/model-runner.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MODELS: Record<string, string> = {
  'sotu-llama': join(ROOT, 'models', 'sotu-llama'),
  'tiny-llama': join(ROOT, 'test/fixtures/models/tiny-llama'),
  'tiny-mistral': join(ROOT, 'test/fixtures/models/tiny-mistral'),
  'tiny-qwen2': join(ROOT, 'test/fixtures/models/tiny-qwen2'),
  'tiny-qwen3': join(ROOT, 'test/fixtures/models/tiny-qwen3'),
  'tiny-gpt2': join(ROOT, 'test/fixtures/models/tiny-gpt2'),
};

async function reference(name: string): Promise<{ ids: Int32Array; logits: Float32Array; vocab: number }> {
  const f = await SafetensorsFile.open(join(ROOT, 'test/fixtures/reference', `${name}.logits.safetensors`));
  const ids = Int32Array.from(await f.readFloat32('input_ids'));
  const logits = await f.readFloat32('logits');
  const vocab = f.info('logits').shape[1]!;
  await f.close();
  return { ids, logits, vocab };
}

describe('full-model logits match transformers (float32)', () => {
  for (const [name, dir] of Object.entries(MODELS)) {
    test(name, async () => {
      const ref = await reference(name);
      const model = await openModelDir(dir);
      const runner = await createModelRunner(model, { threads: 1 });
      const logits = await runner.logits(ref.ids, 1, ref.ids.length);
      expect(logits.length).toBe(ref.logits.length);
      // Criterion: max|Δ| ≤ 1e-3·max|ref| and elementwise |Δ| ≤ 1e-4 + 1e-3·|ref|.
      let maxRef = 0;
      let maxDiff = 0;
      let elementwiseBad = 0;
      for (let i = 0; i < logits.length; i++) {
        const d = Math.abs(logits[i]! - ref.logits[i]!);
        maxRef = Math.max(maxRef, Math.abs(ref.logits[i]!));
        maxDiff = Math.max(maxDiff, d);
        if (!(d <= 1e-4 + 1e-3 * Math.abs(ref.logits[i]!))) elementwiseBad++;
      }
      expect(maxDiff).toBeLessThanOrEqual(1e-3 * maxRef);
      expect(elementwiseBad).toBe(0);
      expect(maxRef).toBeGreaterThan(1);
      await runner.close();
      await model.checkpoint.close();
    });
  }

  test('nll() equals -log softmax of logits() at the next token, rows independent', async () => {
    const ref = await reference('tiny-qwen2');
    const model = await openModelDir(MODELS['tiny-qwen2']!);
    const runner = await createModelRunner(model, { threads: 1 });
    const seq = 16;
    const ids = ref.ids.subarray(0, 2 * seq);
    const logits = await runner.logits(ids, 2, seq);
    let expected = 0;
    for (let b = 0; b < 2; b++) {
      for (let t = 0; t < seq - 1; t++) {
        const row = logits.subarray((b * seq + t) * ref.vocab, (b * seq + t + 1) * ref.vocab);
        let max = -Infinity;
        for (const v of row) max = Math.max(max, v);
        let z = 0;
        for (const v of row) z += Math.exp(v - max);
        expected += max + Math.log(z) - row[ids[b * seq + t + 1]!]!;
      }
    }
    const { sum, count } = await runner.nll(ids, 2, seq);
    expect(count).toBe(2 * (seq - 1));
    expect(Math.abs(sum - expected)).toBeLessThan(1e-5 * count * 10);
    // the second row alone gives the same NLL as inside the batch
    const second = await runner.nll(ids.subarray(seq), 1, seq);
    const first = await runner.nll(ids.subarray(0, seq), 1, seq);
    expect(Math.abs(first.sum + second.sum - sum)).toBeLessThan(1e-4);
    await expect(runner.logits(Int32Array.from([1, 99999]), 1, 2)).rejects.toThrow(/outside the vocabulary/);
    await expect(runner.logits(new Int32Array(129), 1, 129)).rejects.toThrow(/exceeds max_position_embeddings 128/);
    await runner.close();
    await model.checkpoint.close();
  });
});
