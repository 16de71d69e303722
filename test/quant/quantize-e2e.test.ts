/**
 * End-to-end `quantizeModel` on the bundled 4-layer SOTU Llama with a small calibration set
 * (8 windows × 128 tokens), evaluated through B's ModelRunner on the simulated model.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, readdir, rm, mkdir, writeFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { quantizeModel, type QuantizeOptions } from '../../src/pipeline/quantize.js';
import { createProgress } from '../../src/cli/progress.js';
import { openModelDir } from '../../src/model/model-dir.js';
import { createModelRunner } from '../../src/onnx/model-runner.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { unpackSignRows } from '../../src/quant/pack.js';
import { orthogonalityError } from '../../src/linalg/index.js';
import { BwqError } from '../../src/errors.js';
import { parseQuantizeOptions } from '../../src/cli/commands/quantize.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const modelDir = join(root, 'models/sotu-llama');
let work: string;
let testIds: Int32Array;

function options(outDir: string, method: QuantizeOptions['method'], aBits: QuantizeOptions['aBits'], extra: Partial<QuantizeOptions> = {}): QuantizeOptions {
  return {
    modelDir, outDir, method, aBits, calibFile: join(root, 'calibration/sotu-calib.txt'),
    nsamples: 8, seqlen: 128, seqlenExplicit: true, rank: 8, seed: 0, force: false, statTokens: 192, ...extra,
  };
}

async function perplexity(dir: string): Promise<number> {
  const model = await openModelDir(dir);
  const runner = await createModelRunner(model);
  try {
    const { sum, count } = await runner.nll(testIds.subarray(0, 4 * 128), 4, 128);
    return Math.exp(sum / count);
  } finally {
    await runner.close();
    await model.checkpoint.close();
  }
}

const quiet = createProgress({ quiet: true });
const ppl: Record<string, number> = {};

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'bwq-quant-'));
  const tok = await loadTokenizer(modelDir);
  testIds = tok.encode(await readFile(join(root, 'data/sotu-test.txt'), 'utf8'));
  ppl['float'] = await perplexity(modelDir);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('bwq quantize end to end (sotu-llama, 8×128 calibration tokens)', () => {
  it('bwla W1A6: writes a valid simulated model, consistent packed weights and a finite perplexity', async () => {
    const out = join(work, 'bwla');
    const summary = await quantizeModel(options(out, 'bwla', 6), quiet);
    expect(summary.layers).toHaveLength(4);
    const files = (await readdir(out)).sort();
    expect(files).toEqual(['config.json', 'generation_config.json', 'model.packed.safetensors', 'model.safetensors', 'quantize-report.json', 'tokenizer.json', 'tokenizer_config.json']);
    // no temporaries left beside OUT_DIR
    expect((await readdir(work)).filter((f) => f.includes('.tmp-'))).toEqual([]);

    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    expect(config.dtype).toBe('bfloat16'); // the checkpoint's dtype (issue #15)
    const qc = config.quantization_config;
    expect(qc.quant_method).toBe('bwq');
    expect(qc.method).toBe('bwla');
    expect(qc.a_bits).toBe(6);
    expect(qc.layers).toHaveLength(4);
    const q0 = qc.layers[0].linears.q_proj;
    expect(q0.quantizer.kind).toBe('int');
    expect(q0.quantizer.bits).toBe(6);
    expect(q0.rotation).toEqual({ kind: 'kronecker', r1: 'model.layers.0.attn_in.okt_r1', r2: 'model.layers.0.attn_in.okt_r2' });
    expect(qc.layers[0].linears.k_proj.rotation).toEqual(q0.rotation);
    expect(qc.layers[0].linears.down_proj.rotation.r1).toBe('model.layers.0.mlp_out.okt_r1');

    // packed ↔ simulated: diag(wscale)·unpack(qweight) + lr_a·lr_b equals the simulated weight, rounded to bf16
    // (the checkpoint's dtype: relative error ≤ 2⁻⁸, half a bf16 ulp)
    const sim = await SafetensorsFile.open(join(out, 'model.safetensors'));
    const packed = await SafetensorsFile.open(join(out, 'model.packed.safetensors'));
    try {
      expect(packed.metadata['format']).toBe('bwq-packed-v1');
      const prefix = 'model.layers.1.mlp.down_proj';
      const w = await sim.readFloat32(`${prefix}.weight`);
      const [rows, cols] = sim.info(`${prefix}.weight`).shape as [number, number];
      expect([rows, cols]).toEqual([256, 768]);
      expect(packed.info(`${prefix}.qweight`).shape).toEqual([256, 24]);
      expect(packed.info(`${prefix}.qweight`).dtype).toBe('U32');
      const qbytes = await packed.readBytes(`${prefix}.qweight`);
      const signs = unpackSignRows(new Uint32Array(qbytes.slice().buffer), rows, cols);
      const scale = await packed.readFloat32(`${prefix}.wscale`);
      const rank = packed.info(`${prefix}.lr_a`).shape[1]!;
      expect(rank).toBeGreaterThan(0);
      expect(rank).toBeLessThanOrEqual(8);
      const la = await packed.readFloat32(`${prefix}.lr_a`);
      const lb = await packed.readFloat32(`${prefix}.lr_b`);
      let worst = 0;
      for (let r = 0; r < rows; r++)
        for (let c = 0; c < cols; c++) {
          let v = scale[r]! * signs[r * cols + c]!;
          for (let k = 0; k < rank; k++) v += la[r * rank + k]! * lb[k * cols + c]!;
          worst = Math.max(worst, Math.abs(v - w[r * cols + c]!) / Math.abs(v));
        }
      expect(sim.info(`${prefix}.weight`).dtype).toBe('BF16');
      expect(worst).toBeLessThanOrEqual(2 ** -8 * (1 + 1e-4));
      // rotations exist in both files, are orthogonal and identical
      for (const g of ['attn_in', 'attn_out', 'mlp_in', 'mlp_out']) {
        for (const f of ['okt_r1', 'okt_r2']) {
          const name = `model.layers.2.${g}.${f}`;
          const r = await sim.readFloat32(name);
          const n = sim.info(name).shape[0]!;
          expect(orthogonalityError(r, n)).toBeLessThan(1e-5);
          expect(Array.from(await packed.readFloat32(name))).toEqual(Array.from(r));
        }
      }
      // non-quantized tensors keep the checkpoint's dtype and bytes (sotu-llama is bf16)
      expect(packed.info('model.embed_tokens.weight').dtype).toBe('BF16');
      const input = await openModelDir('models/sotu-llama');
      expect(Buffer.from(await packed.readBytes('model.embed_tokens.weight'))
        .equals(Buffer.from(await input.checkpoint.readBytes('model.embed_tokens.weight')))).toBe(true);
      await input.checkpoint.close();
      expect(packed.has('model.layers.0.self_attn.q_proj.weight')).toBe(false);
    } finally {
      await sim.close();
      await packed.close();
    }
    const report = JSON.parse(await readFile(join(out, 'quantize-report.json'), 'utf8'));
    expect(report.layers[0].linears.q_proj.weightRelError).toBeLessThan(report.layers[0].linears.q_proj.plainBinarizationRelError);

    ppl['bwla'] = await perplexity(out);
    expect(Number.isFinite(ppl['bwla'])).toBe(true);
    expect(ppl['bwla']).toBeGreaterThan(ppl['float']!);
  });

  it('rtn W1A6 is worse than bwla W1A6', async () => {
    const out = join(work, 'rtn');
    await quantizeModel(options(out, 'rtn', 6), quiet);
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    expect(config.quantization_config.layers[0].linears.q_proj).toEqual({ quantizer: { kind: 'int', bits: 6, clipRatio: 1 } });
    // rtn weights do not depend on the statistics: the per-group sequential mode gives the same files
    const out2 = join(work, 'rtn-groups');
    await quantizeModel(options(out2, 'rtn', 6, { sequential: 'groups' }), quiet);
    const cfg2 = JSON.parse(await readFile(join(out2, 'config.json'), 'utf8'));
    expect(cfg2.quantization_config.layers).toEqual(config.quantization_config.layers);
    expect(cfg2.quantization_config.settings.sequential).toBe('groups');
    expect(Buffer.compare(await readFile(join(out, 'model.packed.safetensors')), await readFile(join(out2, 'model.packed.safetensors')))).toBe(0);
    ppl['rtn'] = await perplexity(out);
    expect(Number.isFinite(ppl['rtn'])).toBe(true);
    expect(ppl['bwla']).toBeDefined();
    expect(ppl['bwla']!).toBeLessThan(ppl['rtn']!);
  });

  it('bwta (binary weights, ternary activations incl. attention operands) gives a finite perplexity', async () => {
    const out = join(work, 'bwta');
    await quantizeModel(options(out, 'bwta', 'ternary'), quiet);
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    const l0 = config.quantization_config.layers[0];
    expect(l0.linears.q_proj.quantizer.kind).toBe('ternary');
    expect(l0.linears.q_proj.rotation).toBeUndefined();
    for (const op of ['query', 'key', 'value', 'probs']) expect(l0.attention[op].kind).toBe('ternary');
    ppl['bwta'] = await perplexity(out);
    expect(Number.isFinite(ppl['bwta'])).toBe(true);
    expect(ppl['bwta']).toBeGreaterThan(ppl['float']!);
  });

  it('failures leave no output directory', async () => {
    const out = join(work, 'fail');
    await expect(quantizeModel(options(out, 'bwla', 6, { calibFile: join(work, 'missing.txt') }), quiet)).rejects.toThrow(BwqError);
    await expect(quantizeModel(options(out, 'bwla', 6, { modelDir: join(root, 'test/fixtures/models/tiny-gpt2') }), quiet)).rejects.toThrow(/unsupported for quantization/);
    await expect(quantizeModel(options(modelDir, 'rtn', 6, { force: true }), quiet)).rejects.toThrow(/input model directory/);
    await expect(stat(out)).rejects.toThrow();
    expect((await readdir(work)).filter((f) => f.includes('.tmp-'))).toEqual([]);
    // an existing OUT_DIR is kept without --force
    await mkdir(out);
    await writeFile(join(out, 'keep.txt'), 'x');
    await expect(quantizeModel(options(out, 'rtn', 6), quiet)).rejects.toThrow(/already exists/);
    expect(await readdir(out)).toEqual(['keep.txt']);
  });
});

describe('quantize option parsing', () => {
  it('applies the defaults and rejects bad combinations', () => {
    const o = parseQuantizeOptions(undefined, { output: 'x', method: 'bwla' });
    expect(o.modelDir).toBe(join(root, 'models/sotu-llama'));
    expect(o.calibFile).toBe(join(root, 'calibration/sotu-calib.txt'));
    expect(o.aBits).toBe(6);
    expect(o.seqlenExplicit).toBe(false);
    expect(parseQuantizeOptions(undefined, { output: 'x', method: 'bwta' }).aBits).toBe('ternary');
    expect(parseQuantizeOptions(undefined, { output: 'x', method: 'rtn', aBits: '16' }).aBits).toBe(16);
    expect(() => parseQuantizeOptions(undefined, { output: 'x', method: 'bwta', aBits: '6' })).toThrow(/ternary/);
    expect(() => parseQuantizeOptions(undefined, { output: 'x', method: 'bwla', wBits: '2' })).toThrow(/--w-bits must be 1/);
    expect(() => parseQuantizeOptions(undefined, { output: 'x', method: 'gptq' })).toThrow(/--method/);
    expect(() => parseQuantizeOptions(undefined, { method: 'bwla' })).toThrow(/--output/);
    expect(() => parseQuantizeOptions(undefined, { output: 'x', method: 'bwla', nsamples: '0' })).toThrow(/--nsamples/);
  });
});
