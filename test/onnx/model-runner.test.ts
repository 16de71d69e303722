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
      let maxRef = 0;
      let maxDiff = 0;
      for (let i = 0; i < logits.length; i++) {
        maxRef = Math.max(maxRef, Math.abs(ref.logits[i]!));
        maxDiff = Math.max(maxDiff, Math.abs(logits[i]! - ref.logits[i]!));
      }
      console.log(name, 'max|ref|', maxRef, 'max|diff|', maxDiff);
      expect(maxDiff).toBeLessThanOrEqual(1e-3 * maxRef);
      await runner.close();
      await model.checkpoint.close();
    });
  }
});
