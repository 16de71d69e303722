/**
 * The weight files of a quantize OUT_DIR (issue #15): the simulated model in the checkpoint's dtype (bf16 for the
 * bundled model; OKT factors f32), sharded as transformers shards when larger than the maximum shard size,
 * `--no-simulated` writing the packed model only (evaluated by the runtime), and every block's spill file
 * deleted as soon as the block is in the outputs. A checkpoint whose index splits layers across shards
 * arbitrarily quantizes and evaluates exactly like the single-file one.
 */
import { describe, expect, it } from 'vitest';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { quantizeModel, type QuantizeOptions } from '../../src/pipeline/quantize.js';
import { checkpointDirOf, Checkpoint as RunCheckpoint } from '../../src/pipeline/checkpoint.js';
import type { Progress } from '../../src/progress.js';
import { createProgress } from '../../src/cli/progress.js';
import { Checkpoint } from '../../src/safetensors/checkpoint.js';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { writeSafetensors } from '../../src/safetensors/writer.js';
import { float32ToBfloat16Bits } from '../../src/safetensors/dtypes.js';
import { planShards } from '../../src/safetensors/shards.js';
import { estimateOutputSize } from '../../src/pipeline/output-size.js';
import { checkWrittenByBwq } from '../../src/pipeline/output-dir.js';
import { reconstructWeight } from '../../src/quant/psp.js';
import { BwqError } from '../../src/errors.js';
import { runCli } from '../helpers/run-cli.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();
const work = tempDir('bwq-simout-');
const MODEL = 'models/sotu-llama';
const quiet = createProgress({ quiet: true });
const EVAL = ['--seqlen', '128', '--max-windows', '4', '--json'];

function options(modelDir: string, outDir: string, extra: Partial<QuantizeOptions> = {}): QuantizeOptions {
  return {
    modelDir, outDir, method: 'bwla', aBits: 6, calibFile: 'calibration/sotu-calib.txt', nsamples: 4, seqlen: 128,
    seqlenExplicit: true, rank: 2, seed: 0, force: false, statTokens: 128, threads: 2, device: 'cpu', ...extra,
  };
}

async function ppl(model: string, backend: 'onnx' | 'native', windows = 4): Promise<number> {
  const args = EVAL.map((a, i) => (EVAL[i - 1] === '--max-windows' ? String(windows) : a));
  const r = await runCli('eval', model, '--backend', backend, ...(backend === 'native' ? ['--device', 'cpu'] : []), ...args);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout).ppl as number;
}

/** name → [dtype, shape, bytes] of every tensor of a checkpoint (single file or sharded). */
async function tensors(dir: string): Promise<Map<string, { dtype: string; shape: number[]; bytes: Buffer }>> {
  const ck = await Checkpoint.open(dir);
  const out = new Map<string, { dtype: string; shape: number[]; bytes: Buffer }>();
  try {
    for (const n of ck.names()) out.set(n, { dtype: ck.info(n).dtype, shape: [...ck.info(n).shape], bytes: Buffer.from(await ck.readBytes(n)) });
  } finally {
    await ck.close();
  }
  return out;
}

/** Records, at each step of the write-out, which layer files are left in the run's checkpoint. */
function spillWatcher(outDir: string): { progress: Progress; seen: { detail: string; files: string[] }[] } {
  const seen: { detail: string; files: string[] }[] = [];
  let writing = false;
  const layers = join(checkpointDirOf(outDir), '.layers');
  const progress: Progress = {
    start: (label) => { writing = /^writing /.test(label); },
    update: (_done, _total, detail) => {
      if (writing) seen.push({ detail: detail ?? '', files: readdirSync(layers).sort() });
    },
    succeed: () => { writing = false; },
    fail: () => undefined,
    info: () => undefined,
  };
  return { progress, seen };
}

const whole = join(work, 'whole');
const sharded = join(work, 'sharded');

