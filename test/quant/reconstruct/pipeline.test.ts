/**
 * Reconstruction inside `bwq quantize` on the bundled model (4 windows × 128 tokens): it lowers the first
 * block's output MSE against the float block below the calibrated (no-reconstruction) block's, the frozen
 * student is what the runtime then runs (the report's block output error drops too), and the CLI flags.
 */
import { describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { quantizeModel, type QuantizeOptions } from '../../../src/pipeline/quantize.js';
import { createProgress } from '../../../src/cli/progress.js';
import { parseQuantizeOptions } from '../../../src/cli/commands/quantize.js';
import { DEFAULT_RECONSTRUCT } from '../../../src/pipeline/reconstruct.js';
import { runCli } from '../../helpers/run-cli.js';
import { tempDirs } from '../../helpers/temp-dirs.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const modelDir = join(root, 'models/sotu-llama');
const temp = tempDirs();
const quiet = createProgress({ quiet: true });

function options(outDir: string, extra: Partial<QuantizeOptions>): QuantizeOptions {
  return {
    modelDir, outDir, method: 'bwta', aBits: 'ternary', calibFile: join(root, 'calibration/sotu-calib.txt'),
    nsamples: 4, seqlen: 128, seqlenExplicit: true, rank: 8, seed: 0, force: false, statTokens: 192, device: 'cpu', ...extra,
  };
}

describe('block-wise reconstruction in the pipeline (bundled model)', () => {
  it('lowers block 0\'s output MSE below the calibrated block\'s and the propagated block error with it', async () => {
    const dir = temp();
    const plain = await quantizeModel(options(join(dir, 'plain'), {}), quiet);
    const rec = await quantizeModel(options(join(dir, 'rec'), {
      reconstruct: { ...DEFAULT_RECONSTRUCT, iterations: 40, evalWindows: 4 },
    }), quiet);
    const r0 = rec.layers[0]!.reconstruction!;
    expect(plain.layers[0]!.reconstruction).toBeUndefined();
    expect(r0.kept).toBe(true);
    expect(r0.stageLengths).toEqual([0, 7, 7, 6, 20]);
    // measured: 0.167 → 0.067 (−60 %)
    expect(r0.lossAfter).toBeLessThan(0.6 * r0.lossBefore);
    // block 0 sees the embeddings in both runs: the runtime's block error (vs the float block) follows the loss
    // (measured 0.880 → 0.558)
    expect(rec.layers[0]!.blockOutputRelError).toBeLessThan(plain.layers[0]!.blockOutputRelError - 0.2);
    const report = JSON.parse(await readFile(join(dir, 'rec', 'quantize-report.json'), 'utf8')) as { layers: Array<{ reconstruction?: { lossAfter: number } }> };
    expect(report.layers[0]!.reconstruction!.lossAfter).toBeCloseTo(r0.lossAfter, 12);
  }, 900_000);
});

describe('reconstruction flags', () => {
  const parse = (raw: Record<string, unknown>) => parseQuantizeOptions(undefined, { output: 'x', ...raw });

  it('bwta reconstructs by default, --no-reconstruct does not; bwla and rtn only with --reconstruct', () => {
    expect(parse({ method: 'bwta' }).reconstruct).toEqual(DEFAULT_RECONSTRUCT);
    expect(parse({ method: 'bwta', reconstruct: false }).reconstruct).toBeUndefined();
    expect(parse({ method: 'bwla' }).reconstruct).toBeUndefined();
    expect(parse({ method: 'rtn', reconstruct: true }).reconstruct).toEqual(DEFAULT_RECONSTRUCT);
  });

  it('iterations, learning rates, stages and the schedule fractions', () => {
    const o = parse({
      method: 'bwla', reconstruct: true, recIterations: '50', recBatch: '2', recLrWeight: '1e-2', recLrScale: '0.001',
      recLrAct: '0', recStages: '15, 7,3', recFinalFraction: '0.25', recHandover: '0', recAlign: true,
    }).reconstruct!;
    expect(o).toEqual({
      iterations: 50, batch: 2, lrWeight: 0.01, lrScale: 0.001, lrAct: 0, levels: [15, 7, 3], finalFraction: 0.25,
      handover: 0, align: true, evalWindows: DEFAULT_RECONSTRUCT.evalWindows,
    });
    expect(parse({ method: 'bwta', recStages: 'none' }).reconstruct!.levels).toEqual([]);
    expect(parse({ method: 'bwta', recAlign: false }).reconstruct!.align).toBe(false);
  });

  it('refuses bad values and reconstruction flags without the reconstruction, in one line with exit code 2', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--rec-stages', '8'], /--rec-stages: stage levels must be odd integers ≥ 3 \(got 8\)/],
      [['--rec-stages', '5,7'], /must decrease/],
      [['--rec-stages', '9;7'], /comma-separated list/],
      [['--rec-iterations', '0'], /--rec-iterations must be at least 1/],
      [['--rec-final-fraction', '0'], /--rec-final-fraction must be in \(0, 1\]/],
      [['--rec-lr-weight', 'fast'], /--rec-lr-weight must be a number/],
      [['--no-reconstruct', '--rec-iterations', '5'], /--rec-iterations needs the reconstruction \(drop --no-reconstruct\)/],
      [['--no-reconstruct', '--rec-align'], /--rec-align needs the reconstruction/],
    ];
    for (const [flags, message] of cases) {
      const r = await runCli('quantize', '-o', join(temp(), 'out'), '--method', 'bwta', ...flags);
      expect(r.code, flags.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
    const r = await runCli('quantize', '-o', join(temp(), 'out'), '--method', 'rtn', '--rec-batch', '2');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--rec-batch needs the reconstruction \(--reconstruct\)/);
  });
});
