import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { BwqError } from '../../src/errors.js';
import { loadModelConfig } from '../../src/model/config.js';
import { readLinearWeight, readNormWeight } from '../../src/model/load-weights.js';
import { openModelDir } from '../../src/model/model-dir.js';
import {
  describeShapeMismatches, expectedShapes, linearByRole, modelWeightNames, requiredTensorNames, resolveWeightNames,
} from '../../src/model/weights.js';
import { Checkpoint } from '../../src/safetensors/checkpoint.js';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { writeSafetensors } from '../../src/safetensors/writer.js';
import { exampleQuantizationConfig } from './recipe-example.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();

const MODELS = ['tiny-llama', 'tiny-mistral', 'tiny-qwen2', 'tiny-qwen3', 'tiny-gpt2'].map((m) => `test/fixtures/models/${m}`)
  .concat(['models/sotu-llama']);

describe('weight names cover exactly the tensors transformers saved', () => {
  for (const dir of MODELS) {
    test(dir, async () => {
      const config = await loadModelConfig(dir);
      const names = modelWeightNames(config);
      const ck = await Checkpoint.open(dir);
      expect(new Set(requiredTensorNames(names))).toEqual(new Set(ck.names()));
      expect(names.layers.length).toBe(config.numLayers);
      // every required tensor has the shape the config implies
      for (const [name, shape] of expectedShapes(config, names)) expect([name, ck.info(name).shape]).toEqual([name, shape]);
      if (config.tieWordEmbeddings) expect(names.lmHead).toBe(names.embedTokens);
      else expect(names.lmHead).toBe('lm_head.weight');
      await ck.close();
    });
  }

  test('llama layer names', async () => {
    const names = modelWeightNames(await loadModelConfig('test/fixtures/models/tiny-llama'));
    const l1 = names.layers[1]!;
    expect(l1.q).toEqual({ weight: 'model.layers.1.self_attn.q_proj.weight', bias: undefined, transposed: false });
    expect(l1.down.weight).toBe('model.layers.1.mlp.down_proj.weight');
    expect(l1.inputNorm).toEqual({ weight: 'model.layers.1.input_layernorm.weight', bias: undefined });
    expect(l1.postAttentionNorm.weight).toBe('model.layers.1.post_attention_layernorm.weight');
    expect([l1.qNorm, l1.kNorm, l1.fusedQkv, names.embedPositions]).toEqual([undefined, undefined, undefined, undefined]);
    expect(names.finalNorm.weight).toBe('model.norm.weight');
    expect(linearByRole(l1, 'gate_proj')!.weight).toBe('model.layers.1.mlp.gate_proj.weight');
  });

  test('qwen2 biases on q/k/v only; qwen3 q/k norms', async () => {
    const q2 = modelWeightNames(await loadModelConfig('test/fixtures/models/tiny-qwen2')).layers[0]!;
    expect([q2.q.bias, q2.k.bias, q2.v.bias, q2.o.bias]).toEqual([
      'model.layers.0.self_attn.q_proj.bias', 'model.layers.0.self_attn.k_proj.bias', 'model.layers.0.self_attn.v_proj.bias', undefined]);
    const q3 = modelWeightNames(await loadModelConfig('test/fixtures/models/tiny-qwen3')).layers[0]!;
    expect([q3.qNorm!.weight, q3.kNorm!.weight]).toEqual(['model.layers.0.self_attn.q_norm.weight', 'model.layers.0.self_attn.k_norm.weight']);
  });

  test('gpt2 names (Conv1D, fused c_attn)', async () => {
    const names = modelWeightNames(await loadModelConfig('test/fixtures/models/tiny-gpt2'));
    const l = names.layers[0]!;
    expect(names.embedTokens).toBe('transformer.wte.weight');
    expect(names.embedPositions).toBe('transformer.wpe.weight');
    expect(names.lmHead).toBe('transformer.wte.weight');
    expect(names.finalNorm).toEqual({ weight: 'transformer.ln_f.weight', bias: 'transformer.ln_f.bias' });
    expect(l.fusedQkv).toEqual({ weight: 'transformer.h.0.attn.c_attn.weight', bias: 'transformer.h.0.attn.c_attn.bias', transposed: true });
    expect([l.q.fusedIndex, l.k.fusedIndex, l.v.fusedIndex, l.o.fusedIndex]).toEqual([0, 1, 2, undefined]);
    expect(l.o.weight).toBe('transformer.h.0.attn.c_proj.weight');
    expect(l.up).toEqual({ weight: 'transformer.h.0.mlp.c_fc.weight', bias: 'transformer.h.0.mlp.c_fc.bias', transposed: true });
    expect(l.down.weight).toBe('transformer.h.0.mlp.c_proj.weight');
    expect(l.gate).toBeUndefined();
    expect(l.inputNorm).toEqual({ weight: 'transformer.h.0.ln_1.weight', bias: 'transformer.h.0.ln_1.bias' });
    expect(l.postAttentionNorm.weight).toBe('transformer.h.0.ln_2.weight');
  });
});

