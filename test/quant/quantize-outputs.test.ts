/**
 * `bwq quantize` never loses data and fails fast on bad output paths (issue #17): --force replaces only
 * a previous bwq output, never an input, the working directory or foreign files; unwritable destinations
 * fail in well under a second; too little disk or memory is refused up front with the estimate.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { quantizeModel, type QuantizeOptions } from '../../src/pipeline/quantize.js';
import { createProgress } from '../../src/cli/progress.js';
import { BwqError } from '../../src/errors.js';
import { checkCalibrationMemory, calibrationMemory } from '../../src/pipeline/calib-memory.js';
import { estimateOutputSize, outputSizeInput } from '../../src/pipeline/output-size.js';
import { openModelDir } from '../../src/model/model-dir.js';
import { writeSafetensors } from '../../src/safetensors/writer.js';
import { runCli } from '../helpers/run-cli.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();
const root = fileURLToPath(new URL('../../', import.meta.url));
const MODEL = join(root, 'models/sotu-llama');
const CALIB = join(root, 'calibration/sotu-calib.txt');
const work = tempDir('bwq-qout-');
const quiet = createProgress({ quiet: true });
/** a fast run: rtn, 2 windows of 64 tokens */
const FAST = ['--method', 'rtn', '--nsamples', '2', '--seqlen', '64', '--stat-tokens', '64', '--threads', '2'];

function options(outDir: string, extra: Partial<QuantizeOptions> = {}): QuantizeOptions {
  return {
    modelDir: MODEL, outDir, method: 'rtn', aBits: 6, calibFile: CALIB, nsamples: 2, seqlen: 64, seqlenExplicit: true,
    rank: 0, seed: 0, force: false, statTokens: 64, threads: 2, ...extra,
  };
}

/** name → contents of every file below dir (to show nothing changed) */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out[join(e.parentPath, e.name).slice(dir.length)] = readFileSync(join(e.parentPath, e.name)).toString('base64').slice(0, 64) + statSync(join(e.parentPath, e.name)).size;
  }
  return out;
}

function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

afterEach(() => vi.restoreAllMocks());

