/**
 * The attention probs quantizer over each query's unmasked keys (issue #16, AttentionRecipe.probsRow 'unmasked'):
 *  - every implementation against the numpy reference test/fixtures/quant/attention_probs_reference.safetensors
 *    (make_attention_probs_reference.py; causal rows of 1 … 24 keys, GQA, a sliding window, and the pre-#16 'window'
 *    rows): the row quantizer, the TypeScript reference attention of the packed forward, the reconstruction's
 *    attention; the ONNX graph and the native CPU runtime through block runs against that reference attention;
 *  - a row no longer depends on the window: the same prefix at S and 2S gives the same quantized rows (and, with
 *    the pre-#16 rows, it does not), in every implementation and in the calibration search;
 *  - the recipe field: parsed, defaulted to 'window' for older recipes, refused when malformed.
 */
import { describe, expect, it } from 'vitest';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { quantizeProbRows } from '../../src/quant/attention-probs.js';
import { searchAttentionTernary } from '../../src/quant/act-calib.js';
import type { ActivationQuantizer, AttentionRecipe, LayerRecipe, ProbsRow } from '../../src/quant/recipe.js';
import { causalAttention } from '../../src/native/attention.js';
import { createReferenceKernels } from '../../src/native/reference-kernels.js';
import { createFloatGemm } from '../../src/native/float-gemm.js';
import { attentionForward, type AttentionSites } from '../../src/quant/reconstruct/attention.js';
import { QuantSite } from '../../src/quant/reconstruct/quant-site.js';
import { jsGemm } from '../../src/quant/reconstruct/gemm.js';
import { parseQuantizationConfig } from '../../src/model/quantization-config.js';
import { openModelDir } from '../../src/model/model-dir.js';
import { createBlockRunner } from '../../src/onnx/block-runner.js';
import { createRuntimeBlockEngine } from '../../src/runtime/block-runner.js';
import { Rng } from '../../src/linalg/random.js';
import { tempDirs } from '../helpers/temp-dirs.js';
import { relDiff } from '../helpers/reference-math.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/quant/attention_probs_reference.safetensors', import.meta.url));
const S = 24;
const NH = 4;
const NKV = 2;
const HD = 8;
const FINAL = { stage: Number.MAX_SAFE_INTEGER, lambda: 1 };
const temp = tempDirs();

const ter = (thresholdRatio: number): ActivationQuantizer => ({ kind: 'ternary', thresholdRatio });
const none: ActivationQuantizer = { kind: 'none' };
/** The three fixture cases: operand thresholds, probs threshold, sliding window, probs row. */
const CASES = {
  a: { qkv: none, probs: ter(1), window: undefined, row: 'unmasked' as ProbsRow },
  b: { qkv: ter(0.7), probs: ter(1.5), window: 5, row: 'unmasked' as ProbsRow },
  w: { qkv: none, probs: ter(1), window: undefined, row: 'window' as ProbsRow },
} as const;
type CaseName = keyof typeof CASES;

async function loadFixture(): Promise<Map<string, Float32Array>> {
  const file = await SafetensorsFile.open(FIXTURE);
  const out = new Map<string, Float32Array>();
  for (const name of file.names()) out.set(name, await file.readFloat32(name));
  await file.close();
  return out;
}
const fixture = await loadFixture();
const ref = (name: string): Float32Array => {
  const t = fixture.get(name);
  if (t === undefined) throw new Error(`${FIXTURE} lacks "${name}": regenerate it with make_attention_probs_reference.py`);
  return t;
};

function recipeOf(c: CaseName): AttentionRecipe {
  const k = CASES[c];
  return { query: k.qkv, key: k.qkv, value: k.qkv, probs: k.probs, probsRow: k.row };
}

/** Rows [0, n) of token-major x [S, width]. */
const prefix = (x: Float32Array, n: number, width: number): Float32Array => x.slice(0, n * width);

