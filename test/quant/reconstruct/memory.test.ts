/**
 * The calibration memory check counts the reconstruction's float stream (the teacher's hidden states, one more
 * float32 per calibration token and hidden unit), its training step and its block parameter state
 * (src/pipeline/calib-memory.ts), and `bwq quantize` applies it when the run reconstructs.
 */
import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import { blockWeightCount, calibrationMemory, checkCalibrationMemory, type ReconstructionShape } from '../../../src/pipeline/calib-memory.js';
import { runCli } from '../../helpers/run-cli.js';
import { tempDirs } from '../../helpers/temp-dirs.js';

const temp = tempDirs();
// the bundled model's block (hidden 256, intermediate 768, 8 heads, 4 kv heads, head_dim 32)
const bundled: ReconstructionShape = { batch: 1, intermediateSize: 768, numHeads: 8, numKvHeads: 4, headDim: 32 };
// Llama-2-7B's block
const llama7b: ReconstructionShape = { batch: 1, intermediateSize: 11008, numHeads: 32, numKvHeads: 32, headDim: 128 };

describe('calibration memory with block-wise reconstruction', () => {
  it('adds the float stream per token and the step and parameter state per block', () => {
    const plain = calibrationMemory(32, 512, 256);
    const rec = calibrationMemory(32, 512, 256, bundled);
    expect(rec.hiddenElements).toBe(plain.hiddenElements);
    expect(rec.reconstruction!.floatStreamBytes).toBe(4 * 32 * 512 * 256);
    expect(rec.bytes).toBe(plain.bytes + rec.reconstruction!.floatStreamBytes + rec.reconstruction!.stepBytes + rec.reconstruction!.parameterBytes);
    // step: 2·(10·256 + 7·256 + 8·128 + 5·768) = 18432 floats per token, (2·8 + 3)·512² per window of attention
    expect(rec.reconstruction!.stepBytes).toBe(4 * 512 * 18432 + 4 * 19 * 512 * 512);
    // parameters: the seven linears hold 2·256·256 + 2·256·128 + 3·256·768 = 786432 weights
    expect(blockWeightCount(256, bundled)).toBe(786432);
    expect(rec.reconstruction!.parameterBytes).toBe(4 * 7 * 786432 + 4 * 256 * 768);
    // the float stream doubles what grows with the calibration tokens
    const big = calibrationMemory(3200, 512, 256, bundled);
    const bigPlain = calibrationMemory(3200, 512, 256);
    expect(big.bytes - bigPlain.bytes - big.reconstruction!.stepBytes - big.reconstruction!.parameterBytes).toBe(4 * 3200 * 512 * 256);
  });

  it('the Llama-2-7B block at 1 × 2048 tokens per step: 202 M weights, 5.7 GB of parameter state', () => {
    expect(blockWeightCount(4096, llama7b)).toBe(202_375_168);
    const { reconstruction: r } = calibrationMemory(128, 2048, 4096, llama7b);
    expect(r!.parameterBytes).toBe(28 * 202_375_168 + 4 * 4096 * 11008);
    expect(r!.floatStreamBytes).toBe(4 * 128 * 2048 * 4096);
  });

  it('refuses a run whose float stream does not fit although the calibration alone would', () => {
    const plain = calibrationMemory(64, 512, 256).bytes;
    const limit = plain + 1000;
    expect(checkCalibrationMemory(64, 512, 256, { totalMemory: limit }).bytes).toBe(plain);
    expect(() => checkCalibrationMemory(64, 512, 256, { totalMemory: limit }, bundled)).toThrow(
      /^--nsamples 64 × --seqlen 512 needs about 141 MiB of calibration state \(32768 tokens × hidden size 256 float32; with reconstruction: float stream 32\.0 MiB, training step 55\.0 MiB, block parameters 21\.\d MiB\), more than this machine's 32\.\d MiB of memory; lower --nsamples or --seqlen$/);
  });

  it('`bwq quantize --method bwta` (reconstruction on) counts the float stream: refused in one line, nothing written', async () => {
    // nsamples such that the calibration alone (1032 bytes per token) fits this machine's memory and, with the
    // float stream (2056 bytes per token), does not
    const tokens = Math.ceil(totalmem() / 1500);
    const nsamples = Math.ceil(tokens / 512);
    expect(calibrationMemory(nsamples, 512, 256).bytes).toBeLessThan(totalmem());
    const out = join(temp(), 'out');
    const r = await runCli('quantize', '--method', 'bwta', '--nsamples', String(nsamples), '--seqlen', '512', '-o', out);
    expect(r.code).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^bwq: --nsamples ${nsamples} × --seqlen 512 needs about .* of calibration state \\(${nsamples * 512} tokens × hidden size 256 float32; with reconstruction: float stream .*\\), more than this machine's .* of memory`));
    expect(existsSync(out)).toBe(false);
  }, 120_000);
});