describe('--force replaces only what bwq wrote', () => {
  it('refuses a directory holding unrelated files and deletes none of them', async () => {
    const out = join(work, 'mine');
    mkdirSync(join(out, 'photos'), { recursive: true });
    writeFileSync(join(out, 'thesis.tex'), 'years of work');
    writeFileSync(join(out, 'photos', 'a.jpg'), 'jpeg');
    const before = snapshot(out);
    const r = await runCli('quantize', ...FAST, '-o', out, '--force');
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toBe(`bwq: ${out}: holds files bwq did not write (photos, thesis.tex); not replacing it (choose another -o)`);
    expect(snapshot(out)).toEqual(before);
  });

  it('`quantize parent/model -o parent --force` refuses and keeps the model', async () => {
    const parent = join(work, 'parent');
    cpSync(MODEL, join(parent, 'model'), { recursive: true });
    writeFileSync(join(parent, 'quantize-report.json'), JSON.stringify({ bwq_version: '0.1.0' }));
    const before = snapshot(parent);
    const r = await runCli('quantize', join(parent, 'model'), ...FAST, '-o', parent, '--force');
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toBe(`bwq: ${parent}: contains the input model directory ${join(parent, 'model')}; choose another -o`);
    expect(snapshot(parent)).toEqual(before);
    const same = await runCli('quantize', join(parent, 'model'), ...FAST, '-o', join(parent, 'model'), '--force');
    expect(oneLine(same.stderr)).toBe(`bwq: ${join(parent, 'model')}: is the input model directory; choose another -o`);
    expect(snapshot(parent)).toEqual(before);
  });

  it('`-o . --force` and `-o .. --force` refuse the working directory and its ancestors', async () => {
    const outer = join(work, 'outer');
    const here = join(outer, 'here');
    mkdirSync(here, { recursive: true });
    // both look like bwq outputs, so the working directory is the only reason to refuse
    for (const d of [outer, here]) writeFileSync(join(d, 'quantize-report.json'), JSON.stringify({ bwq_version: '0.1.0' }));
    const before = snapshot(outer);
    const cwd = process.cwd();
    process.chdir(here);
    try {
      const r = await runCli('quantize', ...FAST, '-o', '.', '--force');
      expect(r.code).toBe(2);
      expect(oneLine(r.stderr)).toBe(`bwq: ${here}: is the working directory; not replacing it (choose another -o)`);
      const up = await runCli('quantize', ...FAST, '-o', '..', '--force');
      expect(oneLine(up.stderr)).toBe(`bwq: ${outer}: is an ancestor of the working directory; not replacing it (choose another -o)`);
    } finally {
      process.chdir(cwd);
    }
    expect(snapshot(outer)).toEqual(before);
  });

  it('replaces a previous bwq output; a run that fails keeps the old output intact', async () => {
    const out = join(work, 'prev');
    await quantizeModel(options(out), quiet);
    const first = snapshot(out);
    expect(JSON.parse(readFileSync(join(out, 'quantize-report.json'), 'utf8')).seed).toBe(0);
    // a failure after the temporary was made (missing calibration file): the old output stays
    await expect(quantizeModel(options(out, { force: true, calibFile: join(work, 'missing.txt') }), quiet)).rejects.toThrow(/file not found/);
    expect(snapshot(out)).toEqual(first);
    // a refusal up front: too little disk
    await expect(quantizeModel(options(out, { force: true, freeSpace: async () => 1000 }), quiet)).rejects.toThrow(/free/);
    expect(snapshot(out)).toEqual(first);
    // the replacement
    await quantizeModel(options(out, { force: true, seed: 7 }), quiet);
    expect(JSON.parse(readFileSync(join(out, 'quantize-report.json'), 'utf8')).seed).toBe(7);
    expect(readdirSync(work).filter((f) => f.startsWith('.'))).toEqual([]);
  });
});

describe('unwritable output paths fail fast, in one line', () => {
  const linux = process.platform === 'linux' && existsSync('/proc/self');
  it.runIf(linux)('-o under /proc: one line in under a second (Node\'s recursive mkdir would spin forever)', async () => {
    for (const out of [`/proc/bwq-test-${process.pid}/out`, `/proc/bwq-test-${process.pid}`]) {
      const t0 = performance.now();
      const r = await runCli('quantize', ...FAST, '-o', out);
      expect(performance.now() - t0).toBeLessThan(1000);
      expect(r.code).toBe(1);
      expect(oneLine(r.stderr)).toBe(`bwq: ${dirname(out) === '/proc' ? out : dirname(out)}: cannot create directory: this file system does not allow new directories here (ENOENT)`);
    }
  }, 5000);

  it.runIf(linux)('every writer: a safetensors file under /proc fails at once', async () => {
    const t0 = performance.now();
    const error = await writeSafetensors(`/proc/bwq-test-${process.pid}/x/t.safetensors`, []).catch((e: unknown) => e);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(error).toBeInstanceOf(BwqError);
    expect((error as BwqError).oneLine()).toBe(`/proc/bwq-test-${process.pid}: cannot create directory: this file system does not allow new directories here (ENOENT)`);
  }, 5000);

  it('a file in the middle of the path', async () => {
    writeFileSync(join(work, 'afile'), 'x');
    const r = await runCli('quantize', ...FAST, '-o', join(work, 'afile', 'out'));
    expect(oneLine(r.stderr)).toBe(`bwq: ${join(work, 'afile')}: cannot create a directory under it: it is not a directory`);
  });
});

