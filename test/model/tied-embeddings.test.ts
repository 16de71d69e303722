/**
 * Tied embeddings stored once under `lm_head.weight` (transformers may save either name of a tied pair): the
 * bundled model (tied, stored as model.embed_tokens.weight) rewritten that way evaluates to the same
 * perplexity in onnxruntime and in the runtime, quantizes, and its quantized output keeps the one tensor.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/run-cli.js';
import { openModelDir } from '../../src/model/model-dir.js';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { writeSafetensors, type TensorToWrite } from '../../src/safetensors/writer.js';

const root = mkdtempSync(join(tmpdir(), 'bwq-tied-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const EVAL = ['--seqlen', '128', '--max-windows', '4', '--json'];

async function lmHeadOnlyCopy(): Promise<string> {
  const dir = join(root, 'lm-head-only');
  mkdirSync(dir);
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
    copyFileSync(join('models/sotu-llama', f), join(dir, f));
  }
  const src = await SafetensorsFile.open('models/sotu-llama/model.safetensors');
  const tensors: TensorToWrite[] = [];
  for (const name of src.names()) {
    const info = src.info(name);
    const bytes = await src.readBytes(name);
    tensors.push({ name: name === 'model.embed_tokens.weight' ? 'lm_head.weight' : name, dtype: info.dtype,
      shape: info.shape, data: Uint8Array.from(bytes) });
  }
  await src.close();
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  return dir;
}

describe('tied embeddings stored only as lm_head.weight', () => {
  it('loads, evaluates like the original, quantizes and keeps the tie', async () => {
    const dir = await lmHeadOnlyCopy();
    const model = await openModelDir(dir);
    expect(model.weightNames.embedTokens).toBe('lm_head.weight');
    expect(model.weightNames.lmHead).toBe('lm_head.weight');
    expect(model.checkpoint.has('model.embed_tokens.weight')).toBe(false);
    await model.checkpoint.close();

    const evalPpl = async (model: string, backend: string): Promise<number> => {
      const r = await runCli('eval', model, '--backend', backend, ...(backend === 'native' ? ['--device', 'cpu'] : []), ...EVAL);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout).ppl as number;
    };
    const original = await evalPpl('models/sotu-llama', 'onnx');
    for (const backend of ['onnx', 'native']) {
      // the same numbers as the original model on the same engine
      expect(await evalPpl(dir, backend)).toBe(await evalPpl('models/sotu-llama', backend));
    }

    const out = join(root, 'quantized');
    const q = await runCli('quantize', dir, '-o', out, '--method', 'rtn', '--nsamples', '2', '--seqlen', '64', '--stat-tokens', '64', '--device', 'cpu');
    expect(q.code, q.stderr).toBe(0);
    for (const file of ['model.safetensors', 'model.packed.safetensors']) {
      const f = await SafetensorsFile.open(join(out, file));
      expect(f.has('lm_head.weight'), file).toBe(true);
      expect(f.has('model.embed_tokens.weight'), file).toBe(false);
      await f.close();
    }
    for (const backend of ['onnx', 'native']) expect(await evalPpl(out, backend)).toBeGreaterThan(original);
  }, 120_000);
});