describe('resolveWeightNames', () => {
  test('gpt2 checkpoint saved without the transformer. prefix', async () => {
    const dir = tempDir('bwq-w-');
    const src = await SafetensorsFile.open('test/fixtures/models/tiny-gpt2/model.safetensors');
    await writeSafetensors(join(dir, 'model.safetensors'), src.names().map((n) => ({
      name: n.replace(/^transformer\./, ''), dtype: src.info(n).dtype, shape: src.info(n).shape, data: () => src.readBytes(n),
    })));
    await src.close();
    copyFileSync('test/fixtures/models/tiny-gpt2/config.json', join(dir, 'config.json'));
    const model = await openModelDir(dir);
    expect(model.weightNames.embedTokens).toBe('wte.weight');
    expect(model.weightNames.layers[1]!.q.weight).toBe('h.1.attn.c_attn.weight');
    expect(model.weightNames.lmHead).toBe('wte.weight');
    await model.checkpoint.close();
  });

  test('a missing tensor is named', async () => {
    const config = await loadModelConfig('test/fixtures/models/tiny-qwen3');
    const present = new Set(requiredTensorNames(modelWeightNames(config)));
    present.delete('model.layers.1.self_attn.k_norm.weight');
    const source = { has: (n: string) => present.has(n), names: () => [...present] };
    expect(() => resolveWeightNames(config, source, 'm/model.safetensors'))
      .toThrow(/checkpoint has no tensor 'model.layers.1.self_attn.k_norm.weight' required by the qwen3 config/);
    const withFiles = { ...source, files: ['m/weights.safetensors'] };
    expect(() => resolveWeightNames(config, withFiles)).toThrow(expect.objectContaining({ file: 'm/weights.safetensors' }));
  });
});

describe('readLinearWeight returns [out, in]', () => {
  test('gpt2: q/k/v are the transposed column blocks of c_attn, biases sliced', async () => {
    const model = await openModelDir('test/fixtures/models/tiny-gpt2');
    const ck = model.checkpoint;
    const layer = model.weightNames.layers[1]!;
    const fused = await ck.readFloat32(layer.fusedQkv!.weight); // [64, 192]
    const fusedBias = await ck.readFloat32(layer.fusedQkv!.bias!);
    for (const [i, names] of [layer.q, layer.k, layer.v].entries()) {
      const lw = await readLinearWeight(ck, names);
      expect([lw.rows, lw.cols]).toEqual([64, 64]);
      for (let r = 0; r < 64; r++) {
        for (let c = 0; c < 64; c++) {
          if (lw.weight[r * 64 + c] !== fused[c * 192 + i * 64 + r]) throw new Error(`mismatch ${i} ${r} ${c}`);
        }
      }
      expect([...lw.bias!]).toEqual([...fusedBias.subarray(i * 64, (i + 1) * 64)]);
    }
    const up = await readLinearWeight(ck, layer.up); // c_fc [64, 256] -> [256, 64]
    const raw = await ck.readFloat32(layer.up.weight);
    expect([up.rows, up.cols]).toEqual([256, 64]);
    expect(up.weight[5 * 64 + 7]).toBe(raw[7 * 256 + 5]);
    await ck.close();
  });

  test('llama: stored layout returned as is; F16 converted', async () => {
    const model = await openModelDir('test/fixtures/models/tiny-mistral');
    const layer = model.weightNames.layers[0]!;
    const k = await readLinearWeight(model.checkpoint, layer.k);
    expect([k.rows, k.cols, k.bias]).toEqual([32, 64, undefined]);
    expect([...k.weight]).toEqual([...(await model.checkpoint.readFloat32(layer.k.weight))]);
    const norm = await readNormWeight(model.checkpoint, layer.inputNorm);
    expect(norm.weight.length).toBe(64);
    expect(norm.bias).toBeUndefined();
    await model.checkpoint.close();
  });
});

