import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest';
import { runCli } from '../helpers/run-cli.js';
import { writeSafetensors, type TensorToWrite } from '../../src/safetensors/writer.js';
import { exampleQuantizationConfig } from '../model/recipe-example.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();


const bwq = runCli;

afterEach(() => vi.restoreAllMocks());

/** Parameters of models/sotu-llama from its config: embeddings (tied) + 4 blocks + final norm. */
function sotuParameters(): number {
  const c = JSON.parse(readFileSync('models/sotu-llama/config.json', 'utf8'));
  const h = c.hidden_size;
  const kv = c.num_key_value_heads * c.head_dim;
  const block = 2 * h + 2 * h * c.num_attention_heads * c.head_dim + 2 * kv * h + 3 * h * c.intermediate_size;
  return c.vocab_size * h + c.num_hidden_layers * block + h;
}

describe('bwq inspect (in process)', () => {
  test('model directory: human text', async () => {
    const r = await bwq('inspect', 'models/sotu-llama');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('architecture  llama');
    expect(r.stdout).toContain('hidden 256, intermediate 768, layers 4, heads 8 (kv 4), head_dim 32, vocab 4096');
    expect(r.stdout).toContain(`parameters    ${sotuParameters().toLocaleString('en-US')} in 38 tensors`);
    expect(r.stdout).toMatch(/BF16\s+38 tensors\s+4,196,608 values\s+8\.00 MiB/);
    expect(r.stdout).toMatch(/model\.layers\.\*\.self_attn\.k_proj\.weight\s+BF16\s+\[128, 256\]\s+x4/);
    expect(r.stdout).toContain('metadata      format=pt');
  });

  test('model directory: --json', async () => {
    const r = await bwq('inspect', 'models/sotu-llama', '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.kind).toBe('model-dir');
    expect(j.model).toMatchObject({ architecture: 'llama', numLayers: 4, hiddenSize: 256, numKvHeads: 4, tieWordEmbeddings: true });
    expect(j.parameterCount).toBe(sotuParameters());
    expect(j.dtypes).toEqual({ BF16: { tensors: 38, parameters: sotuParameters(), bytes: 2 * sotuParameters() } });
    expect(j.files).toEqual([{ path: join('models/sotu-llama', 'model.safetensors'), bytes: 8397312, tensors: 38 }]);
    expect(j.tensors).toBeUndefined();
    expect(j.tensorGroups.find((g: { pattern: string }) => g.pattern === 'model.layers.*.mlp.up_proj.weight'))
      .toEqual({ pattern: 'model.layers.*.mlp.up_proj.weight', count: 4, dtype: 'BF16', shape: [768, 256], parameters: 4 * 768 * 256, bytes: 8 * 768 * 256 });
    expect(j.quantization).toBeUndefined();
  });

  test('--tensors lists every tensor of a sharded model', async () => {
    const r = await bwq('inspect', 'test/fixtures/models/tiny-llama', '--tensors', '--json');
    const j = JSON.parse(r.stdout);
    expect(j.files.length).toBe(4);
    expect(j.tensors.length).toBe(21);
    expect(j.tensors.find((t: { name: string }) => t.name === 'lm_head.weight')).toMatchObject({ dtype: 'F32', shape: [4096, 64], bytes: 4096 * 64 * 4 });
    const human = await bwq('inspect', 'test/fixtures/models/tiny-llama', '--tensors');
    expect(human.stdout).toMatch(/lm_head\.weight\s+F32\s+\[4096, 64\]\s+model-00003-of-00004\.safetensors/);
  });

  test('single safetensors file: tensors, dtype histogram, metadata', async () => {
    const path = 'test/fixtures/safetensors/dtypes.safetensors';
    const j = JSON.parse((await bwq('inspect', path, '--json')).stdout);
    expect(j.kind).toBe('safetensors');
    expect(j.model).toBeUndefined();
    expect(j.metadata).toEqual({ [path]: { format: 'pt', producer: 'bwq fixtures' } });
    expect(j.tensorCount).toBe(13);
    expect(j.tensors.map((t: { name: string }) => t.name)).toContain('random_f32');
    expect(j.dtypes.F32).toEqual({ tensors: 4, parameters: 15 + 153 + 1 + 0, bytes: 4 * 169 });
    expect(j.dtypes.I64).toEqual({ tensors: 1, parameters: 5, bytes: 40 });
    expect(j.dtypes.BOOL).toEqual({ tensors: 1, parameters: 6, bytes: 6 });
    expect(j.dataBytes).toBe(843);
    expect(j.fileBytes).toBe(1699);
    const human = (await bwq('inspect', path)).stdout;
    expect(human).toMatch(/^  scalar\s+F32\s+\[\]$/m);
    expect(human).toMatch(/^  empty\s+F32\s+\[0, 3\]$/m);
    expect(human).toContain('metadata      format=pt, producer=bwq fixtures');
  });

  test('index JSON', async () => {
    const j = JSON.parse((await bwq('inspect', 'test/fixtures/safetensors/sharded/model.safetensors.index.json', '--json')).stdout);
    expect(j.kind).toBe('index');
    expect(j.files.length).toBe(2);
    expect(j.tensorCount).toBe(4);
    expect(j.parameterCount).toBe(32 + 8 + 32 + 1);
    expect(Object.keys(j.dtypes).sort()).toEqual(['BF16', 'F16', 'F32', 'I64']);
  });

  describe('quantized output directory', () => {
    let dir: string;
    const roles: [string, number, number][] = [
      ['self_attn.q_proj', 64, 64], ['self_attn.k_proj', 32, 64], ['self_attn.v_proj', 32, 64], ['self_attn.o_proj', 64, 64],
      ['mlp.gate_proj', 128, 64], ['mlp.up_proj', 128, 64], ['mlp.down_proj', 64, 128],
    ];
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'bwq-inspect-q-'));
      copyFileSync('test/fixtures/models/tiny-qwen2/model.safetensors', join(dir, 'model.safetensors'));
      const config = JSON.parse(readFileSync('test/fixtures/models/tiny-qwen2/config.json', 'utf8'));
      writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, quantization_config: exampleQuantizationConfig() }));
      // A packed file laid out as docs/FORMATS.md says: qweight U32 [N, ceil(K/32)], wscale F32 [N];
      // layer 1's down_proj also carries a rank-4 low-rank term.
      const tensors: TensorToWrite[] = [];
      for (let layer = 0; layer < 2; layer++) {
        for (const [role, n, k] of roles) {
          const prefix = `model.layers.${layer}.${role}`;
          tensors.push({ name: `${prefix}.qweight`, dtype: 'U32', shape: [n, Math.ceil(k / 32)], data: new Uint32Array(n * Math.ceil(k / 32)) });
          tensors.push({ name: `${prefix}.wscale`, dtype: 'F32', shape: [n], data: new Float32Array(n) });
        }
      }
      tensors.push({ name: 'model.layers.1.mlp.down_proj.lr_a', dtype: 'F32', shape: [64, 4], data: new Float32Array(256) });
      tensors.push({ name: 'model.layers.1.mlp.down_proj.lr_b', dtype: 'F32', shape: [4, 128], data: new Float32Array(512) });
      await writeSafetensors(join(dir, 'model.packed.safetensors'), tensors, { format: 'bwq-packed-v1' });
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    test('method, bits, settings, packed linears and sizes', async () => {
      const r = await bwq('inspect', dir, '--json');
      expect(r.code).toBe(0);
      const j = JSON.parse(r.stdout);
      expect(j.quantization).toMatchObject({ method: 'bwta', aBits: 'ternary', wBits: 1, bwqVersion: '0.1.0',
        packedWeights: 'model.packed.safetensors', quantizedLinears: 12, rotatedLinears: 4 });
      expect(j.quantization.settings).toEqual(exampleQuantizationConfig().settings);
      const weights = 2 * roles.reduce((a, [, n, k]) => a + n * k, 0);
      const packedBytes = 2 * roles.reduce((a, [, n, k]) => a + 4 * n * Math.ceil(k / 32) + 4 * n, 0) + 4 * (256 + 512);
      expect(j.packed).toMatchObject({ packedLinears: 14, lowRankLinears: 1, linearParameters: weights,
        linearFloat32Bytes: 4 * weights, linearFloat16Bytes: 2 * weights, packedLinearBytes: packedBytes,
        inFeaturesApproximate: false, format: 'bwq-packed-v1' });
      const human = (await bwq('inspect', dir)).stdout;
      expect(human).toContain('quantization  bwq bwta: w_bits 1, a_bits ternary');
      expect(human).toContain('packed        14 packed linears (1 with low-rank terms) in model.packed.safetensors [bwq-packed-v1]');
      expect(human).toContain('settings      nsamples=16, seqlen=128, rank=8, seed=0, calib=calibration/sotu-calib.txt, okt=true');
      expect(human).toContain(`x smaller than float32`);
    });

    test('the packed file alone', async () => {
      const j = JSON.parse((await bwq('inspect', join(dir, 'model.packed.safetensors'), '--json')).stdout);
      expect(j.packed.packedLinears).toBe(14);
      // Without the float checkpoint, in_features of linears without lr_b come from the qweight
      // width (32 x words), flagged as approximate; exact here because every K is a multiple of 32.
      expect(j.packed.inFeaturesApproximate).toBe(true);
      expect(j.packed.linearParameters).toBe(2 * roles.reduce((a, [, n, k]) => a + n * k, 0));
    });
  });
});