function sites(c: CaseName): AttentionSites {
  const k = CASES[c];
  const site = (name: string, q: ActivationQuantizer): QuantSite => q.kind === 'ternary'
    ? new QuantSite(name, [{ kind: 'ternary' }], q.thresholdRatio, false)
    : new QuantSite(name, [{ kind: 'none' }], 0, false);
  return { query: site('query', k.qkv), key: site('key', k.qkv), value: site('value', k.qkv), probs: site('probs', k.probs), probsRow: k.row };
}

async function tsReference(c: CaseName, seq: number): Promise<Float32Array> {
  return causalAttention(prefix(ref('q'), seq, NH * HD), prefix(ref('k'), seq, NKV * HD), prefix(ref('v'), seq, NKV * HD),
    { seq, numHeads: NH, numKvHeads: NKV, headDim: HD, slidingWindow: CASES[c].window }, recipeOf(c),
    createReferenceKernels(), createFloatGemm('js'));
}

async function reconstruction(c: CaseName, seq: number): Promise<Float32Array> {
  const r = await attentionForward(prefix(ref('q'), seq, NH * HD), prefix(ref('k'), seq, NKV * HD), prefix(ref('v'), seq, NKV * HD), 1,
    { seq, numHeads: NH, numKvHeads: NKV, headDim: HD, slidingWindow: CASES[c].window }, sites(c), FINAL, jsGemm);
  return r.ctx;
}

describe('probs quantizer over the unmasked keys = numpy reference', () => {
  it.each(['a', 'b', 'w'] as CaseName[])('case %s: quantized rows', (c) => {
    const p = ref(`${c}_probs`);
    const out = quantizeProbRows(p, S, CASES[c].probs, CASES[c].row, CASES[c].window);
    const expected = ref(`${c}_probs_hat`);
    expect(relDiff(out, expected)).toBeLessThan(1e-6);
    // the cases keep some and drop some entries of every length of row
    let kept = 0;
    for (const v of expected) if (v > 0) kept++;
    expect(kept).toBeGreaterThan(50);
    expect(kept).toBeLessThan(expected.length / 4);
  });

  it('differs from the whole-window rows (the reference cases a and w differ)', () => {
    expect(relDiff(ref('a_probs_hat'), ref('w_probs_hat'))).toBeGreaterThan(0.1);
    expect(relDiff(ref('a_context'), ref('w_context'))).toBeGreaterThan(0.1);
  });

  it('row 0 of a query that sees one key: kept iff t < 1', () => {
    const p = new Float32Array(4 * 4);
    p[0] = 1; // query 0
    p[4] = 0.5; p[5] = 0.5; // query 1: uniform
    expect(quantizeProbRows(p, 4, ter(0.9), 'unmasked', undefined)[0]).toBe(1);
    expect(quantizeProbRows(p, 4, ter(1), 'unmasked', undefined)[0]).toBe(0);
    // whole window: Δ = 0.9 · 1/4, so query 1's halves are kept as well
    expect(quantizeProbRows(p, 4, ter(0.9), 'window', undefined)[4]).toBe(0.5);
    expect(quantizeProbRows(p, 4, ter(0.9), 'unmasked', undefined)[4]).toBe(0.5);
    expect(quantizeProbRows(p, 4, ter(1), 'unmasked', undefined)[4]).toBe(0);
  });
});

describe('attention implementations = numpy reference (rows of 1 … 24 keys, GQA, sliding window)', () => {
  it.each(['a', 'b', 'w'] as CaseName[])('case %s: TypeScript reference of the packed forward (src/native/attention.ts)', async (c) => {
    expect(relDiff(await tsReference(c, S), ref(`${c}_context`))).toBeLessThan(1e-5);
  });

  it.each(['a', 'b', 'w'] as CaseName[])('case %s: reconstruction attention forward', async (c) => {
    expect(relDiff(await reconstruction(c, S), ref(`${c}_context`))).toBeLessThan(1e-5);
  });
});

