/**
 * Greedy generation from the packed model in the runtime equals greedy generation from the simulated model in
 * onnxruntime (re-run on the whole prefix for every token) on the bundled model quantized with bwla W1A6 —
 * a recipe without attention-operand quantizers, so decoding from the KV cache is the simulated model
 * (docs/RUNTIME.md). Also the float model against transformers' next-token choices on the reference text.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createProgress } from '../../src/cli/progress.js';
import { loadEvalTokens } from '../../src/eval/dataset.js';
import { openModelDir } from '../../src/model/model-dir.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { createModelRunner } from '../../src/onnx/model-runner.js';
import { quantizeModel } from '../../src/pipeline/quantize.js';
import { openRuntime } from '../../src/runtime/engine.js';
import { generate } from '../../src/runtime/generate.js';

const root = mkdtempSync(join(tmpdir(), 'bwq-generate-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function argmax(x: Float32Array, offset: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[offset + i]! > x[offset + best]!) best = i;
  return best;
}

describe('greedy generation, runtime (packed, KV cache) against the simulated model (ONNX, full prefix)', () => {
  it('gives the same 32 tokens on sotu-llama quantized with bwla W1A6', async () => {
    const outDir = join(root, 'bwla');
    await quantizeModel({
      modelDir: resolve('models/sotu-llama'), outDir, method: 'bwla', aBits: 6,
      calibFile: resolve('calibration/sotu-calib.txt'), nsamples: 2, seqlen: 128, seqlenExplicit: true,
      seed: 0, force: true, threads: 2, statTokens: 128, rank: 4, oktIterations: 1, pspIterations: 1,
      // simulated linears in float32, exactly the packed weights (the default, the checkpoint's bf16, rounds them)
      simulatedDtype: 'float32',
    }, createProgress({ quiet: true }));
    const model = await openModelDir(outDir);
    const tokenizer = await loadTokenizer(outDir);
    const prompt = (await loadEvalTokens(resolve('data/sotu-test.txt'), tokenizer)).slice(0, 16);
    const session = await openRuntime(model, { device: 'cpu', maxSeq: 64 });
    const onnx = await createModelRunner(model, { threads: 2 });
    try {
      expect(session.packedLinears).toBe(7 * model.config.numLayers);
      const result = await generate(session, tokenizer, prompt, {
        maxNewTokens: 32, seed: 0, eosTokenIds: [], temperature: 0, topP: 1,
      });
      expect(result.tokens.length).toBe(32);
      const V = model.config.vocabSize;
      const ids = Array.from(prompt);
      const simulated: number[] = [];
      for (let i = 0; i < 32; i++) {
        const logits = await onnx.logits(Int32Array.from(ids), 1, ids.length);
        const next = argmax(logits, (ids.length - 1) * V, V);
        simulated.push(next);
        ids.push(next);
      }
      expect(result.tokens).toEqual(simulated);
    } finally {
      session.close();
      await onnx.close();
      await model.checkpoint.close();
    }
  });
});