describe('bwq inspect errors', () => {
  const dir = tempDir('bwq-inspect-bad-');

  test('bad file: one stderr line naming the file, exit code 1, nothing on stdout', async () => {
    const bad = join(dir, 'bad.safetensors');
    const header = Buffer.from('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    writeFileSync(bad, Buffer.concat([len, header, Buffer.alloc(8)]));
    const r = await bwq('inspect', bad);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`bwq: ${bad}: invalid safetensors header: tensor 'a': F32 [4] needs 16 bytes but data_offsets span 8\n`);
  });

  test('missing path', async () => {
    const r = await bwq('inspect', join(dir, 'nope'));
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`bwq: ${join(dir, 'nope')}: no such file or directory\n`);
  });

  test('directory with a bad config', async () => {
    const d = tempDir('bwq-inspect-cfg-');
    writeFileSync(join(d, 'config.json'), JSON.stringify({ model_type: 'bloom' }));
    const r = await bwq('inspect', d);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`bwq: ${join(d, 'config.json')}: unsupported architecture 'bloom' (supported: llama, mistral, qwen2, qwen3, gpt2)\n`);
  });

  test('tensors that do not match config.json: one line naming every mismatch (as quantize and eval)', async () => {
    const d = tempDir('bwq-inspect-shape-');
    for (const f of ['config.json', 'model.safetensors']) copyFileSync(join('test/fixtures/models/tiny-qwen2', f), join(d, f));
    const config = JSON.parse(readFileSync(join(d, 'config.json'), 'utf8'));
    writeFileSync(join(d, 'config.json'), JSON.stringify({ ...config, intermediate_size: 96, num_key_value_heads: 1 }));
    const r = await bwq('inspect', d);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`bwq: ${join(d, 'model.safetensors')}: 14 tensors do not match the config: `
      + "'model.layers.{0-1}.self_attn.k_proj.weight' has shape [32, 64] but the config implies [16, 64]; "
      + "'model.layers.{0-1}.self_attn.k_proj.bias' has shape [32] but the config implies [16]; "
      + "'model.layers.{0-1}.self_attn.v_proj.weight' has shape [32, 64] but the config implies [16, 64]; "
      + "'model.layers.{0-1}.self_attn.v_proj.bias' has shape [32] but the config implies [16]; "
      + "'model.layers.{0-1}.mlp.gate_proj.weight' has shape [128, 64] but the config implies [96, 64]; "
      + "'model.layers.{0-1}.mlp.up_proj.weight' has shape [128, 64] but the config implies [96, 64]; "
      + "'model.layers.{0-1}.mlp.down_proj.weight' has shape [64, 128] but the config implies [64, 96]\n");
    // the same line from quantize and eval (openModelDir), and --json gives the error object
    const e = await bwq('eval', d, '--json');
    expect(e.stderr).toBe(r.stderr);
    expect(JSON.parse(e.stdout)).toEqual({ error: r.stderr.slice(`bwq: ${join(d, 'model.safetensors')}: `.length).trim(), file: join(d, 'model.safetensors') });
    const j = await bwq('inspect', d, '--json');
    expect(JSON.parse(j.stdout).file).toBe(join(d, 'model.safetensors'));
    // a missing tensor is named too
    writeFileSync(join(d, 'config.json'), JSON.stringify({ ...config, num_hidden_layers: 3 }));
    expect((await bwq('inspect', d)).stderr).toMatch(/^bwq: .*model\.safetensors: checkpoint has no tensor 'model\.layers\.2\.input_layernorm\.weight' \(and \d+ more\)/);
  });

  test('missing argument is a usage error (exit 2)', async () => {
    const r = await bwq('inspect');
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n').length).toBe(1);
  });
});

