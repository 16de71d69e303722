/**
 * A quantize run killed with SIGKILL after its first block resumes with --resume and writes the same bytes as
 * a run that was never interrupted; without --resume the checkpoint is refused in one line, and a resume with
 * other inputs (another seed) is refused by the fingerprint. The checkpoint is gone once OUT_DIR is in place.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { checkpointDirOf } from '../../src/pipeline/checkpoint.js';

const root = mkdtempSync(join(tmpdir(), 'bwq-resume-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const BIN = resolve('bin/bwq.js');
const ARGS = ['quantize', 'models/sotu-llama', '--method', 'bwla', '--nsamples', '4', '--seqlen', '128', '--stat-tokens', '128',
  '--rank', '2', '--device', 'cpu'];

function run(args: string[], killAfter?: RegExp): Promise<{ code: number | null; signal: string | null; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, CI: 'true' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      if (killAfter !== undefined && killAfter.test(stderr)) child.kill('SIGKILL');
    });
    child.on('close', (code, signal) => done({ code, signal, stderr }));
  });
}

const OUTPUT_FILES = ['model.safetensors', 'model.packed.safetensors', 'config.json'];

describe('quantize --resume', () => {
  it('continues a SIGKILLed run after its last finished block, with the same bytes as an uninterrupted run', async () => {
    const whole = join(root, 'whole');
    expect((await run([...ARGS, '-o', whole])).code).toBe(0);

    const out = join(root, 'resumed');
    const killed = await run([...ARGS, '-o', out], /layer 1\/4: done/);
    expect(killed.signal).toBe('SIGKILL');
    expect(existsSync(out)).toBe(false);
    const ckpt = checkpointDirOf(out);
    expect(JSON.parse(readFileSync(join(ckpt, 'state.json'), 'utf8')).completed).toBeGreaterThanOrEqual(1);

    const again = await run([...ARGS, '-o', out]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/an interrupted run left a checkpoint \(\d blocks done\) .* pass --resume to continue it, or --force to start over/);
    expect(again.stderr.trim().split('\n')).toHaveLength(1);

    const other = await run([...ARGS.map((a) => (a === '2' ? '3' : a)), '-o', out, '--resume']);
    expect(other.code).toBe(2);
    expect(other.stderr).toMatch(/was made with other inputs/);

    const resumed = await run([...ARGS, '-o', out, '--resume']);
    expect(resumed.code).toBe(0);
    expect(resumed.stderr).toMatch(/resumed after block \d of 4/);
    expect(existsSync(ckpt)).toBe(false);
    for (const f of OUTPUT_FILES) expect(readFileSync(join(out, f)).equals(readFileSync(join(whole, f))), f).toBe(true);
  }, 120_000);

  it('--force discards a checkpoint and starts over', async () => {
    const out = join(root, 'forced');
    const killed = await run([...ARGS, '-o', out], /layer 1\/4: done/);
    expect(killed.signal).toBe('SIGKILL');
    expect(existsSync(checkpointDirOf(out))).toBe(true);
    const forced = await run([...ARGS, '-o', out, '--force']);
    expect(forced.code).toBe(0);
    expect(forced.stderr).not.toMatch(/resumed/);
    expect(existsSync(checkpointDirOf(out))).toBe(false);
  }, 120_000);
});
