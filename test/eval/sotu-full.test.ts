/**
 * The headline number: the bundled model over the whole evaluation text at seqlen 1024
 * (107 windows), as `bwq eval` runs it by default, vs transformers' 84.8408.
 */
import { expect, test } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runEval } from '../../src/cli/commands/eval.js';

const ROOT = join(import.meta.dirname, '..', '..');

test('bwq eval defaults: sotu-llama on data/sotu-test.txt at seqlen 1024, all windows', async () => {
  const reference = JSON.parse(readFileSync(join(ROOT, 'test/fixtures/reference/reference.json'), 'utf8'));
  const ref = reference.models['sotu-llama'].ppl.find((p: { seqlen: number }) => p.seqlen === 1024);
  const s = await runEval(undefined, { threads: '1', batch: '1', json: true });
  expect(s.seqlen).toBe(1024); // 2048 clamped to max_position_embeddings
  expect(s.windows).toBe(107);
  expect(s.tokens).toBe(109461);
  expect(Math.abs(s.ppl / ref.ppl - 1)).toBeLessThan(1e-3);
  expect(s.tokensPerSecond).toBeGreaterThan(0);
}, 180_000);