describe('openModelDir', () => {
  for (const dir of MODELS) {
    test(`opens ${dir}`, async () => {
      const model = await openModelDir(dir);
      expect(model.dir).toBe(dir);
      expect(model.config.numLayers).toBe(model.weightNames.layers.length);
      await model.checkpoint.close();
    });
  }

  function scratchModel(from: string): string {
    const dir = tempDir('bwq-md-');
    for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(from, f), join(dir, f));
    return dir;
  }

  async function expectError(dir: string, file: string, message: RegExp): Promise<void> {
    const error = await openModelDir(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BwqError);
    expect((error as BwqError).file).toBe(file);
    expect((error as BwqError).message).toMatch(message);
  }

  test('missing directory, config and weights', async () => {
    await expectError('/nonexistent/model', '/nonexistent/model', /model directory not found/);
    const dir = tempDir('bwq-md-');
    await expectError(dir, join(dir, 'config.json'), /config.json not found/);
    copyFileSync('test/fixtures/models/tiny-qwen2/config.json', join(dir, 'config.json'));
    await expectError(dir, dir, /no weights found/);
    await expectError(join(dir, 'config.json'), join(dir, 'config.json'), /not a directory/);
  });

  test('config that does not match the weights', async () => {
    const dir = scratchModel('test/fixtures/models/tiny-qwen2');
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, intermediate_size: 96 }));
    // every mismatch is named; tensors differing only in the layer index are named once with their layers
    await expectError(dir, join(dir, 'model.safetensors'), /^6 tensors do not match the config: /);
    expect(((await openModelDir(dir).catch((e: unknown) => e)) as BwqError).message).toBe(
      "6 tensors do not match the config: 'model.layers.{0-1}.mlp.gate_proj.weight' has shape [128, 64] but the config implies [96, 64]; "
      + "'model.layers.{0-1}.mlp.up_proj.weight' has shape [128, 64] but the config implies [96, 64]; "
      + "'model.layers.{0-1}.mlp.down_proj.weight' has shape [64, 128] but the config implies [64, 96]");
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, num_hidden_layers: 3 }));
    await expectError(dir, join(dir, 'model.safetensors'), /checkpoint has no tensor 'model.layers.2.input_layernorm.weight' \(and \d+ more\)/);
  });

  test('rotation tensors named by quantization_config must exist', async () => {
    const dir = scratchModel('test/fixtures/models/tiny-qwen2');
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, quantization_config: exampleQuantizationConfig() }));
    await expectError(dir, join(dir, 'model.safetensors'),
      /rotation tensor 'model.layers.0.mlp_in.okt_r1' named in quantization_config is missing from the checkpoint/);
  });
});

describe('describeShapeMismatches', () => {
  test('one mismatch keeps the single-tensor form; layers are grouped as ranges; other names are listed as is', () => {
    expect(describeShapeMismatches([{ name: 'lm_head.weight', actual: [4, 8], expected: [5, 8] }]))
      .toBe("tensor 'lm_head.weight' has shape [4, 8] but the config implies [5, 8]");
    const m = (layer: number, actual: number[]) => ({ name: `model.layers.${layer}.mlp.up_proj.weight`, actual, expected: [96, 64] });
    expect(describeShapeMismatches([m(0, [128, 64]), m(1, [128, 64]), m(2, [128, 64]), m(5, [128, 64]), m(7, [64, 64]),
      { name: 'model.norm.weight', actual: [32], expected: [64] }])).toBe(
      "6 tensors do not match the config: 'model.layers.{0-2,5}.mlp.up_proj.weight' has shape [128, 64] but the config implies [96, 64]; "
      + "'model.layers.7.mlp.up_proj.weight' has shape [64, 64] but the config implies [96, 64]; "
      + "'model.norm.weight' has shape [32] but the config implies [64]");
  });
});
