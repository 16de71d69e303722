/** Perplexity through the ONNX runner vs transformers (test/fixtures/reference/reference.json). */
import { describe, expect, test } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openModelDir } from '../../src/model/model-dir.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { createModelRunner } from '../../src/onnx/model-runner.js';
import { loadEvalTokens } from '../../src/eval/dataset.js';
import { evaluatePerplexity } from '../../src/eval/perplexity.js';

const ROOT = join(import.meta.dirname, '..', '..');
interface RefEntry { seqlen: number; windows: number; tokens: number; mean_nll: number; ppl: number; max_windows: number }
const reference = JSON.parse(readFileSync(join(ROOT, 'test/fixtures/reference/reference.json'), 'utf8')) as {
  test_text_tokens: number;
  models: Record<string, { ppl: RefEntry[] }>;
};
const DATASET = join(ROOT, 'data/sotu-test.txt');

function modelDir(name: string): string {
  return name === 'sotu-llama' ? join(ROOT, 'models/sotu-llama') : join(ROOT, 'test/fixtures/models', name);
}

const cases: [string, RefEntry][] = [];
for (const [name, entry] of Object.entries(reference.models)) {
  for (const p of entry.ppl) if (!(name === 'sotu-llama' && p.seqlen === 1024)) cases.push([name, p]);
}

// All fixture models share one tokenizer (checked byte for byte below), so the text is tokenized once.
let shared: Int32Array | undefined;
async function tokens(dir: string): Promise<Int32Array> {
  const file = readFileSync(join(dir, 'tokenizer.json'));
  expect(file.equals(readFileSync(join(modelDir('sotu-llama'), 'tokenizer.json')))).toBe(true);
  shared ??= await loadEvalTokens(DATASET, await loadTokenizer(modelDir('sotu-llama')));
  return shared;
}

describe('perplexity within 0.1% of transformers', () => {
  test('the evaluation text tokenizes to the reference token count', async () => {
    const ids = await tokens(modelDir('sotu-llama'));
    expect(ids.length).toBe(reference.test_text_tokens);
  });

  test.each(cases)('%s %o', async (name, ref) => {
    const dir = modelDir(name);
    const model = await openModelDir(dir);
    const ids = await tokens(dir);
    const runner = await createModelRunner(model, { threads: 1 });
    const r = await evaluatePerplexity(runner, ids, { seqlen: ref.seqlen, maxWindows: ref.max_windows || undefined, batch: 2 });
    await runner.close();
    await model.checkpoint.close();
    expect(r.windows).toBe(ref.windows);
    expect(r.tokens).toBe(ref.tokens);
    expect(Math.abs(r.ppl / ref.ppl - 1)).toBeLessThan(1e-3);
    expect(Math.abs(r.meanNll - ref.mean_nll)).toBeLessThan(1e-4);
  });
});