describe('a query row does not depend on the window length', () => {
  const half = S / 2;
  const rowsEqual = (short: Float32Array, long: Float32Array): number => relDiff(short, long.subarray(0, short.length));

  it.each(['a', 'b'] as CaseName[])('case %s: TypeScript reference and reconstruction, prefix of S/2 in windows S/2 and S', async (c) => {
    expect(rowsEqual(await tsReference(c, half), await tsReference(c, S))).toBe(0);
    expect(rowsEqual(await reconstruction(c, half), await reconstruction(c, S))).toBe(0);
  });

  it('pre-#16 rows (whole window) do depend on it', async () => {
    expect(rowsEqual(await tsReference('w', half), await tsReference('w', S))).toBeGreaterThan(0.05);
    expect(rowsEqual(await reconstruction('w', half), await reconstruction('w', S))).toBeGreaterThan(0.05);
  });

  it('calibration search: the same sampled rows in windows S/2 and S give the same thresholds and errors', async () => {
    const headMajor = (x: Float32Array, heads: number, seq: number): Float32Array => {
      const out = new Float32Array(heads * seq * HD);
      for (let h = 0; h < heads; h++) for (let t = 0; t < seq; t++) for (let d = 0; d < HD; d++) out[(h * seq + t) * HD + d] = x[(t * heads + h) * HD + d]!;
      return out;
    };
    const probs = ref('a_probs');
    const sample = (seq: number) => {
      const p = new Float32Array(NH * seq * seq);
      for (let h = 0; h < NH; h++) for (let i = 0; i < seq; i++) p.set(probs.subarray((h * S + i) * S, (h * S + i) * S + seq), (h * seq + i) * seq);
      return {
        query: headMajor(ref('q'), NH, seq), key: headMajor(ref('k'), NKV, seq), value: headMajor(ref('v'), NKV, seq), probs: p,
        heads: NH, kvHeads: NKV, seq, headDim: HD, slidingWindow: undefined, rows: Int32Array.of(0, 1, 3, 6, 8, 11),
      };
    };
    // slice the reference probabilities to the first `seq` positions: softmax rows i < seq are the same
    const grid = [0, 0.5, 1, 2, 4, 8];
    const short = await searchAttentionTernary(sample(half), undefined, undefined, grid);
    const long = await searchAttentionTernary(sample(S), undefined, undefined, grid);
    expect(long.probsRow).toBe('unmasked');
    expect(long.probs).toEqual(short.probs);
    expect(long.value).toEqual(short.value);
    expect(long.contextRelError).toBeCloseTo(short.contextRelError, 12);
    expect(long.contextRelError).toBeGreaterThan(0);
  });
});

/** [heads, seq, hd] → [seq, heads·hd] */
function transposeHeads(x: Float32Array, heads: number, seq: number, hd: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let h = 0; h < heads; h++) for (let t = 0; t < seq; t++) out.set(x.subarray((h * seq + t) * hd, (h * seq + t + 1) * hd), (t * heads + h) * hd);
  return out;
}

