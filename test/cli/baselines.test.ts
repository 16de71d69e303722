/**
 * `bwq quantize --method billm | arb` (the peer baselines, docs/ALGORITHMS.md §BiLLM, §ARB-LLM) end to end on the
 * tiny-llama fixture: the simulated model only (no packed file), the recipe and report, `eval` through the
 * simulated model, a repeat from the report, and the one-line refusals (ternary activations, --no-simulated,
 * --reconstruct, --scale-refit, `eval --backend native`, a packed_weights entry in the config).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCli } from '../helpers/run-cli.js';
import { tempDirs } from '../helpers/temp-dirs.js';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { INT_CLIP_GRID } from '../../src/quant/act-calib.js';
import { parseQuantizationConfig } from '../../src/model/quantization-config.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const TINY = join(ROOT, 'test/fixtures/models/tiny-llama'); // hidden 64, intermediate 128, 2 layers
const CALIB = ['--nsamples', '4', '--seqlen', '32', '--stat-tokens', '96'];
const makeDir = tempDirs();
let work: string;

const ROLES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
const SIMULATED_ONLY_FILES = ['config.json', 'generation_config.json', 'model.safetensors', 'quantize-report.json', 'tokenizer.json', 'tokenizer_config.json'];

async function quantize(method: string, aBits: string, name: string): Promise<string> {
  const out = join(work, name);
  const r = await runCli('quantize', TINY, '-o', out, '--method', method, '--a-bits', aBits, ...CALIB, '--json');
  if (r.code !== 0) throw new Error(`quantize --method ${method} failed: ${r.stderr}`);
  return out;
}

async function linearWeight(dir: string, layer: number, role: string): Promise<{ data: Float32Array; rows: number; cols: number }> {
  const f = await SafetensorsFile.open(join(dir, 'model.safetensors'));
  try {
    const name = `model.layers.${layer}.${role === 'q_proj' || role === 'k_proj' || role === 'v_proj' || role === 'o_proj' ? 'self_attn' : 'mlp'}.${role}.weight`;
    const [rows, cols] = f.info(name).shape as [number, number];
    return { data: await f.readFloat32(name), rows, cols };
  } finally {
    await f.close();
  }
}

beforeAll(() => {
  work = makeDir('bwq-baselines-');
});

describe('bwq quantize --method billm | arb on tiny-llama', () => {
  let billm: string;
  let arb: string;

  beforeAll(async () => {
    billm = await quantize('billm', '6', 'billm');
    arb = await quantize('arb', '6', 'arb');
  });

  it('writes the simulated model only, with int6 per-token activation quantizers and no rotations', async () => {
    for (const [dir, method] of [[billm, 'billm'], [arb, 'arb']] as const) {
      expect((await readdir(dir)).sort()).toEqual(SIMULATED_ONLY_FILES);
      const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
      const qc = config.quantization_config;
      expect(qc.method).toBe(method);
      expect(qc.a_bits).toBe(6);
      expect('packed_weights' in qc).toBe(false);
      expect(qc.settings.billm_block_size).toBe(128);
      expect(qc.settings.hessian_percdamp).toBe(0.01);
      if (method === 'arb') expect([qc.settings.arb_variant, qc.settings.arb_iterations]).toEqual(['ARB-LLM_RC', 15]);
      for (const layer of qc.layers) {
        for (const role of ROLES) {
          const entry = layer.linears[role];
          expect(entry.rotation).toBeUndefined();
          expect(entry.quantizer.kind).toBe('int');
          expect(entry.quantizer.bits).toBe(6);
          expect(INT_CLIP_GRID).toContain(entry.quantizer.clipRatio);
        }
        expect(layer.attention).toBeUndefined();
      }
      const report = JSON.parse(await readFile(join(dir, 'quantize-report.json'), 'utf8'));
      expect(report.method).toBe(method);
      expect(report.recipe.method).toBe(method);
      // the disk estimate counts no packed model
      expect(report.disk.estimate.packed).toBe(0);
      expect(report.disk.estimate.simulated).toBeGreaterThan(0);
      for (const l of report.layers) for (const role of ROLES) expect(l.linears[role].salientColumns).toBeGreaterThanOrEqual(1);
      // the simulated model names its method
      const f = await SafetensorsFile.open(join(dir, 'model.safetensors'));
      expect(f.metadata['bwq']).toBe(`simulated-${method}`);
      await f.close();
    }
  });

  it('BiLLM: every row of a one-block weight holds at most 8 values (2 salient planes + 2 split groups), rows differ', async () => {
    // down_proj has 128 input columns: one block of BiLLM's 128
    for (const role of ['q_proj', 'down_proj']) {
      const { data, rows, cols } = await linearWeight(billm, 1, role);
      expect(cols).toBeLessThanOrEqual(128);
      const distinct = Array.from({ length: rows }, (_, r) => new Set(data.subarray(r * cols, (r + 1) * cols)).size);
      expect(Math.max(...distinct)).toBeLessThanOrEqual(8);
      expect(Math.min(...distinct)).toBeGreaterThanOrEqual(3);
    }
    // ARB-RC's column scales make (almost) every value distinct
    const { data, rows, cols } = await linearWeight(arb, 1, 'down_proj');
    expect(new Set(data.subarray(0, cols)).size).toBeGreaterThan(8);
    expect(rows).toBe(64);
  });

  it('block 0 sees the same inputs under both methods: ARB-LLM_RC binarizes its weights closer than BiLLM', async () => {
    const rb = JSON.parse(await readFile(join(billm, 'quantize-report.json'), 'utf8'));
    const ra = JSON.parse(await readFile(join(arb, 'quantize-report.json'), 'utf8'));
    for (const role of ROLES) {
      expect(ra.layers[0].linears[role].weightRelError).toBeLessThan(rb.layers[0].linears[role].weightRelError);
      expect(rb.layers[0].linears[role].weightRelError).toBeLessThan(rb.layers[0].linears[role].plainBinarizationRelError);
    }
  });

  it('eval runs the simulated model; --backend native refuses it in one line', async () => {
    const r = await runCli('eval', billm, '--seqlen', '32', '--max-windows', '2', '--json');
    expect(r.code).toBe(0);
    const ppl = JSON.parse(r.stdout).ppl as number;
    expect(Number.isFinite(ppl) && ppl > 1).toBe(true);
    const n = await runCli('eval', arb, '--seqlen', '32', '--max-windows', '2', '--backend', 'native');
    expect(n.code).toBe(2);
    expect(n.stderr.trim().split('\n')).toHaveLength(1);
    expect(n.stderr).toContain('method arb has no packed model');
    expect(n.stderr).toContain('--backend onnx');
  });

  it('--a-bits 16: weights only (no activation quantizer)', async () => {
    const dir = await quantize('arb', '16', 'arb-a16');
    const qc = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')).quantization_config;
    expect(qc.a_bits).toBe(16);
    for (const layer of qc.layers) for (const role of ROLES) expect(layer.linears[role].quantizer).toEqual({ kind: 'none' });
    // the same weights as at A6: the activation quantizer does not steer the weight binarization of block 0
    const a16 = await linearWeight(dir, 0, 'up_proj');
    const a6 = await linearWeight(arb, 0, 'up_proj');
    expect(a16.data).toEqual(a6.data);
  });

  it('quantize --recipe OUT/quantize-report.json repeats a billm run byte for byte', async () => {
    const again = join(work, 'billm-again');
    const r = await runCli('quantize', '--recipe', join(billm, 'quantize-report.json'), '-o', again, '--json');
    expect(r.code).toBe(0);
    expect(Buffer.compare(await readFile(join(again, 'model.safetensors')), await readFile(join(billm, 'model.safetensors')))).toBe(0);
  });
});

describe('bwq quantize --method billm | arb: refusals', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--method', 'billm', '--a-bits', 'ternary'], /--a-bits ternary is for --method bwta; billm takes an integer bit width/],
    [['--method', 'arb', '--no-simulated'], /--method arb has no packed model .*drop --no-simulated/],
    [['--method', 'billm', '--reconstruct'], /--reconstruct is not available for --method billm/],
    [['--method', 'arb', '--scale-refit', 'none'], /--scale-refit is a --method bwla \/ bwta option/],
    [['--method', 'arb', '--okt-iterations', '3'], /--okt-iterations is a --method bwla option/],
    [['--method', 'gptq'], /--method must be bwta, bwla, rtn, billm or arb \(got "gptq"\)/],
  ];
  for (const [flags, message] of cases) {
    it(`${flags.join(' ')}: exit 2, one line, nothing written`, async () => {
      const out = join(work, `refused-${flags.join('').replace(/[^a-z0-9]/g, '')}`);
      const r = await runCli('quantize', TINY, '-o', out, ...flags, ...CALIB);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
      expect((await readdir(work)).some((f) => f.includes('refused-'))).toBe(false);
    });
  }

  it('a billm quantization_config with packed_weights, or with ternary activations, is refused', async () => {
    const base = JSON.parse(await readFile(join(TINY, 'config.json'), 'utf8'));
    const layer = { linears: {} };
    const qc = { quant_method: 'bwq', bwq_version: '0', method: 'billm', w_bits: 1, a_bits: 6, layers: [layer, layer], settings: {} };
    const ctx = { numLayers: base.num_hidden_layers as number, architecture: 'llama', file: 'config.json' };
    expect(parseQuantizationConfig(qc, ctx).packed_weights).toBeUndefined();
    expect(() => parseQuantizationConfig({ ...qc, packed_weights: 'model.packed.safetensors' }, ctx))
      .toThrow("quantization_config: 'packed_weights' must be absent for method billm (it has no packed model)");
    expect(() => parseQuantizationConfig({ ...qc, method: 'arb', a_bits: 'ternary' }, ctx))
      .toThrow(`quantization_config: 'a_bits' must be an integer for method arb (got "ternary")`);
    // bwq's own methods still need it
    expect(() => parseQuantizationConfig({ ...qc, method: 'bwla' }, ctx)).toThrow("'packed_weights' must be a file name");
  });
});
