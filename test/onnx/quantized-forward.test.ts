/**
 * Whole simulated-quantized models (rotations fused, int / ternary / binary activation
 * quantizers on every linear input and on Q, K, P, V) through the ONNX graph vs an independent
 * implementation of the recipe semantics: the native runtime running the simulated model
 * (src/runtime/load.ts simulatedModelSource, CPU backend).
 *
 * Caveat: an activation that lies within float32 rounding of a quantization tie (|x/s − k − ½| ≈
 * 1e-7 relative) can round differently in the two implementations, and these random tiny models
 * are chaotic enough that one flipped code moves later logits by ~0.1. The inputs and clip ratios
 * below are free of such near-ties (with query clipRatio 1.0, tiny-qwen3 has one at layer 0,
 * head 3, position 4); the block-level tests in simulated-model.test.ts avoid the issue by
 * feeding the graph's own taps to the JS computation.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openModelDir } from '../../src/model/model-dir.js';
import { createModelRunner } from '../../src/onnx/model-runner.js';
import type { ActivationQuantizer, LayerRecipe, LinearRole } from '../../src/quant/recipe.js';
import { loadRuntimeFromSource } from '../../src/runtime/engine.js';
import { simulatedModelSource } from '../../src/runtime/load.js';
import { GROUP_OF, makeSimulated } from './sim-model.js';

const ROOT = join(import.meta.dirname, '..', '..');
const IDS = Int32Array.from([17, 400, 9, 3000, 12, 77, 1024, 5, 600, 42, 8, 2222, 31, 2048, 90, 3]);
let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'bwq-qfwd-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const ROLES: LinearRole[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const int = (bits: number, clipRatio = 1): ActivationQuantizer => ({ kind: 'int', bits, clipRatio });
const tern = (thresholdRatio: number): ActivationQuantizer => ({ kind: 'ternary', thresholdRatio });

const RECIPES: Record<string, (layer: number, rot: Parameters<Parameters<typeof makeSimulated>[2]>[1]) => LayerRecipe> = {
  bwla: (_l, rot) => ({
    linears: Object.fromEntries(ROLES.map((r) => [r, { rotation: rot(GROUP_OF[r]), quantizer: int(6, 0.9) }])),
    attention: { query: int(8, 0.95), key: int(8), probs: int(8), value: int(8) },
  }),
  bwta: (l, rot) => ({
    linears: Object.fromEntries(ROLES.map((r) => [r, { rotation: rot(GROUP_OF[r]), quantizer: r === 'down_proj' ? tern(1.2) : tern(0.7) }])),
    attention: { query: tern(0.7), key: l === 0 ? { kind: 'binary' } : tern(0.6), probs: tern(1), value: tern(0.7) },
  }),
};

for (const name of ['tiny-llama', 'tiny-qwen2', 'tiny-qwen3']) {
  for (const [label, recipe] of Object.entries(RECIPES)) {
    test(`${name} ${label}: ONNX logits = the runtime's simulated model`, async () => {
      const dir = join(tmp, `${name}-${label}`);
      await makeSimulated(join(ROOT, 'test/fixtures/models', name), dir, recipe);
      const model = await openModelDir(dir);
      const runner = await createModelRunner(model, { threads: 1 });
      const onnx = await runner.logits(IDS, 1, IDS.length);
      const rt = await loadRuntimeFromSource(simulatedModelSource(model), { device: 'cpu' });
      const session = rt.openSession(1, IDS.length);
      const js = session.forward(IDS, IDS.length, 'all');
      session.close();
      rt.close();
      let maxRef = 0;
      let maxDiff = 0;
      for (let i = 0; i < js.length; i++) {
        maxRef = Math.max(maxRef, Math.abs(js[i]!));
        maxDiff = Math.max(maxDiff, Math.abs(js[i]! - onnx[i]!));
      }
      expect(maxDiff).toBeLessThanOrEqual(1e-3 * maxRef);
      // the recipe matters: the float model's logits are far away
      const float = await openModelDir(join(ROOT, 'test/fixtures/models', name));
      const floatRunner = await createModelRunner(float, { threads: 1 });
      const ref = await floatRunner.logits(IDS, 1, IDS.length);
      let far = 0;
      for (let i = 0; i < js.length; i++) far = Math.max(far, Math.abs(ref[i]! - onnx[i]!));
      expect(far).toBeGreaterThan(100 * Math.max(maxDiff, 1e-6));
      for (const r of [runner, floatRunner]) await r.close();
      await model.checkpoint.close();
      await float.checkpoint.close();
    });
  }
}