/** The tiny-mistral fixture with a sliding window of 16 (a copy in a temporary directory). */
function slidingMistral(): string {
  const dir = temp('bwq-probs-row-');
  cpSync(fileURLToPath(new URL('../fixtures/models/tiny-mistral', import.meta.url)), dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  cfg['sliding_window'] = 16;
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  return dir;
}

describe('ONNX graph and native CPU runtime: block runs on tiny-mistral (sliding window 16) and tiny-llama', () => {
  const MODELS = [['tiny-mistral', 40], ['tiny-llama', 24]] as const;
  const attention = (row: ProbsRow): AttentionRecipe => ({ query: ter(0.7), key: ter(0.7), value: ter(0.7), probs: ter(1.5), probsRow: row });
  it.each(MODELS)('%s: attn_context = the reference attention of the taps; rows independent of the window', async (name, seq) => {
    const model = await openModelDir(name === 'tiny-mistral' ? slidingMistral() : fileURLToPath(new URL(`../fixtures/models/${name}`, import.meta.url)));
    const c = model.config;
    if (name === 'tiny-mistral') expect(c.slidingWindow).toBe(16);
    const onnx = await createBlockRunner(model, { threads: 1 });
    const native = await createRuntimeBlockEngine(model, { device: 'cpu' });
    try {
      const rng = new Rng(16);
      const ids = Int32Array.from({ length: seq }, () => rng.int(c.vocabSize));
      const hidden = await onnx.embed(ids, 1, seq);
      const half = seq / 2;
      for (const row of ['unmasked', 'window'] as ProbsRow[]) {
        const recipe: LayerRecipe = { linears: {}, attention: attention(row) };
        const taps = ['query', 'key', 'value', 'attn_context'] as const;
        for (const [engine, runner] of [['onnx', onnx], ['cpu runtime', native]] as const) {
          const full = await runner.run(0, hidden, 1, seq, { recipe, taps: [...taps] });
          // both engines tap Q/K/V head-major [heads, seq, hd]; the reference takes them token-major [seq, heads·hd]
          const tokenMajor = (x: Float32Array, heads: number): Float32Array => transposeHeads(x, heads, seq, c.headDim);
          const expected = await causalAttention(tokenMajor(full.taps.get('query')!, c.numHeads), tokenMajor(full.taps.get('key')!, c.numKvHeads),
            tokenMajor(full.taps.get('value')!, c.numKvHeads),
            { seq, numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: c.headDim, slidingWindow: c.slidingWindow },
            attention(row), createReferenceKernels(), createFloatGemm('js'));
          expect(relDiff(full.taps.get('attn_context')!, expected), `${engine} ${row}`).toBeLessThan(2e-5);
          const short = await runner.run(0, hidden.subarray(0, half * c.hiddenSize), 1, half, { recipe, taps: ['attn_context'] });
          const d = relDiff(short.taps.get('attn_context')!, full.taps.get('attn_context')!.subarray(0, half * c.numHeads * c.headDim));
          if (row === 'unmasked') expect(d, `${engine}: rows of the prefix at ${half} and ${seq}`).toBeLessThan(1e-6);
          else expect(d, `${engine}: pre-#16 rows at ${half} and ${seq}`).toBeGreaterThan(1e-2);
        }
      }
    } finally {
      await onnx.close();
      await native.close();
      await model.checkpoint.close();
    }
  });
});

describe('recipe field probsRow', () => {
  const config = (attention: Record<string, unknown>): unknown => ({
    quant_method: 'bwq', bwq_version: '0.1.0', method: 'bwta', w_bits: 1, a_bits: 'ternary', packed_weights: 'model.packed.safetensors',
    layers: [{ linears: {}, attention: { query: ter(0.7), key: ter(0.7), value: ter(0.7), probs: ter(2), ...attention } }],
  });
  const ctx = { numLayers: 1, architecture: 'llama', file: 'config.json' };
  it('is parsed; absent means the pre-#16 whole-window rows', () => {
    expect(parseQuantizationConfig(config({ probsRow: 'unmasked' }), ctx).layers[0]!.attention!.probsRow).toBe('unmasked');
    expect(parseQuantizationConfig(config({}), ctx).layers[0]!.attention!.probsRow).toBe('window');
  });
  it('refuses unknown values and a binary probs quantizer over the unmasked keys', () => {
    expect(() => parseQuantizationConfig(config({ probsRow: 'all' }), ctx)).toThrow(/layers\[0\]: attention\.probsRow must be "unmasked" or "window" \(got "all"\)/);
    expect(() => parseQuantizationConfig(config({ probsRow: 'unmasked', probs: { kind: 'binary' } }), ctx)).toThrow(/binary quantizer is not defined over the unmasked keys/);
    expect(parseQuantizationConfig(config({ probs: { kind: 'binary' } }), ctx).layers[0]!.attention!.probs.kind).toBe('binary');
  });
});
