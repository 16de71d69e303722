/**
 * `bwq quantize --device`: block forwards run in the runtime; the report names the device; --device cuda
 * without a usable GPU fails in one line (this machine and CI have none) and a bad value is a usage error.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/run-cli.js';
import { runtimeAvailable } from '../../src/eval/backend.js';
import { GPU_CALIBRATION, formatDuration } from '../../src/pipeline/quantize.js';

const root = mkdtempSync(join(tmpdir(), 'bwq-qdevice-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const small = ['--nsamples', '2', '--seqlen', '64', '--stat-tokens', '64', '--rank', '0'];

describe('bwq quantize --device', () => {
  it('runs the blocks on the CPU runtime and records the device in the report', async () => {
    const out = join(root, 'cpu');
    const r = await runCli('quantize', 'test/fixtures/models/tiny-llama', '-o', out, '--method', 'rtn', '--device', 'cpu', ...small, '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).device).toMatch(/^cpu \(/);
    expect(JSON.parse(readFileSync(join(out, 'quantize-report.json'), 'utf8')).device).toMatch(/^cpu \(/);
  });

  it.runIf(runtimeAvailable())('--device cuda without a usable GPU is a one-line error, and nothing is written', async () => {
    const { cudaAvailable } = await import('./cuda-probe.js');
    if (cudaAvailable()) return;  // a GPU machine: nothing to refuse
    const out = join(root, 'cuda');
    const r = await runCli('quantize', 'test/fixtures/models/tiny-llama', '-o', out, '--method', 'rtn', '--device', 'cuda', ...small);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/CUDA unavailable/);
    expect(() => readFileSync(join(out, 'config.json'))).toThrow();
  });

  it('keeps the CPU calibration defaults (32 windows) when the blocks run on the CPU', async () => {
    const out = join(root, 'defaults');
    const r = await runCli('quantize', 'test/fixtures/models/tiny-llama', '-o', out, '--method', 'rtn', '--device', 'cpu',
      '--seqlen', '32', '--stat-tokens', '64', '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).nsamples).toBe(32);
    expect(GPU_CALIBRATION).toEqual({ nsamples: 128, seqlen: 2048 });
  });

  it('formats the time left per block', () => {
    expect([5.4, 75, 3700].map(formatDuration)).toEqual(['5 s', '1 min 15 s', '1 h 1 min']);
  });

  it('refuses an unknown device before reading anything', async () => {
    const r = await runCli('quantize', 'no/such/model', '-o', join(root, 'x'), '--method', 'rtn', '--device', 'tpu');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--device must be auto, cuda or cpu/);
  });
});
