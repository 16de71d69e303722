import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { BwqError } from '../../src/errors.js';
import { loadModelConfig, parseModelConfig, type ModelConfig } from '../../src/model/config.js';
import type { QuantizationConfig } from '../../src/quant/recipe.js';
import { exampleQuantizationConfig } from './recipe-example.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();

const MODELS = ['tiny-llama', 'tiny-mistral', 'tiny-qwen2', 'tiny-qwen3', 'tiny-gpt2'].map((m) => `test/fixtures/models/${m}`)
  .concat(['models/sotu-llama']);

function rawOf(dir: string): Record<string, any> {
  return JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
}

function parseError(json: unknown, message: RegExp, file = 'x/config.json'): void {
  let caught: unknown;
  try {
    parseModelConfig(json, file);
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(BwqError);
  expect((caught as BwqError).file).toBe(file);
  expect((caught as BwqError).message).toMatch(message);
  expect((caught as BwqError).oneLine()).not.toContain('\n');
}

describe('fixture configs', () => {
  for (const dir of MODELS) {
    test(`${dir}: dims equal the config.json values`, async () => {
      const raw = rawOf(dir);
      const c = await loadModelConfig(dir);
      expect(c.raw).toEqual(raw);
      expect(c.modelType).toBe(raw.model_type);
      expect(c.architecture).toBe(raw.model_type);
      expect(c.vocabSize).toBe(raw.vocab_size);
      if (raw.model_type === 'gpt2') {
        expect([c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.maxPositionEmbeddings])
          .toEqual([raw.n_embd, raw.n_layer, raw.n_head, raw.n_head, raw.n_embd / raw.n_head, raw.n_positions]);
        expect(c.intermediateSize).toBe(raw.n_inner ?? 4 * raw.n_embd);
        expect(c.normEps).toBe(raw.layer_norm_epsilon);
        expect(c.hiddenAct).toBe(raw.activation_function);
        expect([c.normKind, c.rope, c.tieWordEmbeddings, c.attentionBias, c.mlpBias, c.qkNorm])
          .toEqual(['layer', undefined, true, true, true, false]);
      } else {
        expect([c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKvHeads, c.maxPositionEmbeddings])
          .toEqual([raw.hidden_size, raw.intermediate_size, raw.num_hidden_layers, raw.num_attention_heads,
            raw.num_key_value_heads, raw.max_position_embeddings]);
        expect(c.headDim).toBe(raw.head_dim ?? raw.hidden_size / raw.num_attention_heads);
        expect(c.normEps).toBe(raw.rms_norm_eps);
        expect(c.normKind).toBe('rms');
        expect(c.hiddenAct).toBe(raw.hidden_act);
        expect(c.tieWordEmbeddings).toBe(raw.tie_word_embeddings);
        expect(c.rope!.theta).toBe(raw.rope_parameters.rope_theta);
        expect(c.rope!.type).toBe(raw.rope_parameters.rope_type);
        expect(c.rope!.factor).toBe(raw.rope_parameters.factor);
        expect(c.qkNorm).toBe(raw.model_type === 'qwen3');
        expect(c.attentionBias).toBe(raw.model_type === 'qwen2');
      }
      expect(c.quantization).toBeUndefined();
    });
  }

  test('specific values', async () => {
    const llama = await loadModelConfig('test/fixtures/models/tiny-llama');
    expect(llama.rope).toEqual({ theta: 50000, type: 'llama3', factor: 4, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32 });
    expect(llama.slidingWindow).toBeUndefined();
    const qwen3 = await loadModelConfig('test/fixtures/models/tiny-qwen3');
    expect([qwen3.headDim, qwen3.numHeads * qwen3.headDim, qwen3.hiddenSize]).toEqual([32, 128, 64]);
    const qwen2 = await loadModelConfig('test/fixtures/models/tiny-qwen2');
    expect(qwen2.rope).toEqual({ theta: 1e6, type: 'linear', factor: 2 });
    expect(qwen2.slidingWindow).toBeUndefined();
    const mistral = await loadModelConfig('test/fixtures/models/tiny-mistral');
    expect(mistral.slidingWindow).toBeUndefined(); // "sliding_window": null
    const sotu = await loadModelConfig('models/sotu-llama');
    expect([sotu.hiddenSize, sotu.numLayers, sotu.numHeads, sotu.numKvHeads, sotu.headDim, sotu.intermediateSize, sotu.normEps])
      .toEqual([256, 4, 8, 4, 32, 768, 1e-5]);
    expect(sotu.tieWordEmbeddings).toBe(true);
  });
});

describe('config variants', () => {
  const llama = rawOf('test/fixtures/models/tiny-llama');

  test('older rope_theta + rope_scaling gives the same rope as rope_parameters', () => {
    const { rope_parameters: rp, ...rest } = llama;
    const old = { ...rest, rope_theta: rp.rope_theta, rope_scaling: { type: 'llama3', factor: 4.0, low_freq_factor: 1.0,
      high_freq_factor: 4.0, original_max_position_embeddings: 32 } };
    expect(parseModelConfig(old, 'c.json').rope).toEqual(parseModelConfig(llama, 'c.json').rope);
    const plain = { ...rest, rope_theta: 500000, rope_scaling: null };
    expect(parseModelConfig(plain, 'c.json').rope).toEqual({ theta: 500000, type: 'default' });
    const none = { ...rest };
    expect(parseModelConfig(none, 'c.json').rope).toEqual({ theta: 10000, type: 'default' });
    const linear = { ...rest, rope_theta: 1e4, rope_scaling: { rope_type: 'linear', factor: 8 } };
    expect(parseModelConfig(linear, 'c.json').rope).toEqual({ theta: 1e4, type: 'linear', factor: 8 });
  });

  test('partial_rotary_factor', () => {
    const c = parseModelConfig({ ...llama, rope_parameters: { rope_theta: 1e4, rope_type: 'default', partial_rotary_factor: 0.5 } }, 'c.json');
    expect(c.rope).toEqual({ theta: 1e4, type: 'default', partialRotaryFactor: 0.5 });
  });

  test('defaults: head_dim = hidden / heads, kv heads = heads, untied, no biases', () => {
    const { head_dim: _h, num_key_value_heads: _k, tie_word_embeddings: _t, attention_bias: _a, mlp_bias: _m, ...rest } = llama;
    const c = parseModelConfig(rest, 'c.json');
    expect([c.headDim, c.numKvHeads, c.tieWordEmbeddings, c.attentionBias, c.mlpBias]).toEqual([16, 4, false, false, false]);
  });

  test('architecture falls back to architectures[0] when model_type is absent', () => {
    const { model_type: _m, ...rest } = rawOf('test/fixtures/models/tiny-qwen3');
    const c = parseModelConfig(rest, 'c.json');
    expect([c.architecture, c.modelType, c.qkNorm]).toEqual(['qwen3', 'qwen3', true]);
  });

  test('gpt2: n_inner given, other activation', () => {
    const gpt2 = rawOf('test/fixtures/models/tiny-gpt2');
    const c = parseModelConfig({ ...gpt2, n_inner: 100, activation_function: 'relu' }, 'c.json');
    expect([c.intermediateSize, c.hiddenAct]).toEqual([100, 'relu']);
  });

  test('sliding windows: mistral default 4096 when absent, qwen2 only with use_sliding_window', () => {
    const mistral = rawOf('test/fixtures/models/tiny-mistral');
    const { sliding_window: _s, ...noWindow } = mistral;
    expect(parseModelConfig(noWindow, 'c.json').slidingWindow).toBe(4096);
    expect(parseModelConfig({ ...mistral, sliding_window: 512 }, 'c.json').slidingWindow).toBe(512);
    const qwen2 = rawOf('test/fixtures/models/tiny-qwen2');
    expect(parseModelConfig({ ...qwen2, sliding_window: 64 }, 'c.json').slidingWindow).toBeUndefined();
    expect(parseModelConfig({ ...qwen2, sliding_window: 64, use_sliding_window: true }, 'c.json').slidingWindow).toBe(64);
  });

  test('llama attention_bias / mlp_bias', () => {
    const c = parseModelConfig({ ...llama, attention_bias: true, mlp_bias: true }, 'c.json');
    expect([c.attentionBias, c.mlpBias]).toEqual([true, true]);
  });
});

describe('config errors name the file', () => {
  const llama = rawOf('test/fixtures/models/tiny-llama');
  const gpt2 = rawOf('test/fixtures/models/tiny-gpt2');
  test('unsupported architecture', () => {
    parseError({ ...llama, model_type: 'falcon' }, /^unsupported architecture 'falcon' \(supported: llama, mistral, qwen2, qwen3, gpt2\)$/);
    const { model_type: _m, ...rest } = llama;
    parseError({ ...rest, architectures: ['FalconForCausalLM'] }, /unsupported architecture 'FalconForCausalLM'/);
    parseError({ hidden_size: 3 }, /neither 'model_type' nor 'architectures'/);
  });
  test('not an object', () => parseError([1], /config is not a JSON object/));
  test('missing field', () => {
    const { hidden_size: _h, ...rest } = llama;
    parseError(rest, /config field 'hidden_size' is missing/);
    const { n_layer: _n, ...g } = gpt2;
    parseError(g, /config field 'n_layer' is missing/);
  });
  test('wrong types and values', () => {
    parseError({ ...llama, num_hidden_layers: '2' }, /config field 'num_hidden_layers' must be a positive integer \(got "2"\)/);
    parseError({ ...llama, intermediate_size: 0 }, /'intermediate_size' must be a positive integer \(got 0\)/);
    parseError({ ...llama, vocab_size: 10.5 }, /'vocab_size' must be a positive integer/);
    parseError({ ...llama, rms_norm_eps: -1 }, /'rms_norm_eps' must be a positive number/);
    parseError({ ...llama, tie_word_embeddings: 'yes' }, /'tie_word_embeddings' must be true or false/);
  });
  test('inconsistent heads', () => {
    parseError({ ...llama, num_key_value_heads: 3 }, /num_attention_heads 4 is not a multiple of num_key_value_heads 3/);
    const { head_dim: _h, ...rest } = llama;
    parseError({ ...rest, num_attention_heads: 5, num_key_value_heads: 5 }, /hidden_size 64 is not divisible by num_attention_heads 5/);
    parseError({ ...gpt2, n_head: 5 }, /n_embd 64 is not divisible by n_head 5/);
  });
  test('rope problems', () => {
    parseError({ ...llama, rope_parameters: { rope_theta: 1e4, rope_type: 'longrope' } }, /unsupported rope type 'longrope'/);
    parseError({ ...llama, rope_parameters: { rope_theta: 1e4, rope_type: 'llama3', factor: 8 } }, /config field 'rope_parameters.low_freq_factor' is missing/);
    parseError({ ...llama, rope_parameters: { rope_theta: 1e4, rope_type: 'linear' } }, /'rope_parameters.factor' is missing/);
    parseError({ ...llama, rope_parameters: { rope_theta: -1 } }, /'rope_parameters.rope_theta' must be a positive number/);
  });
  test('unsupported activation and gpt2 options', () => {
    parseError({ ...llama, hidden_act: 'quick_gelu' }, /unsupported activation 'quick_gelu' in 'hidden_act'/);
    parseError({ ...gpt2, scale_attn_by_inverse_layer_idx: true }, /'scale_attn_by_inverse_layer_idx: true' is not supported/);
  });
  test('missing and invalid config.json', async () => {
    const dir = tempDir('bwq-cfg-');
    await expect(loadModelConfig(dir)).rejects.toMatchObject({ file: join(dir, 'config.json'), message: 'config.json not found' });
    writeFileSync(join(dir, 'config.json'), '{"model_type": "llama",');
    await expect(loadModelConfig(dir)).rejects.toMatchObject({ file: join(dir, 'config.json'), message: expect.stringMatching(/config is not valid JSON/) });
  });
});

describe('quantization_config (bwq)', () => {
  const llama = rawOf('test/fixtures/models/tiny-llama');
  const gpt2 = rawOf('test/fixtures/models/tiny-gpt2');

  test('a valid recipe is returned typed', () => {
    const c: ModelConfig = parseModelConfig({ ...llama, quantization_config: exampleQuantizationConfig() }, 'c.json');
    const q: QuantizationConfig = c.quantization!;
    expect([q.method, q.a_bits, q.w_bits, q.layers.length, q.packed_weights]).toEqual(['bwta', 'ternary', 1, 2, 'model.packed.safetensors']);
    expect(q.layers[1]!.linears.gate_proj).toEqual({ quantizer: { kind: 'ternary', thresholdRatio: 0.7 },
      rotation: { kind: 'kronecker', r1: 'model.layers.1.mlp_in.okt_r1', r2: 'model.layers.1.mlp_in.okt_r2' } });
    expect(q.layers[0]!.attention!.value).toEqual({ kind: 'binary' });
    expect(q.settings['okt']).toBe(true);
  });

  test('bwla with integer a_bits, no attention recipe, clipRatio defaulting to 1', () => {
    const base = exampleQuantizationConfig();
    const layers = [0, 1].map(() => ({ linears: { q_proj: { quantizer: { kind: 'int', bits: 6 } } } }));
    const c = parseModelConfig({ ...llama, quantization_config: { ...base, method: 'bwla', a_bits: 6, layers } }, 'c.json');
    expect(c.quantization!.a_bits).toBe(6);
    expect(c.quantization!.layers[0]).toEqual({ linears: { q_proj: { quantizer: { kind: 'int', bits: 6, clipRatio: 1 } } } });
  });

  const bad: [string, (q: Record<string, any>) => unknown, RegExp][] = [
    ['other quant_method', (q) => ({ ...q, quant_method: 'gptq' }), /quantization_config: quant_method "gptq" is not supported/],
    ['unknown method', (q) => ({ ...q, method: 'awq' }), /'method' must be one of bwta, bwla, rtn, billm, arb \(got "awq"\)/],
    ['w_bits 2', (q) => ({ ...q, w_bits: 2 }), /'w_bits' must be 1 \(got 2\)/],
    ['a_bits 1', (q) => ({ ...q, a_bits: 1 }), /'a_bits' must be "ternary" or an integer in \[2, 32\] \(got 1\)/],
    ['layer count', (q) => ({ ...q, layers: q.layers.slice(0, 1) }), /'layers' has 1 entries but the model has 2 layers/],
    ['layers not an array', (q) => ({ ...q, layers: {} }), /'layers' must be an array/],
    ['unknown role', (q) => ({ ...q, layers: [q.layers[0], { linears: { qkv_proj: { quantizer: { kind: 'none' } } } }] }),
      /quantization_config.layers\[1\]: unknown linear role 'qkv_proj'/],
    ['unknown quantizer kind', (q) => ({ ...q, layers: [q.layers[0], { linears: { q_proj: { quantizer: { kind: 'fp4' } } } }] }),
      /quantization_config.layers\[1\].linears.q_proj.quantizer: unknown quantizer kind "fp4"/],
    ['int bits', (q) => ({ ...q, layers: [{ linears: { q_proj: { quantizer: { kind: 'int', bits: 1.5 } } } }, q.layers[1]] }),
      /layers\[0\].linears.q_proj.quantizer: int quantizer 'bits' must be an integer in \[2, 32\]/],
    ['ternary threshold', (q) => ({ ...q, layers: [{ linears: { q_proj: { quantizer: { kind: 'ternary' } } } }, q.layers[1]] }),
      /ternary quantizer 'thresholdRatio' must be a non-negative number/],
    ['rotation tensor name', (q) => ({ ...q, layers: [{ linears: { up_proj: { quantizer: { kind: 'none' }, rotation: { kind: 'kronecker', r1: 'a' } } } }, q.layers[1]] }),
      /layers\[0\].linears.up_proj.rotation: rotation 'r2' must be a tensor name/],
    ['rotation kind', (q) => ({ ...q, layers: [{ linears: { up_proj: { quantizer: { kind: 'none' }, rotation: { kind: 'hadamard', r1: 'a', r2: 'b' } } } }, q.layers[1]] }),
      /unknown rotation kind "hadamard"/],
    ['attention operand missing', (q) => ({ ...q, layers: [{ linears: {}, attention: { query: { kind: 'none' } } }, q.layers[1]] }),
      /layers\[0\].attention.key: quantizer must be an object/],
    ['packed_weights escaping the directory', (q) => ({ ...q, packed_weights: '../x.safetensors' }), /'packed_weights' must be a path inside the model directory/],
    ['settings value', (q) => ({ ...q, settings: { a: [1] } }), /settings.a must be a string, number or boolean/],
  ];
  for (const [title, mutate, message] of bad) {
    test(`rejects: ${title}`, () => {
      parseError({ ...llama, quantization_config: mutate(exampleQuantizationConfig()) }, message);
    });
  }

  test('gpt2 recipes cannot name gate_proj', () => {
    parseError({ ...gpt2, quantization_config: exampleQuantizationConfig() }, /layers\[0\]: gpt2 has no 'gate_proj'/);
  });
});
