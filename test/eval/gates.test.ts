/**
 * Quality gates of `bwq eval` (src/eval/gates.ts): --max-ppl, --max-ppl-ratio with --base, --max-kld with --kld.
 * The measured values are checked against transformers: the perplexities of reference.json and the KL divergence
 * and perplexity ratio that test/fixtures/gates/make_gate_reference.py computes from the transformers logits of
 * tiny-mistral and tiny-llama. A gate set just above a value passes, just below fails with exit 3, one stderr line
 * with both numbers, and (with --json) the one JSON object carrying the gates.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { GATE_FAILED_EXIT_CODE } from '../../src/errors.js';
import { checkGates, describeGate } from '../../src/eval/gates.js';
import { runCli } from '../helpers/run-cli.js';

const gateRef = JSON.parse(readFileSync('test/fixtures/gates/reference.json', 'utf8')) as {
  seqlen: number; windows: number; mean_kld: number; ppl: number; base_ppl: number; ppl_ratio: number;
};
const reference = JSON.parse(readFileSync('test/fixtures/reference/reference.json', 'utf8')) as {
  models: Record<string, { ppl: { seqlen: number; windows: number; ppl: number }[] }>;
};
const TINY = ['test/fixtures/models/tiny-mistral', '--seqlen', String(gateRef.seqlen), '--max-windows', String(gateRef.windows)];
const BASE = 'test/fixtures/models/tiny-llama';

interface GateJson { gate: string; limit: number; value: number; passed: boolean }

function relErr(a: number, b: number): number {
  return Math.abs(a / b - 1);
}

describe('quality gates', () => {
  it('checkGates: a value equal to the limit passes, above it fails, NaN fails', () => {
    const r = checkGates({ maxPpl: 10, maxPplRatio: 1.5, maxKld: 0.1 }, { ppl: 10, basePpl: 5, meanKld: Number.NaN });
    expect(r.map((g) => [g.gate, g.value, g.passed])).toEqual([['max-ppl', 10, true], ['max-ppl-ratio', 2, false], ['max-kld', Number.NaN, false]]);
    expect(describeGate(r[1]!)).toBe('--max-ppl-ratio: perplexity ratio to the base model 2 > 1.5');
  });

  it('--max-kld: the mean KL divergence against --kld BASE_DIR is transformers\'; fails just below it with exit 3', async () => {
    const pass = await runCli('eval', ...TINY, '--kld', BASE, '--max-kld', String(gateRef.mean_kld * 1.001), '--json');
    expect(pass.code, pass.stderr).toBe(0);
    const passed = JSON.parse(pass.stdout) as { gates: GateJson[] };
    expect(passed.gates).toHaveLength(1);
    expect(passed.gates[0]!.gate).toBe('max-kld');
    expect(passed.gates[0]!.passed).toBe(true);
    expect(relErr(passed.gates[0]!.value, gateRef.mean_kld)).toBeLessThan(1e-6);

    const limit = gateRef.mean_kld * 0.999;
    const fail = await runCli('eval', ...TINY, '--kld', BASE, '--max-kld', String(limit), '--json');
    expect(fail.code).toBe(GATE_FAILED_EXIT_CODE);
    expect(GATE_FAILED_EXIT_CODE).toBe(3);
    const lines = fail.stderr.trim().split('\n').filter((l) => l.startsWith('bwq: '));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/tiny-mistral: quality gate failed: --max-kld: mean KL divergence 0\.6549\d* > 0\.6542\d*$/);
    // one JSON object: the result with the gates, no error object after it
    const failed = JSON.parse(fail.stdout) as { gates: GateJson[]; kld: { mean: number } };
    expect(failed.gates[0]).toMatchObject({ gate: 'max-kld', limit, passed: false });
    expect(failed.gates[0]!.value).toBe(failed.kld.mean);
  });

  it('--max-ppl-ratio with --base: perplexity over the base model\'s on the same windows', async () => {
    const limit = gateRef.ppl_ratio * 0.999;
    const fail = await runCli('eval', ...TINY, '--base', BASE, '--max-ppl-ratio', String(limit));
    expect(fail.code).toBe(GATE_FAILED_EXIT_CODE);
    expect(fail.stdout).toMatch(/gate {8}--max-ppl-ratio: perplexity ratio to the base model 0\.8272\d* > 0\.8264\d* {3}FAILED/);
    expect(fail.stderr.trim().split('\n').filter((l) => l.startsWith('bwq: '))).toEqual([
      expect.stringMatching(/quality gate failed: --max-ppl-ratio: perplexity ratio to the base model 0\.8272\d* > 0\.8264\d*$/),
    ]);

    const pass = await runCli('eval', ...TINY, '--base', BASE, '--max-ppl-ratio', String(gateRef.ppl_ratio * 1.001), '--max-ppl', '6000', '--json');
    expect(pass.code, pass.stderr).toBe(0);
    const out = JSON.parse(pass.stdout) as { ppl: number; gates: GateJson[]; kld: { basePpl: number } };
    expect(relErr(out.kld.basePpl, gateRef.base_ppl)).toBeLessThan(1e-6);
    expect(out.gates.map((g) => [g.gate, g.passed])).toEqual([['max-ppl', true], ['max-ppl-ratio', true]]);
    expect(relErr(out.gates[1]!.value, gateRef.ppl_ratio)).toBeLessThan(1e-6);
    expect(out.gates[0]!.value).toBe(out.ppl);
  });

  it('--max-ppl on the bundled model: transformers\' perplexity passes above and fails below', async () => {
    const expected = reference.models['sotu-llama']!.ppl.find((p) => p.seqlen === 256)!;
    const flags = ['eval', 'models/sotu-llama', '--seqlen', '256', '--max-windows', String(expected.windows)];
    const fail = await runCli(...flags, '--max-ppl', '66.5');
    expect(fail.code).toBe(GATE_FAILED_EXIT_CODE);
    expect(fail.stderr).toMatch(/quality gate failed: --max-ppl: perplexity 66\.607\d* > 66\.5\n$/);
    const pass = await runCli(...flags, '--max-ppl', '66.7', '--json');
    expect(pass.code, pass.stderr).toBe(0);
    const out = JSON.parse(pass.stdout) as { gates: GateJson[] };
    expect(relErr(out.gates[0]!.value, expected.ppl)).toBeLessThan(1e-5);
  });

  it('refuses gates without the model they need, bad limits and two different base models (exit 2, before any work)', async () => {
    const cases: [string[], RegExp][] = [
      [['--max-kld', '0.1'], /--max-kld needs --kld BASE_DIR/],
      [['--max-ppl-ratio', '1.2'], /--max-ppl-ratio needs the base model/],
      [['--max-ppl', '12x'], /--max-ppl must be a number, got "12x"/],
      [['--max-ppl', '0'], /--max-ppl must be a positive number/],
      [['--base', BASE], /--base BASE_DIR is the base model of --max-ppl-ratio/],
      [['--max-ppl-ratio', '1.2', '--base', BASE, '--kld', 'models/sotu-llama'], /--base and --kld name different models/],
      [['--tasks', 'questions.jsonl', '--max-ppl', '10'], /--max-ppl, --max-ppl-ratio and --max-kld gate the perplexity evaluation, not --tasks/],
    ];
    for (const [flags, message] of cases) {
      const r = await runCli('eval', ...TINY, ...flags);
      expect(r.code, flags.join(' ')).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
  });
});