describe('too little disk is refused up front', () => {
  it('the estimate covers what quantize writes', async () => {
    const out = join(work, 'sized');
    await quantizeModel(options(out), quiet);
    const model = await openModelDir(MODEL);
    try {
      const size = estimateOutputSize(await outputSizeInput(model, 'rtn', 0, ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json']));
      const bytes = (f: string): number => statSync(join(out, f)).size;
      expect(size.simulated).toBeGreaterThanOrEqual(bytes('model.safetensors'));
      expect(size.simulated).toBeLessThan(bytes('model.safetensors') * 1.01);
      expect(size.packed).toBeGreaterThanOrEqual(bytes('model.packed.safetensors'));
      expect(size.packed).toBeLessThan(bytes('model.packed.safetensors') * 1.01);
      const written = readdirSync(out).reduce((a, f) => a + bytes(f), 0);
      expect(size.total).toBeGreaterThan(written);
      expect(size.total).toBe(Math.max(size.spill, size.simulated + size.packed + size.copies + size.spillBlock) + size.checkpoint);
    } finally {
      await model.checkpoint.close();
    }
  });

  it('estimateOutputSize on a synthetic model', () => {
    const s = estimateOutputSize({
      tensors: [{ name: 'e', shape: [10, 64] }, { name: 'w', shape: [8, 64] }], linears: [{ name: 'w', rows: 8, cols: 64 }],
      rotatedWidths: [64], rank: 2, copiedBytes: 100,
    });
    const rot = 2 * (32 + 128) + 4 * (8 * 8 + 8 * 8);
    const h = (n: string): number => n.length + 128;
    expect(s.simulated).toBe(8 + rot + h('e') + 4 * 640 + h('w') + 4 * 512);
    const parts = 4 * 8 * 2 + 4 * 8 + 4 * 2 * (8 + 64);
    expect(s.packed).toBe(8 + rot + h('e') + 4 * 640 + 4 * h('w') + parts);
    expect(s.spill).toBe(5 * h('w') + 4 * 512 + parts);
    expect(s.copies).toBe(100 + (1 << 20));
  });

  it('a destination with less free space is refused in one line with both numbers, leaving nothing', async () => {
    const out = join(work, 'full', 'out');
    const t0 = performance.now();
    const error = await quantizeModel(options(out, { freeSpace: async () => 5 * 2 ** 20 }), quiet).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BwqError);
    expect((error as BwqError).oneLine()).toMatch(new RegExp(`^${out}: needs about 13\\.\\d MiB of disk space \\(simulated model 8\\.0 MiB, packed 2\\.4 MiB, copies 1\\.\\d MiB, one block's layer file 1\\.6 MiB, checkpoint 256 KiB; all layer files 6\\.\\d MiB\\) but its file system has 5\\.0 MiB free$`));
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(existsSync(join(work, 'full'))).toBe(false);
  });
});

describe('calibration state that cannot fit is refused up front', () => {
  it('estimate and bounds', () => {
    expect(calibrationMemory(32, 512, 256)).toEqual({ hiddenElements: 32 * 512 * 256, bytes: 32 * 512 * (4 * 256 + 8) });
    expect(() => checkCalibrationMemory(32, 512, 256, { totalMemory: 1e6 })).toThrow(
      /^--nsamples 32 × --seqlen 512 needs about 16\.1 MiB of calibration state \(16384 tokens × hidden size 256 float32\), more than this machine's 977 KiB of memory; lower --nsamples or --seqlen$/);
    expect(() => checkCalibrationMemory(32, 512, 256, { totalMemory: 1e12, maxTypedArrayLength: 1000 })).toThrow(/more than one typed array can hold \(1000 elements\)/);
    expect(checkCalibrationMemory(32, 512, 256).bytes).toBe(32 * 512 * 1032);
  });

  it('`--nsamples 100000` gives one line with the estimate (not "Invalid typed array length")', async () => {
    const out = join(work, 'huge');
    const r = await runCli('quantize', '--method', 'rtn', '--nsamples', '100000', '-o', out);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toMatch(/^bwq: --nsamples 100000 × --seqlen 512 needs about 49\.2 GiB of calibration state \(51200000 tokens × hidden size 256 float32\), more than (this machine's .* of memory|one typed array can hold)/);
    expect(existsSync(out)).toBe(false);
  });
});