describe('compiled CLI (node bin/bwq.js-style entry, built with tsc)', () => {
  const outDir = resolve('node_modules/.cache', `bwq-inspect-test-${process.pid}`);
  beforeAll(() => {
    spawnSync(process.execPath, [resolve('node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json', '--outDir', outDir], { encoding: 'utf8' });
    writeFileSync(join(outDir, 'run.mjs'), "import { main } from './cli/main.js';\nprocess.exitCode = await main(process.argv);\n");
  }, 120_000);
  afterAll(() => rmSync(outDir, { recursive: true, force: true }));

  test('bad file: exit code 1 and a single stderr line', () => {
    expect(existsSync(join(outDir, 'cli/commands/inspect.js'))).toBe(true);
    const bad = join(tempDir('bwq-inspect-spawn-'), 'short.safetensors');
    writeFileSync(bad, Buffer.from([1, 2, 3]));
    const r = spawnSync(process.execPath, [join(outDir, 'run.mjs'), 'inspect', bad], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`bwq: ${bad}: not a safetensors file: 3 bytes is shorter than the 8-byte header length\n`);
  });

  test('good file: exit code 0', () => {
    const r = spawnSync(process.execPath, [join(outDir, 'run.mjs'), 'inspect', 'test/fixtures/safetensors/dtypes.safetensors', '--json'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout).tensorCount).toBe(13);
  });
});
