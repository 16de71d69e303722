/**
 * The reconstruction student on the architectures the loader accepts, against the ONNX block graph
 * (src/onnx/block-runner.ts, the simulated model's semantics): on block 0 of the tiny Qwen3 (q_norm / k_norm,
 * GQA), Llama-3 (llama3 rope scaling, GQA) and Qwen2 (q/k/v biases, linear rope scaling) fixtures written by
 * transformers, the student's forward at its final stage equals the ONNX block run on the student's simulated
 * weights with the recipe it freezes to; and `bwq quantize --reconstruct` runs on each and lowers block 0's loss.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng } from '../../../src/linalg/random.js';
import { loadBlockWeights } from '../../../src/model/block-weights.js';
import { openModelDir } from '../../../src/model/model-dir.js';
import { ropeTables } from '../../../src/native/rope.js';
import { createBlockRunner } from '../../../src/onnx/block-runner.js';
import { inverseFrequencies } from '../../../src/onnx/rope.js';
import { quantizeModel } from '../../../src/pipeline/quantize.js';
import { DEFAULT_RECONSTRUCT } from '../../../src/pipeline/reconstruct.js';
import { createProgress } from '../../../src/cli/progress.js';
import type { ActivationQuantizer, AttentionRecipe, LayerRecipe, LinearRole } from '../../../src/quant/recipe.js';
import type { SiteName } from '../../../src/quant/reconstruct/block.js';
import { jsGemm } from '../../../src/quant/reconstruct/gemm.js';
import { BLOCK_LINEAR_ROLES, createStudent, freezeStudent, type StudentLinear } from '../../../src/quant/reconstruct/student.js';
import { tempDirs } from '../../helpers/temp-dirs.js';
import { relDiff } from '../../helpers/reference-math.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const fixture = (name: string): string => join(root, 'test/fixtures/models', name);
const temp = tempDirs();

const FINAL = { stage: Number.MAX_SAFE_INTEGER, lambda: 1 };
const SITE_OF_ROLE: Record<LinearRole, SiteName> = {
  q_proj: 'attn_in', k_proj: 'attn_in', v_proj: 'attn_in', o_proj: 'attn_out', gate_proj: 'mlp_in', up_proj: 'mlp_in', down_proj: 'mlp_out',
};

/** A calibrated-looking starting point: signs of W, mean-|W| row scales, a small random rank-2 term. */
function studentLinear(w: Float32Array, rows: number, cols: number, bias: Float32Array | undefined, rng: Rng): StudentLinear {
  const rank = 2;
  const signs = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  for (let n = 0; n < rows; n++) {
    let s = 0;
    for (let k = 0; k < cols; k++) {
      signs[n * cols + k] = w[n * cols + k]! >= 0 ? 1 : -1;
      s += Math.abs(w[n * cols + k]!);
    }
    scales[n] = s / cols;
  }
  const lrA = Float32Array.from({ length: rows * rank }, () => 0.05 * rng.normal());
  const lrB = Float32Array.from({ length: rank * cols }, () => 0.05 * rng.normal());
  return { rows, cols, target: w, signs, scales, rank, lrA, lrB, bias };
}

const ARCHS = [
  ['tiny-qwen3', 'qwen3: q_norm / k_norm'],
  ['tiny-llama', 'llama: llama3 rope scaling'],
  ['tiny-qwen2', 'qwen2: q/k/v biases, linear rope scaling'],
] as const;

const int8: ActivationQuantizer = { kind: 'int', bits: 8, clipRatio: 0.9 };
const none: ActivationQuantizer = { kind: 'none' };
const ternary: ActivationQuantizer = { kind: 'ternary', thresholdRatio: 0.7 };
// measured max |student − ONNX| / max |ONNX|: 3–5e-7 for all three recipes on all three models (float32 summation
// orders). The quantized recipes get more room: a code could flip where the engines round a product differently.
const RECIPES: ReadonlyArray<readonly [string, ActivationQuantizer, AttentionRecipe | undefined, number]> = [
  ['float activations', none, undefined, 1e-5],
  ['int8 activations and attention operands', int8, { query: int8, key: int8, value: int8, probs: { kind: 'int', bits: 8, clipRatio: 1 } }, 1e-3],
  ['BWTA: ternary activations and attention operands', ternary, { query: ternary, key: ternary, value: ternary, probs: ternary }, 1e-3],
];

