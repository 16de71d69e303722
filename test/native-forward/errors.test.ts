/** User-facing errors of the native runner: one-line BwqErrors naming the file and the tensor. */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BwqError } from '../../src/errors.js';
import { openModelDir } from '../../src/model/model-dir.js';
import { createNativeModelRunner } from '../../src/native/forward.js';
import { loadNativeModel, memoryTensorSource, tensorSourceOf } from '../../src/native/packed-model.js';
import { createReferenceKernels } from '../../src/native/reference-kernels.js';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { buildQuantizedModel } from './build-quantized.js';

const root = mkdtempSync(join(tmpdir(), 'bwq-native-err-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const kernels = createReferenceKernels();

async function build(name: string): Promise<string> {
  return buildQuantizedModel('test/fixtures/models/tiny-llama', join(root, name), {
    method: 'bwla', aBits: 6, seed: 3,
    layers: [{ linears: { q_proj: { quantizer: { kind: 'int', bits: 6, clipRatio: 1 }, rotate: true } }, rank: 0 }],
  });
}

describe('native runner errors', () => {
  it('names the packed file when it is missing', async () => {
    const dir = await build('missing');
    unlinkSync(join(dir, 'model.packed.safetensors'));
    const model = await openModelDir(dir);
    const err = await createNativeModelRunner(model, { kernels }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BwqError);
    expect((err as BwqError).file).toBe(join(dir, 'model.packed.safetensors'));
    await model.checkpoint.close();
  });

  it('names the tensor and file of a packed weight with the wrong shape', async () => {
    const dir = await build('shape');
    const model = await openModelDir(dir);
    const file = await SafetensorsFile.open(join(dir, 'model.packed.safetensors'));
    const tensors = new Map<string, { dtype: 'F32' | 'U32'; shape: readonly number[]; data: Float32Array | Uint32Array }>();
    for (const name of file.names()) {
      const info = file.info(name);
      const bytes = await file.readBytes(name);
      const data = info.dtype === 'U32' ? new Uint32Array(Uint8Array.from(bytes).buffer) : Float32Array.from(await file.readFloat32(name));
      tensors.set(name, { dtype: info.dtype as 'F32' | 'U32', shape: info.shape, data });
    }
    await file.close();
    const q = 'model.layers.1.self_attn.q_proj.qweight';
    tensors.set(q, { dtype: 'U32', shape: [64, 3], data: new Uint32Array(64 * 3) });
    const err = await loadNativeModel(model.config, model.weightNames, memoryTensorSource(tensors, 'packed.st'),
      tensorSourceOf(model.checkpoint, 'sim.st')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BwqError);
    expect((err as BwqError).oneLine()).toBe(`packed.st: tensor '${q}' has shape [64, 3], expected [64, 2]`);
    await model.checkpoint.close();
  });

  it('rejects a rotation whose size does not match the linear', async () => {
    const dir = await build('rotation');
    const cfgPath = join(dir, 'config.json');
    const cfg = JSON.parse(readFileSync(cfgPath, 'utf8')) as { quantization_config: { layers: { linears: Record<string, { rotation?: { r2: string } }> }[] } };
    // point layer 0's q_proj rotation at R1 for both factors (a×a ⊗ a×a ≠ K)
    const rot = cfg.quantization_config.layers[0]!.linears['q_proj']!.rotation!;
    rot.r2 = rot.r2.replace('okt_r2', 'okt_r1');
    writeFileSync(cfgPath, JSON.stringify(cfg));
    const model = await openModelDir(dir);
    const err = await createNativeModelRunner(model, { kernels }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BwqError);
    expect((err as BwqError).message).toMatch(/okt_r1 ⊗ .*okt_r1 is \d+x\d+ = \d+, but the linear has 64 inputs/);
    await model.checkpoint.close();
  });

  it('rejects GPT-2 (not an architecture bwq quantize produces)', async () => {
    const model = await openModelDir('test/fixtures/models/tiny-gpt2');
    await expect(createNativeModelRunner(model, { kernels })).rejects.toThrow(/architecture gpt2 is not supported by the native backend/);
    await model.checkpoint.close();
  });

  it('rejects token ids outside the vocabulary', async () => {
    const model = await openModelDir('test/fixtures/models/tiny-llama');
    const runner = await createNativeModelRunner(model, { kernels });
    await expect(runner.nll(Int32Array.of(1, 2, 4096), 1, 3)).rejects.toThrow(/outside the model's vocabulary/);
    await expect(runner.logits(new Int32Array(129), 1, 129)).rejects.toThrow(/exceeds max_position_embeddings 128/);
    await model.checkpoint.close();
  });
});