describe('simulated model: checkpoint dtype, shards', () => {
  it('is bf16 like the checkpoint (OKT factors f32), the bf16 rounding of the quantized weights; spill files go block by block', async () => {
    const watch = spillWatcher(whole);
    await quantizeModel(options(MODEL, whole), watch.progress);
    expect(readdirSync(whole).sort()).toEqual(['config.json', 'generation_config.json', 'model.packed.safetensors', 'model.safetensors',
      'quantize-report.json', 'tokenizer.json', 'tokenizer_config.json']);
    const config = JSON.parse(readFileSync(join(whole, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config['dtype']).toBe('bfloat16');
    expect('torch_dtype' in config).toBe(false);

    const sim = await SafetensorsFile.open(join(whole, 'model.safetensors'));
    const packed = await SafetensorsFile.open(join(whole, 'model.packed.safetensors'));
    try {
      const dtypes = new Map<string, number>();
      for (const n of sim.names()) {
        const d = sim.info(n).dtype;
        if (n.includes('.okt_r')) expect(d, n).toBe('F32');
        else expect(d, n).toBe('BF16');
        dtypes.set(d, (dtypes.get(d) ?? 0) + 1);
      }
      expect(Object.fromEntries(dtypes)).toEqual({ BF16: 38, F32: 32 }); // 4 layers × 4 groups × 2 factors
      // a simulated weight is sign × scale + lr_a·lr_b from the packed file, rounded to bf16 (nearest even)
      const p = 'model.layers.2.mlp.down_proj';
      const [rows, cols] = sim.info(`${p}.weight`).shape as [number, number];
      const words = new Uint32Array(Uint8Array.from(await packed.readBytes(`${p}.qweight`)).buffer);
      const signs = new Int8Array(rows * cols);
      const wpr = Math.ceil(cols / 32);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) signs[r * cols + c] = (words[r * wpr + (c >> 5)]! >>> (c & 31)) & 1 ? 1 : -1;
      const rank = packed.info(`${p}.lr_a`).shape[1]!;
      expect(rank).toBe(2);
      const f32 = reconstructWeight(signs, Float32Array.from(await packed.readFloat32(`${p}.wscale`)),
        Float32Array.from(await packed.readFloat32(`${p}.lr_a`)), Float32Array.from(await packed.readFloat32(`${p}.lr_b`)), rank, rows, cols);
      const stored = new Uint16Array(Uint8Array.from(await sim.readBytes(`${p}.weight`)).buffer);
      let mismatches = 0;
      for (let i = 0; i < f32.length; i++) if (stored[i] !== float32ToBfloat16Bits(f32[i]!)) mismatches++;
      expect(mismatches).toBe(0);
      // embeddings: the checkpoint's bytes in both files
      const original = await SafetensorsFile.open(join(MODEL, 'model.safetensors'));
      const emb = Buffer.from(await original.readBytes('model.embed_tokens.weight'));
      await original.close();
      expect(Buffer.from(await sim.readBytes('model.embed_tokens.weight')).equals(emb)).toBe(true);
      expect(Buffer.from(await packed.readBytes('model.embed_tokens.weight')).equals(emb)).toBe(true);
    } finally {
      await sim.close();
      await packed.close();
    }

    // the write-out deleted each block's layer file right after that block: none left after block b ≤ b
    expect(watch.seen.map((s) => s.detail)).toEqual(['embeddings, final norm, lm_head', 'block 0', 'block 1', 'block 2', 'block 3']);
    const all = ['layer-0.safetensors', 'layer-1.safetensors', 'layer-2.safetensors', 'layer-3.safetensors'];
    expect(watch.seen.map((s) => s.files)).toEqual([all, all.slice(1), all.slice(2), all.slice(3), []]);
    expect(existsSync(checkpointDirOf(whole))).toBe(false);

    // the report states the estimated peak; it bounds the outputs
    const report = JSON.parse(readFileSync(join(whole, 'quantize-report.json'), 'utf8')) as { disk: { estimated_peak_bytes: number; output_bytes: number; estimate: Record<string, number> } };
    const written = readdirSync(whole).filter((f) => f !== 'quantize-report.json').reduce((a, f) => a + readFileSync(join(whole, f)).byteLength, 0);
    expect(report.disk.output_bytes).toBe(written);
    expect(report.disk.estimate['simulated']).toBeGreaterThanOrEqual(readFileSync(join(whole, 'model.safetensors')).byteLength);
    expect(report.disk.estimated_peak_bytes).toBeGreaterThan(written + report.disk.estimate['largest_block_layer_file']!);
  }, 180_000);

  it('sharded with a small maximum: transformers names and index, the same tensors and perplexity as one file', async () => {
    const max = 1_000_000;
    await quantizeModel(options(MODEL, sharded, { maxShardBytes: max }), quiet);
    const files = readdirSync(sharded).filter((f) => f.startsWith('model')).sort();
    const shards = files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
    expect(shards.length).toBeGreaterThan(5);
    expect(shards).toEqual(shards.map((_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`));
    expect(files).toEqual([...shards, 'model.packed.safetensors', 'model.safetensors.index.json'].sort());
    const index = JSON.parse(readFileSync(join(sharded, 'model.safetensors.index.json'), 'utf8')) as
      { metadata: { total_size: number; total_parameters: number }; weight_map: Record<string, string> };
    const a = await tensors(whole);
    const b = await tensors(sharded);
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    expect(Object.keys(index.weight_map)).toEqual([...a.keys()].sort());
    for (const [name, t] of a) expect(b.get(name)!.bytes.equals(t.bytes), name).toBe(true);
    expect(index.metadata.total_size).toBe([...a.values()].reduce((s, t) => s + t.bytes.byteLength, 0));
    expect(index.metadata.total_parameters).toBe([...a.values()].reduce((s, t) => s + t.shape.reduce((x, y) => x * y, 1), 0));
    for (const shard of shards) {
      const f = await SafetensorsFile.open(join(sharded, shard));
      const bytes = f.names().reduce((s, n) => s + f.info(n).byteLength, 0);
      expect(f.names().every((n) => index.weight_map[n] === shard)).toBe(true);
      expect(bytes <= max || f.names().length === 1, shard).toBe(true);
      await f.close();
    }
    expect(readFileSync(join(sharded, 'model.packed.safetensors')).equals(readFileSync(join(whole, 'model.packed.safetensors')))).toBe(true);
    expect(await ppl(sharded, 'onnx')).toBe(await ppl(whole, 'onnx'));
  }, 180_000);

  it('the bf16 simulated model evaluates like the packed one in the runtime', async () => {
    // bf16 rounding of the simulated weights moves single tokens across activation-quantizer steps: on 4 windows
    // of 128 tokens it is 1.4 % apart (0.06 % with float32 simulated weights), on 24 windows 0.3 %
    const [onnx, native] = [await ppl(whole, 'onnx', 24), await ppl(whole, 'native', 24)];
    expect(Math.abs(onnx / native - 1)).toBeLessThan(0.01);
  }, 60_000);
});

describe('--no-simulated', () => {
  it('writes the packed model only; eval runs it with --backend native, --backend onnx says what to do', async () => {
    const out = join(work, 'packed-only');
    const summary = await quantizeModel(options(MODEL, out, { simulated: false }), quiet);
    const expected = ['config.json', 'generation_config.json', 'model.packed.safetensors', 'quantize-report.json', 'tokenizer.json', 'tokenizer_config.json'];
    expect(readdirSync(out).sort()).toEqual(expected);
    expect([...summary.files].sort()).toEqual(expected);
    // the same packed bytes as the run that also wrote the simulated model
    expect(readFileSync(join(out, 'model.packed.safetensors')).equals(readFileSync(join(whole, 'model.packed.safetensors')))).toBe(true);
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).dtype).toBe('bfloat16');
    expect(await ppl(out, 'native')).toBe(await ppl(whole, 'native'));
    const r = await runCli('eval', out, ...EVAL.filter((a) => a !== '--json'));
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`bwq: ${out}: has no simulated model (quantized with --no-simulated), which --backend onnx needs; evaluate it with --backend native`);
    const cli = await runCli('quantize', '-o', join(work, 'packed-cli'), '--method', 'rtn', '--nsamples', '2', '--seqlen', '64', '--stat-tokens', '64',
      '--device', 'cpu', '--no-simulated', '--json');
    expect(cli.code, cli.stderr).toBe(0);
    expect(existsSync(join(work, 'packed-cli', 'model.safetensors'))).toBe(false);
    expect(existsSync(join(work, 'packed-cli', 'model.packed.safetensors'))).toBe(true);
  }, 180_000);
});

describe('a checkpoint whose index splits layers arbitrarily', () => {
  it('evaluates and quantizes with the same numbers as the single file', async () => {
    // the bundled model resharded: tensor i of the header order goes to shard i mod 3, so every layer is spread
    // over all three shards and every shard holds parts of every layer
    const dir = join(work, 'resharded');
    mkdirSync(dir);
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) copyFileSync(join(MODEL, f), join(dir, f));
    const src = await SafetensorsFile.open(join(MODEL, 'model.safetensors'));
    const names = src.names();
    const weightMap: Record<string, string> = {};
    for (let s = 0; s < 3; s++) {
      const file = `model-0000${s + 1}-of-00003.safetensors`;
      const mine = names.filter((_, i) => i % 3 === s).reverse();
      for (const n of mine) weightMap[n] = file;
      await writeSafetensors(join(dir, file), await Promise.all(mine.map(async (n) => ({
        name: n, dtype: src.info(n).dtype, shape: src.info(n).shape, data: Uint8Array.from(await src.readBytes(n)),
      }))), { format: 'pt' });
    }
    await src.close();
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }, null, 2));
    const layer0 = new Set(Object.entries(weightMap).filter(([n]) => n.startsWith('model.layers.0.')).map(([, f]) => f));
    expect(layer0.size).toBe(3);

    expect(await ppl(dir, 'onnx')).toBe(await ppl(MODEL, 'onnx'));
    expect(await ppl(dir, 'native')).toBe(await ppl(MODEL, 'native'));
    const out = join(work, 'resharded-q');
    await quantizeModel(options(dir, out), quiet);
    const layers = (d: string): unknown => (JSON.parse(readFileSync(join(d, 'quantize-report.json'), 'utf8')) as { layers: { seconds: number }[] })
      .layers.map((l) => ({ ...l, seconds: 0 }));
    expect(layers(out)).toEqual(layers(whole));
    for (const f of ['model.safetensors', 'model.packed.safetensors']) expect(readFileSync(join(out, f)).equals(readFileSync(join(whole, f))), f).toBe(true);
    expect(await ppl(out, 'onnx')).toBe(await ppl(whole, 'onnx'));
  }, 240_000);
});

describe('shard plan', () => {
  const t = (name: string, n: number): { name: string; dtype: 'BF16'; shape: number[] } => ({ name, dtype: 'BF16', shape: [n] });

  it('fills shards in order up to the maximum; a larger tensor alone; one shard is model.safetensors', () => {
    const plan = planShards([t('b', 300), t('a', 200), t('c', 1000), t('d', 100), t('e', 400)], 1000);
    // bytes: b 600, a 400 (=1000), c 2000 (alone), d 200 + e 800 (=1000)
    expect(plan.shards.map((s) => [s.file, s.tensors.map((x) => x.name), s.bytes])).toEqual([
      ['model-00001-of-00003.safetensors', ['b', 'a'], 1000],
      ['model-00002-of-00003.safetensors', ['c'], 2000],
      ['model-00003-of-00003.safetensors', ['d', 'e'], 1000],
    ]);
    expect(plan.index).toBe(`${JSON.stringify({
      metadata: { total_parameters: 2000, total_size: 4000 },
      weight_map: { a: 'model-00001-of-00003.safetensors', b: 'model-00001-of-00003.safetensors', c: 'model-00002-of-00003.safetensors',
        d: 'model-00003-of-00003.safetensors', e: 'model-00003-of-00003.safetensors' },
    }, null, 2)}\n`);
    const one = planShards([t('x', 10), t('y', 10)]);
    expect(one.shards.map((s) => s.file)).toEqual(['model.safetensors']);
    expect(one.index).toBeUndefined();
  });
});

describe('resume after the write-out began', () => {
  it('the hidden states go to the checkpoint and back window by window, across its 64 MiB chunks', async () => {
    const out = join(work, 'chunks');
    const { checkpoint } = await RunCheckpoint.open(out, 'f', { resume: false, force: false });
    const seqlen = 256;
    const width = 1024; // windows of 1 MiB: 70 of them are two chunks
    const windows = 70;
    const data = Float32Array.from({ length: windows * seqlen * width }, (_, i) => (i % 9973) * 0.5 - 7);
    const span = seqlen * width;
    const reads: number[] = [];
    const source = { windows, seqlen, hidden: width, read: (w0: number, n: number) => { reads.push(n); return data.subarray(w0 * span, (w0 + n) * span); }, write: () => {} };
    await checkpoint.commitBlock(0, source, new Map(), { completed: 1, rng: [], recipes: [], reports: [], linears: [], rotations: [] });
    expect(reads).toEqual([64, 6]);
    const back = new Float32Array(data.length);
    const writes: number[] = [];
    const sink = { windows, seqlen, hidden: width, read: () => back, write: (w0: number, x: Float32Array) => { writes.push(w0); back.set(x, w0 * span); } };
    await checkpoint.readHidden(1, sink);
    expect(writes).toEqual([0, 64]);
    let differing = 0;
    for (let i = 0; i < data.length; i++) if (back[i] !== data[i]) differing++;
    expect(differing).toBe(0);
    // a stream of another size is refused in one line
    const wrong = { ...sink, windows: windows - 1 };
    await expect(checkpoint.readHidden(1, wrong)).rejects.toThrow(/hidden-after-1\.f32 has 73400320 bytes, expected 72351744/);
    await checkpoint.remove();
  });

  it('is refused in one line (the layer files are partly gone)', async () => {
    const out = join(work, 'marked');
    const { checkpoint } = await RunCheckpoint.open(out, 'f', { resume: false, force: false });
    const states = new Float32Array(4);
    const hidden = { windows: 1, seqlen: 1, hidden: 4, read: () => states, write: () => {} };
    await checkpoint.commitBlock(0, hidden, new Map(), { completed: 1, rng: [], recipes: [], reports: [], linears: [], rotations: [] });
    await checkpoint.markWriteOut();
    const error = await RunCheckpoint.open(out, 'f', { resume: true, force: false }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BwqError);
    expect((error as BwqError).oneLine()).toBe(`${out}: the run in ${checkpointDirOf(out)} was interrupted while writing OUT_DIR, after its layer files had been moved into the output; run without --resume and with --force to start over`);
    // --force starts over
    const again = await RunCheckpoint.open(out, 'f', { resume: false, force: true });
    expect(again.state).toBeUndefined();
    await again.checkpoint.remove();
  });
});

describe('disk estimate', () => {
  it('peak = max(layer files, simulated + packed + copies + one block) + checkpoint, in the kept dtypes', () => {
    const h = (n: string): number => n.length + 128;
    const input = {
      tensors: [{ name: 'e', shape: [10, 64], bytesPerElement: 2 }, { name: 'l.0.w', shape: [8, 64], bytesPerElement: 2 }, { name: 'l.1.w', shape: [8, 64], bytesPerElement: 2 }],
      linears: [{ name: 'l.0.w', rows: 8, cols: 64, layer: 0, bytesPerElement: 2 }, { name: 'l.1.w', rows: 8, cols: 64, layer: 1, bytesPerElement: 2 }],
      rotatedWidths: [], rank: 0, copiedBytes: 100, hiddenStateBytes: 1000,
    };
    const s = estimateOutputSize(input);
    const parts = 4 * 8 * 2 + 4 * 8;
    expect(s.simulated).toBe(8 + h('e') + 2 * 640 + 2 * (h('l.0.w') + 2 * 512));
    expect(s.packed).toBe(8 + h('e') + 2 * 640 + 2 * (4 * h('l.0.w') + parts));
    expect(s.spillBlock).toBe(5 * h('l.0.w') + 2 * 512 + parts);
    expect(s.spill).toBe(2 * s.spillBlock);
    expect(s.checkpoint).toBe(2000);
    expect(s.total).toBe(s.simulated + s.packed + s.copies + s.spillBlock + 2000);
    const packedOnly = estimateOutputSize({ ...input, simulated: false });
    expect(packedOnly.simulated).toBe(0);
    expect(packedOnly.spillBlock).toBe(4 * h('l.0.w') + parts);
    expect(packedOnly.total).toBe(s.packed + s.copies + packedOnly.spillBlock + 2000);
  });
});

describe('--force and shards', () => {
  it('a sharded output is recognized as bwq\'s own; a foreign shard-like name next to it is not', async () => {
    const dir = join(work, 'shard-names');
    mkdirSync(dir);
    for (const f of ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'model.packed.safetensors', 'config.json']) {
      writeFileSync(join(dir, f), 'x');
    }
    writeFileSync(join(dir, 'quantize-report.json'), JSON.stringify({ bwq_version: '0.1.0' }));
    await expect(checkWrittenByBwq(dir)).resolves.toBeUndefined();
    writeFileSync(join(dir, 'model-1-of-2.safetensors'), 'x');
    await expect(checkWrittenByBwq(dir)).rejects.toThrow(/holds files bwq did not write \(model-1-of-2\.safetensors\)/);
  });
});