describe('reconstruction student = ONNX simulated block (block 0 of the tiny fixtures)', () => {
  for (const [name, what] of ARCHS) {
    it.each(RECIPES)(`${name} (${what}), %s`, async (_label, quantizer, attention, tol) => {
      const model = await openModelDir(fixture(name));
      const c = model.config;
      const weights = await loadBlockWeights(model, 0);
      if (name === 'tiny-qwen3') expect(weights.qNorm).toBeDefined();
      if (name === 'tiny-qwen2') expect(weights.biases.q_proj).toBeDefined();
      if (name === 'tiny-llama') expect(c.rope?.type).toBe('llama3');
      const rng = new Rng(3);
      const linears = {} as Record<LinearRole, StudentLinear>;
      for (const role of BLOCK_LINEAR_ROLES) {
        const w = weights.linears[role]!;
        const cols = role === 'o_proj' ? c.numHeads * c.headDim : role === 'down_proj' ? c.intermediateSize : c.hiddenSize;
        linears[role] = studentLinear(w, w.length / cols, cols, weights.biases[role], rng);
      }
      const inv = inverseFrequencies(c);
      const student = createStudent({
        dims: {
          hidden: c.hiddenSize, intermediate: c.intermediateSize, numHeads: c.numHeads, numKvHeads: c.numKvHeads,
          headDim: c.headDim, normEps: c.normEps, slidingWindow: c.slidingWindow,
        },
        ropeFor: (seq) => ropeTables(inv, seq), inputNorm: weights.inputNorm.weight, postNorm: weights.postAttentionNorm.weight,
        qNorm: weights.qNorm, kNorm: weights.kNorm, linears,
        quantizers: { attn_in: quantizer, attn_out: quantizer, mlp_in: quantizer, mlp_out: quantizer }, attention, rotations: {},
      }, { levels: [], align: false });
      const frozen = freezeStudent(student);
      const batch = 2, seq = 24;
      const runner = await createBlockRunner(model, { threads: 1 });
      try {
        const ids = Int32Array.from({ length: batch * seq }, () => rng.int(c.vocabSize));
        const hidden = await runner.embed(ids, batch, seq);
        const mine = (await student.forward(hidden, batch, seq, FINAL, jsGemm)).out;
        const recipe: LayerRecipe = {
          linears: Object.fromEntries(BLOCK_LINEAR_ROLES.map((r) => [r, { quantizer: frozen.quantizers[SITE_OF_ROLE[r]] }])),
          ...(frozen.attention === undefined ? {} : { attention: frozen.attention }),
        };
        const simulated = Object.fromEntries(BLOCK_LINEAR_ROLES.map((r) => [r, frozen.linears[r].simulated])) as Record<LinearRole, Float32Array>;
        const onnx = (await runner.run(0, hidden, batch, seq, { weights: { ...weights, linears: simulated }, recipe })).output;
        expect(relDiff(mine, onnx)).toBeLessThan(tol);
        // the block is not the identity: the attention and MLP branches moved the hidden states
        expect(relDiff(hidden, onnx)).toBeGreaterThan(1e-2);
      } finally {
        await runner.close();
        await model.checkpoint.close();
      }
    }, 120_000);
  }
});

describe('bwq quantize --reconstruct on each architecture', () => {
  for (const [name, what] of ARCHS) {
    it(`${name} (${what}): BWTA reconstruction runs and lowers block 0's output MSE`, async () => {
      const dir = temp();
      const summary = await quantizeModel({
        modelDir: fixture(name), outDir: join(dir, 'out'), method: 'bwta', aBits: 'ternary',
        calibFile: join(root, 'calibration/sotu-calib.txt'), nsamples: 4, seqlen: 64, seqlenExplicit: true, rank: 4, seed: 0,
        force: false, statTokens: 128, device: 'cpu', reconstruct: { ...DEFAULT_RECONSTRUCT, iterations: 30, evalWindows: 4 },
      }, createProgress({ quiet: true }));
      expect(summary.layers).toHaveLength(2);
      for (const layer of summary.layers) {
        const r = layer.reconstruction!;
        expect(r.lossAfter).toBeLessThan(r.lossBefore);
        expect(r.kept).toBe(true);
      }
    }, 600_000);
  }
});
