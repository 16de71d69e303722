/**
 * The host memory bound of `bwq quantize` (docs/FORMATS.md "Memory", src/pipeline/host-memory.ts) on a model
 * larger than the bound: a random-weight Llama of 48 blocks (hidden 512, intermediate 1536; 663 MB of float32
 * weights) quantized in a child process (bin/bwq.js, the built CLI). Its peak RSS — getrusage's maxRSS recorded in
 * quantize-report.json, and /usr/bin/time's when the machine has it — must stay below the model's size and within
 * the bound, which is well below the model's size: the pipeline never holds the model whole.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDirs } from '../helpers/temp-dirs.js';
import { writeRandomLlama } from '../helpers/random-llama.js';
import { hostMemoryBound } from '../../src/pipeline/host-memory.js';

const tmp = tempDirs();
const BIN = resolve('bin/bwq.js');
const TIME = '/usr/bin/time';

describe('bwq quantize host memory', () => {
  it('a 663 MB model quantizes within the stated bound (385 MB), below the model size', async () => {
    const root = tmp('bwq-host-memory-');
    const model = join(root, 'model');
    const shape = { hiddenSize: 512, intermediateSize: 1536, layers: 48, heads: 8, kvHeads: 8 };
    const modelBytes = await writeRandomLlama(model, shape);
    const bound = hostMemoryBound(
      { hiddenSize: 512, intermediateSize: 1536, numHeads: 8, numKvHeads: 8, headDim: 64, vocabSize: 4096 },
      { method: 'rtn', nsamples: 2, seqlen: 64, batch: 2, statTokens: 512, grams: false, device: 'cpu' },
    );
    // the precondition: the weights are clearly more than the memory the bound allows
    expect(modelBytes).toBe(662_898_688); // 48 × 13 635 584 + embeddings 8 388 608 + final norm
    expect(bound.bytes).toBeLessThan(0.6 * modelBytes);

    const out = join(root, 'q');
    const args = [BIN, 'quantize', model, '-o', out, '--method', 'rtn', '--nsamples', '2', '--seqlen', '64', '--device', 'cpu', '--json'];
    const timed = existsSync(TIME);
    const run = timed
      ? spawnSync(TIME, ['-v', process.execPath, ...args], { encoding: 'utf8', env: { ...process.env, CI: 'true' } })
      : spawnSync(process.execPath, args, { encoding: 'utf8', env: { ...process.env, CI: 'true' } });
    expect(run.status, run.stderr.slice(-2000)).toBe(0);

    const report = JSON.parse(readFileSync(join(out, 'quantize-report.json'), 'utf8')) as {
      memory: { peak_rss_bytes: number; host_bound_bytes: number; host_bound_parts: Record<string, number> };
    };
    expect(report.memory.host_bound_bytes).toBe(bound.bytes);
    expect(report.memory.host_bound_parts).toEqual(bound.parts);
    const peaks = [report.memory.peak_rss_bytes];
    if (timed) {
      const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(run.stderr);
      expect(m, 'GNU time -v output').not.toBeNull();
      peaks.push(Number(m![1]) * 1024);
    }
    for (const peak of peaks) {
      expect(peak).toBeGreaterThan(100 * 2 ** 20); // a real measurement (Node alone is ~50 MB)
      expect(peak).toBeLessThan(modelBytes);
      expect(peak).toBeLessThanOrEqual(bound.bytes);
    }
  }, 120_000);
});
