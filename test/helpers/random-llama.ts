/**
 * Writes a Llama model directory with random weights (uniform, standard deviation 0.02, for linears and
 * embeddings; unit norms) in float32,
 * one tensor at a time (the writer streams, so a model larger than the test's memory can be written), with the
 * bundled model's tokenizer (vocabulary 4096). For tests of how `bwq quantize` scales with the model.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsStreamWriter, type TensorSpec } from '../../src/safetensors/stream-writer.js';

export interface RandomLlamaShape {
  hiddenSize: number;
  intermediateSize: number;
  layers: number;
  heads: number;
  kvHeads: number;
}

/** Writes the model into `dir` (created); returns the bytes of its model.safetensors. */
export async function writeRandomLlama(dir: string, s: RandomLlamaShape, seed = 1): Promise<number> {
  mkdirSync(dir);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join('models/sotu-llama', f), join(dir, f));
  const vocab = 4096;
  const headDim = s.hiddenSize / s.heads;
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_act: 'silu', hidden_size: s.hiddenSize,
    intermediate_size: s.intermediateSize, num_hidden_layers: s.layers, num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads, head_dim: headDim, max_position_embeddings: 1024, rms_norm_eps: 1e-5,
    rope_theta: 10000, tie_word_embeddings: true, vocab_size: vocab, bos_token_id: 0, eos_token_id: 0, dtype: 'float32',
  }, null, 2));
  const h = s.hiddenSize;
  const specs: TensorSpec[] = [{ name: 'model.embed_tokens.weight', dtype: 'F32', shape: [vocab, h] }];
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    specs.push(
      { name: `${p}.input_layernorm.weight`, dtype: 'F32', shape: [h] },
      { name: `${p}.self_attn.q_proj.weight`, dtype: 'F32', shape: [s.heads * headDim, h] },
      { name: `${p}.self_attn.k_proj.weight`, dtype: 'F32', shape: [s.kvHeads * headDim, h] },
      { name: `${p}.self_attn.v_proj.weight`, dtype: 'F32', shape: [s.kvHeads * headDim, h] },
      { name: `${p}.self_attn.o_proj.weight`, dtype: 'F32', shape: [h, s.heads * headDim] },
      { name: `${p}.post_attention_layernorm.weight`, dtype: 'F32', shape: [h] },
      { name: `${p}.mlp.gate_proj.weight`, dtype: 'F32', shape: [s.intermediateSize, h] },
      { name: `${p}.mlp.up_proj.weight`, dtype: 'F32', shape: [s.intermediateSize, h] },
      { name: `${p}.mlp.down_proj.weight`, dtype: 'F32', shape: [h, s.intermediateSize] },
    );
  }
  specs.push({ name: 'model.norm.weight', dtype: 'F32', shape: [h] });
  const path = join(dir, 'model.safetensors');
  const writer = await SafetensorsStreamWriter.create(path, specs, { format: 'pt' });
  let state = (seed * 2654435761) >>> 0 || 1;
  const scale = (0.02 * Math.sqrt(3)) / 2 ** 31; // uniform on ±0.02·√3: standard deviation 0.02
  let bytes = 0;
  for (const spec of specs) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (spec.shape.length === 1) data.fill(1);
    else {
      for (let i = 0; i < n; i++) {
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        data[i] = (state | 0) * scale;
      }
    }
    await writer.write(spec.name, data);
    bytes += 4 * n;
  }
  await writer.close();
  return bytes;
}
