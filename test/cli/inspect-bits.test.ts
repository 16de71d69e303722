/**
 * `bwq inspect OUT_DIR` counts honest bits per weight: every byte of the packed file against the original
 * model's parameters, per class, and for the quantized linears alone. RTN on the bundled model is exact by
 * hand: every K is a multiple of 32, so the signs take 1 bit per linear weight, and each of the 10,240 output
 * channels (4 layers × (256 + 128 + 128 + 256 + 768 + 768 + 256)) one float32 scale.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/run-cli.js';

const root = mkdtempSync(join(tmpdir(), 'bwq-bits-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('inspect: bits per weight', () => {
  it('counts every byte of the packed file, per class and for the linears alone', async () => {
    const out = join(root, 'rtn');
    expect((await runCli('quantize', '-o', out, '--method', 'rtn', '--nsamples', '2', '--seqlen', '64', '--stat-tokens', '64',
      '--device', 'cpu')).code).toBe(0);
    const r = await runCli('inspect', out, '--json');
    expect(r.code, r.stderr).toBe(0);
    const bits = JSON.parse(r.stdout).packed.bits as {
      originalParameters: number; perWeight: number; linearsPerWeight: number;
      classes: { name: string; bytes: number; bitsPerWeight: number }[];
    };
    const linearWeights = 4 * (256 * 256 * 2 + 128 * 256 * 2 + 768 * 256 * 3);
    expect(bits.originalParameters).toBe(linearWeights + 4096 * 256 + (2 * 4 + 1) * 256);
    expect(bits.linearsPerWeight).toBeCloseTo(1 + (32 * 10240) / linearWeights, 12);
    const fileBytes = statSync(join(out, 'model.packed.safetensors')).size;
    expect(bits.perWeight).toBeCloseTo((8 * fileBytes) / bits.originalParameters, 12);
    const byName = Object.fromEntries(bits.classes.map((c) => [c.name, c]));
    expect(byName['signs']!.bytes).toBe(linearWeights / 8);
    expect(byName['scales']!.bytes).toBe(4 * 10240);
    expect(byName['embeddings']!.bytes).toBe(2 * 4096 * 256);  // bf16, as in the checkpoint
    expect(byName['low-rank']).toBeUndefined();
    const human = await runCli('inspect', out);
    expect(human.stdout).toMatch(/bits\/weight +\d+\.\d{3} over the 4,196,608 parameters of the original model \(the whole packed file\); the quantized linears alone 1\.104/);
  });
});
