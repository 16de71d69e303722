/**
 * `bwq bench --e2e` on the CPU with a small config (random weights): the report's shape, that the packed
 * models are smaller than FP16 by the expected factor, and the flag errors; and the runtime's one-line refusal
 * when a session cannot fit in memory.
 */
import { describe, expect, it } from 'vitest';
import { openModelDir } from '../../src/model/model-dir.js';
import { loadRuntime } from '../../src/runtime/engine.js';
import { runCli } from '../helpers/run-cli.js';

const CONFIG = 'test/fixtures/bench/tiny-llama-config.json';

describe('bwq bench --e2e', () => {
  it('runs FP16, BWLA and BWTA forwards and reports tokens/s and ratios', async () => {
    const r = await runCli('bench', '--e2e', '--config', CONFIG, '--device', 'cpu', '--prefill', '32', '--prompt', '8',
      '--steps', '4', '--batches', '1,2', '--json');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as {
      config: string;
      rows: { variant: string; modelBytes: number; device: string; prefill: { tokens: number; tokensPerSecond: number };
        decode: { batch: number; steps: number; tokensPerSecond: number; replayed: boolean }[] }[];
      ratios: { name: string; value: number }[];
    };
    expect(report.config).toBe('tiny-llama-config');
    expect(report.rows.map((x) => x.variant)).toEqual(['fp16', 'bwla', 'bwta']);
    for (const row of report.rows) {
      expect(row.device).toMatch(/^cpu \(/);
      expect(row.prefill.tokens).toBe(32);
      expect(row.prefill.tokensPerSecond).toBeGreaterThan(0);
      expect(row.decode.map((d) => d.batch)).toEqual([1, 2]);
      for (const d of row.decode) {
        expect(d.tokensPerSecond).toBeGreaterThan(0);
        expect(d.replayed).toBe(false);  // the CPU backend runs steps eagerly
      }
    }
    // bf16 linears (16 bits) against 1-bit signs + scales (+ rank-8 factors for BWLA); embeddings stay bf16
    const [fp16, bwla, bwta] = report.rows.map((x) => x.modelBytes) as [number, number, number];
    expect(bwta).toBeLessThan(0.6 * fp16);
    expect(bwla).toBeLessThan(0.7 * fp16);
    expect(report.ratios.map((x) => x.name)).toContain('bwta decode batch 1 / fp16');
  });

  it('refuses bad flags in one line', async () => {
    for (const args of [['--variants', 'fp32'], ['--batches', '0'], ['--device', 'tpu'], ['--prefill', 'x']]) {
      const r = await runCli('bench', '--e2e', '--config', CONFIG, ...args);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    const r = await runCli('bench', '--e2e', '--config', 'no/such/config.json', '--device', 'cpu');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^bwq: no\/such\/config\.json: cannot read the config/);
  });
});

describe('runtime memory', () => {
  it('refuses a session that cannot fit, naming the sizes, and stays usable', async () => {
    const model = await openModelDir('test/fixtures/models/tiny-llama');
    const rt = await loadRuntime(model, { device: 'cpu' });
    try {
      expect(() => rt.openSession(1 << 20, 1 << 16)).toThrow(/not enough memory on cpu .*: the KV cache and scratch need \d+ MiB beyond the model's \d+ MiB, \d+ MiB free/);
      const s = rt.openSession(1, 8);
      expect(s.forward(Int32Array.of(1, 2, 3), 3, 'last').length).toBe(model.config.vocabSize);
      s.close();
    } finally {
      rt.close();
      await model.checkpoint.close();
    }
  });
});
