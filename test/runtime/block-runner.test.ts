/**
 * The runtime's block engine (src/runtime/block-runner.ts, CPU backend) against the ONNX block runner the
 * quantize pipeline uses today: block outputs and every tap, for a float model, for simulated models with
 * rotations and int / ternary / binary quantizers on linears and attention operands (the model's own recipe),
 * and for caller-supplied weights and recipes (the pipeline's teacher and student passes).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openModelDir, type ModelDir } from '../../src/model/model-dir.js';
import { createBlockRunner, type BlockRunner, type TapName } from '../../src/onnx/block-runner.js';
import type { ActivationQuantizer, LayerRecipe, LinearRole } from '../../src/quant/recipe.js';
import { createRuntimeBlockEngine, type BlockEngine } from '../../src/runtime/block-runner.js';
import { GROUP_OF, makeSimulated } from '../onnx/sim-model.js';
import { relDiff } from '../helpers/reference-math.js';

const ROLES: LinearRole[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const LINEAR_TAPS: TapName[] = ['attn_input', 'attn_context', 'mlp_input', 'mlp_hidden', 'query', 'key', 'value', 'probs'];
const int = (bits: number, clipRatio = 1): ActivationQuantizer => ({ kind: 'int', bits, clipRatio });
const tern = (thresholdRatio: number): ActivationQuantizer => ({ kind: 'ternary', thresholdRatio });

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'bwq-blocks-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});


async function compare(model: ModelDir, layers: number[], tol: number, options: (r: BlockRunner) => Promise<object> = async () => ({})) {
  const onnx = await createBlockRunner(model, { threads: 1 });
  const rt: BlockEngine = await createRuntimeBlockEngine(model, { device: 'cpu' });
  try {
    expect(rt.device).toMatch(/^cpu \(/);
    const batch = 2;
    const seq = 12;
    const ids = Int32Array.from({ length: batch * seq }, (_, i) => (i * 37 + 11) % model.config.vocabSize);
    const hidden = await onnx.embed(ids, batch, seq);
    expect(relDiff(await rt.embed(ids, batch, seq), hidden)).toBe(0);
    for (const layer of layers) {
      const extra = await options(onnx);
      const a = await onnx.run(layer, hidden, batch, seq, { taps: LINEAR_TAPS, ...extra });
      const b = await rt.run(layer, hidden, batch, seq, { taps: LINEAR_TAPS, ...extra });
      expect(relDiff(b.output, a.output)).toBeLessThan(tol);
      for (const t of LINEAR_TAPS) expect(relDiff(b.taps.get(t)!, a.taps.get(t)!), `${t}`).toBeLessThan(tol);
    }
  } finally {
    await onnx.close();
    await rt.close();
  }
}

describe('runtime block engine against the ONNX block runner', () => {
  it('float blocks (sotu-llama, tiny-qwen3 with qk-norm, tiny-qwen2 with biases)', async () => {
    for (const dir of ['models/sotu-llama', 'test/fixtures/models/tiny-qwen3', 'test/fixtures/models/tiny-qwen2']) {
      const model = await openModelDir(dir);
      await compare(model, [0, model.config.numLayers - 1], 2e-5);
      await model.checkpoint.close();
    }
  });

  it('simulated blocks with their own recipes: rotations, int6 / int8 / ternary / binary, attention operands', async () => {
    const recipes: Record<string, (l: number, rot: Parameters<Parameters<typeof makeSimulated>[2]>[1]) => LayerRecipe> = {
      bwla: (_l, rot) => ({
        linears: Object.fromEntries(ROLES.map((r) => [r, { rotation: rot(GROUP_OF[r]), quantizer: int(6, 0.9) }])),
        attention: { query: int(8, 0.95), key: int(8), probs: int(8), value: int(8) },
      }),
      bwta: (l, rot) => ({
        linears: Object.fromEntries(ROLES.map((r) => [r, { rotation: rot(GROUP_OF[r]), quantizer: tern(0.7) }])),
        attention: { query: tern(0.7), key: l === 0 ? { kind: 'binary' } : tern(0.6), probs: tern(1), value: tern(0.7) },
      }),
    };
    for (const [label, recipe] of Object.entries(recipes)) {
      const dir = join(tmp, `llama-${label}`);
      await makeSimulated('test/fixtures/models/tiny-llama', dir, recipe);
      const model = await openModelDir(dir);
      // quantizers are discontinuous: a float-rounding difference at a threshold moves one code (docs/NATIVE_FORWARD.md)
      await compare(model, [0, 1], 2e-3);
      await model.checkpoint.close();
    }
  });

  it('caller-supplied weights and recipe (the student pass), and the float teacher (recipe without quantizers)', async () => {
    const model = await openModelDir('test/fixtures/models/tiny-llama');
    const student: LayerRecipe = {
      linears: Object.fromEntries(ROLES.map((r) => [r, { quantizer: r === 'down_proj' ? int(8) : int(6) }])),
    };
    await compare(model, [1], 2e-3, async (onnx) => {
      const w = await onnx.loadBlockWeights(1);
      for (const r of ROLES) w.linears[r] = w.linears[r]!.map((x) => Math.sign(x) * 0.05);
      return { weights: w, recipe: student };
    });
    await compare(model, [0], 2e-5, async () => ({ recipe: { linears: {} } }));
    await model.checkpoint.close();
  });
});
