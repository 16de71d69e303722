/**
 * `bwq eval --kld BASE_DIR`: KL divergence against a base model on the same windows, in the same pass as the
 * perplexity (src/eval/kld.ts). The formula on distributions computed by hand; a model against itself;
 * the base model's perplexity against transformers' reference; a quantized model's perplexity against the
 * ordinary eval's.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ModelConfig } from '../../src/model/config.js';
import { evaluateKld, quantile } from '../../src/eval/kld.js';
import { runCli } from '../helpers/run-cli.js';

const root = mkdtempSync(join(tmpdir(), 'bwq-kld-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const reference = JSON.parse(readFileSync('test/fixtures/reference/reference.json', 'utf8')) as {
  models: Record<string, { ppl: { seqlen: number; windows: number; ppl: number }[] }>;
};

/** A runner whose every position has the same logits. */
function constantRunner(logits: number[]) {
  return {
    config: { vocabSize: logits.length } as ModelConfig,
    async logits(_ids: Int32Array, batch: number, seq: number): Promise<Float32Array> {
      const out = new Float32Array(batch * seq * logits.length);
      for (let i = 0; i < batch * seq; i++) out.set(logits, i * logits.length);
      return out;
    },
  };
}

describe('KL divergence', () => {
  it('matches the definition on distributions computed by hand', async () => {
    // P = (1/2, 1/2), Q = (3/4, 1/4): KL = ½ ln(½ / ¾) + ½ ln(½ / ¼) = ½ ln(4/3); both argmax 0 (ties go low);
    // next token 1 everywhere: Δp = ¼ − ½, NLL_Q = ln 4, NLL_P = ln 2 (logits are float32: ln 3 rounds at 1e-8)
    const ids = Int32Array.from([0, 1, 1, 1, 1, 1]);
    const r = await evaluateKld(constantRunner([Math.log(3), 0]), constantRunner([0, 0]), ids, { seqlen: 3 });
    expect(r.tokens).toBe(4);
    expect(r.kld.mean).toBeCloseTo(0.5 * Math.log(4 / 3), 7);
    expect(r.kld.median).toBeCloseTo(0.5 * Math.log(4 / 3), 7);
    expect(r.top1Agreement).toBe(1);
    expect(r.meanDeltaP).toBeCloseTo(-0.25, 7);
    expect(r.ppl).toBeCloseTo(4, 6);
    expect(r.basePpl).toBeCloseTo(2, 6);
    expect(quantile(Float64Array.from([1, 2, 3, 4, 5]), 0.99)).toBeCloseTo(4.96, 12);
  });

  it('is zero for a model against itself, and the base perplexity is transformers\'', async () => {
    const expected = reference.models['sotu-llama']!.ppl.find((p) => p.seqlen === 256)!;
    const r = await runCli('eval', 'models/sotu-llama', '--kld', 'models/sotu-llama', '--seqlen', '256',
      '--max-windows', String(expected.windows), '--json');
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.kld.mean).toBe(0);
    expect(out.kld.max).toBe(0);
    expect(out.kld.top1Agreement).toBe(1);
    expect(out.kld.meanDeltaP).toBe(0);
    expect(Math.abs(out.kld.basePpl / expected.ppl - 1)).toBeLessThan(1e-5);
    expect(out.ppl).toBe(out.kld.basePpl);
  });

  it('of a quantized model against the float one, with the ordinary eval\'s perplexity', async () => {
    const outDir = join(root, 'q');
    expect((await runCli('quantize', '-o', outDir, '--method', 'rtn', '--nsamples', '2', '--seqlen', '128',
      '--stat-tokens', '128', '--device', 'cpu')).code).toBe(0);
    const flags = ['--seqlen', '128', '--max-windows', '6', '--json'];
    const plain = JSON.parse((await runCli('eval', outDir, ...flags)).stdout);
    const r = await runCli('eval', outDir, '--kld', 'models/sotu-llama', ...flags);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    // the same logits' NLL, summed in another order (the ordinary eval reduces inside onnxruntime's graph)
    expect(Math.abs(out.ppl / plain.ppl - 1)).toBeLessThan(1e-5);
    expect(out.kld.mean).toBeGreaterThan(0.01);
    expect(out.kld.median).toBeLessThanOrEqual(out.kld.p99);
    expect(out.kld.p99).toBeLessThanOrEqual(out.kld.max);
    expect(out.kld.top1Agreement).toBeGreaterThan(0);
    expect(out.kld.top1Agreement).toBeLessThan(1);
    expect(out.kld.basePpl).toBeLessThan(out.ppl);
  });

  it('refuses a missing base directory in one line', async () => {
    const r = await runCli('eval', 'models/sotu-llama', '--kld', join(root, 'none'), '--max-windows', '1');
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});
