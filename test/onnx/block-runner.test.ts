import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { join } from 'node:path';
import { openModelDir, type ModelDir } from '../../src/model/model-dir.js';
import { createModelRunner } from '../../src/onnx/model-runner.js';
import { createBlockRunner, type BlockRunner } from '../../src/onnx/block-runner.js';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { maxAbsDiff } from '../helpers/reference-math.js';

const ROOT = join(import.meta.dirname, '..', '..');
const FIXTURES = join(ROOT, 'test/fixtures/models');


async function referenceIds(name: string, n: number): Promise<Int32Array> {
  const f = await SafetensorsFile.open(join(ROOT, 'test/fixtures/reference', `${name}.logits.safetensors`));
  const ids = Int32Array.from(await f.readFloat32('input_ids'));
  await f.close();
  return ids.subarray(0, n);
}

describe.each(['tiny-llama', 'tiny-qwen3', 'tiny-gpt2', 'tiny-qwen2'])('block runner %s', (name) => {
  let model: ModelDir;
  let blocks: BlockRunner;
  beforeAll(async () => {
    model = await openModelDir(join(FIXTURES, name));
    blocks = await createBlockRunner(model, { threads: 1 });
  });
  afterAll(async () => {
    await blocks.close();
    await model.checkpoint.close();
  });

  test('embed + all blocks + final norm/head = full-model logits (batch 2)', async () => {
    const seq = 24;
    const ids64 = await referenceIds(name, 2 * seq);
    const ids = Int32Array.from(ids64);
    let h = await blocks.embed(ids, 2, seq);
    for (let l = 0; l < model.config.numLayers; l++) h = (await blocks.run(l, h, 2, seq)).output;
    const viaBlocks = await blocks.logits(h, 2, seq);
    const runner = await createModelRunner(model, { threads: 1 });
    const full = await runner.logits(ids, 2, seq);
    await runner.close();
    expect(maxAbsDiff(viaBlocks, full)).toBeLessThan(1e-4);
  });

  test('taps: shapes, attn_input = RMS/LayerNorm of the input, probs causal rows summing to 1', async () => {
    const { config } = model;
    const seq = 8;
    const ids = await referenceIds(name, seq);
    const x = await blocks.embed(Int32Array.from(ids), 1, seq);
    const all = ['attn_input', 'attn_context', 'mlp_input', 'mlp_hidden', 'query', 'key', 'value', 'probs'] as const;
    const { taps, output } = await blocks.run(0, x, 1, seq, { taps: all });
    const H = config.hiddenSize;
    expect(output.length).toBe(seq * H);
    expect(taps.get('attn_input')!.length).toBe(seq * H);
    expect(taps.get('attn_context')!.length).toBe(seq * config.numHeads * config.headDim);
    expect(taps.get('mlp_hidden')!.length).toBe(seq * config.intermediateSize);
    expect(taps.get('query')!.length).toBe(config.numHeads * seq * config.headDim);
    expect(taps.get('key')!.length).toBe(config.numKvHeads * seq * config.headDim);
    expect(taps.get('value')!.length).toBe(config.numKvHeads * seq * config.headDim);
    const probs = taps.get('probs')!;
    expect(probs.length).toBe(config.numHeads * seq * seq);
    for (let r = 0; r < config.numHeads * seq; r++) {
      const i = r % seq;
      let sum = 0;
      for (let j = 0; j < seq; j++) {
        const p = probs[r * seq + j]!;
        if (j > i) expect(p).toBe(0);
        sum += p;
      }
      expect(Math.abs(sum - 1)).toBeLessThan(1e-5);
    }
    const w = await blocks.loadBlockWeights(0);
    const tap = taps.get('attn_input')!;
    for (let t = 0; t < seq; t++) {
      const row = x.subarray(t * H, (t + 1) * H);
      let mean = 0;
      if (config.normKind === 'layer') for (const v of row) mean += v / H;
      let v2 = 0;
      for (const v of row) v2 += (v - mean) ** 2 / H;
      const inv = 1 / Math.sqrt(v2 + config.normEps);
      for (let j = 0; j < H; j++) {
        const expected = (row[j]! - mean) * inv * w.inputNorm.weight[j]! + (w.inputNorm.bias?.[j] ?? 0);
        expect(Math.abs(tap[t * H + j]! - expected)).toBeLessThan(1e-4 * (1 + Math.abs(expected)));
      }
    }
  });

  test('weight overrides are used (zeroed o_proj and down_proj make the block the identity)', async () => {
    const seq = 6;
    const ids = await referenceIds(name, seq);
    const x = await blocks.embed(Int32Array.from(ids), 1, seq);
    const w = await blocks.loadBlockWeights(1);
    const zeroed = { ...w, linears: { ...w.linears, o_proj: new Float32Array(w.linears.o_proj!.length), down_proj: new Float32Array(w.linears.down_proj!.length) }, biases: { ...w.biases, o_proj: undefined, down_proj: undefined } };
    delete zeroed.biases.o_proj;
    delete zeroed.biases.down_proj;
    const { output } = await blocks.run(1, x, 1, seq, { weights: zeroed });
    expect(maxAbsDiff(output, x)).toBe(0);
    const normal = await blocks.run(1, x, 1, seq);
    expect(maxAbsDiff(normal.output, x)).toBeGreaterThan(1e-3);
  });
});
