/**
 * `bwq bench --e2e`: end-to-end speed of whole forwards in the runtime, FP16 against the packed formats, on a
 * model with random weights from a real config (bench/configs/*.json, or any config.json):
 *  - prefill: one forward of `prefill` tokens at batch 1 (its last position's logits), best of `repeats`;
 *  - decode: a `prompt`-token prefill per sequence, then `steps` one-token forwards at each batch size, each
 *    returning the batch's last logits to the host (as generation does); tokens/s = batch·steps / seconds.
 * The input ids are fixed (not sampled), so the host does no sampling work inside the timing.
 */
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { BwqError } from '../errors.js';
import { parseModelConfig, type ModelConfig } from '../model/config.js';
import { PACKAGE_ROOT } from '../package-paths.js';
import { loadRuntimeFromSource } from '../runtime/engine.js';
import { randomModelSource, type RandomVariant } from '../runtime/random-model.js';
import type { RuntimeDevice } from '../runtime/session.js';

/** bench/configs/*.json by name (llama-2-70b for --quantize: its FP16 weights do not fit one GPU for --e2e) */
export const BENCH_CONFIGS = ['llama-2-7b', 'llama-3-8b', 'qwen3-8b', 'llama-2-70b'] as const;

export interface E2eOptions {
  device: RuntimeDevice;
  variants: readonly RandomVariant[];
  prefill: number;
  prompt: number;
  steps: number;
  batches: readonly number[];
  repeats: number;
  /** progress lines (stderr) */
  log?: (line: string) => void;
}

export interface E2eDecodeRow {
  batch: number; prompt: number; steps: number; seconds: number; tokensPerSecond: number;
  /** the steps replayed a recorded step (CUDA graph) */
  replayed: boolean;
}
export interface E2eRow {
  variant: RandomVariant;
  device: string;
  modelBytes: number;
  loadSeconds: number;
  prefill: { tokens: number; seconds: number; tokensPerSecond: number };
  decode: E2eDecodeRow[];
}
export interface E2eReport { config: string; rows: E2eRow[]; ratios: { name: string; value: number }[] }

/** A config by name (bench/configs/NAME.json) or path. */
export function loadBenchConfig(nameOrPath: string): { name: string; config: ModelConfig; raw: Record<string, unknown> } {
  const path = (BENCH_CONFIGS as readonly string[]).includes(nameOrPath)
    ? join(PACKAGE_ROOT, 'bench', 'configs', `${nameOrPath}.json`) : nameOrPath;
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new BwqError(`cannot read the config: ${(error as Error).message}`, { file: path, cause: error });
  }
  return { name: basename(path).replace(/\.json$/, ''), config: parseModelConfig(json, path), raw: json as Record<string, unknown> };
}

function fixedIds(count: number, vocab: number): Int32Array {
  const ids = new Int32Array(count);
  for (let i = 0; i < count; i++) ids[i] = (i * 7919 + 13) % vocab;
  return ids;
}

export async function runE2eBench(configName: string, o: E2eOptions): Promise<E2eReport> {
  const { name, config } = loadBenchConfig(configName);
  const log = o.log ?? (() => undefined);
  const rows: E2eRow[] = [];
  for (const variant of o.variants) {
    const t0 = performance.now();
    const model = await loadRuntimeFromSource(randomModelSource(config, variant, `random:${name}:${variant}`), { device: o.device });
    const loadSeconds = (performance.now() - t0) / 1000;
    try {
      log(`${variant}: loaded ${(model.modelBytes / 2 ** 30).toFixed(2)} GiB in ${loadSeconds.toFixed(1)} s`);
      const s1 = model.openSession(1, o.prefill);
      let best = Infinity;
      const ids = fixedIds(o.prefill, config.vocabSize);
      try {
        for (let r = 0; r <= o.repeats; r++) {  // the first run warms up
          s1.reset();
          const t = performance.now();
          s1.forward(ids, o.prefill, 'last');
          const dt = (performance.now() - t) / 1000;
          if (r > 0) best = Math.min(best, dt);
        }
      } finally {
        s1.close();
      }
      log(`${variant}: prefill ${o.prefill} in ${(best * 1000).toFixed(1)} ms`);
      const decode: E2eDecodeRow[] = [];
      for (const batch of o.batches) {
        const s = model.openSession(batch, o.prompt + o.steps);
        try {
          const prompt = fixedIds(batch * o.prompt, config.vocabSize);
          const step = fixedIds(batch, config.vocabSize);
          const run = (steps: number): number => {
            s.reset();
            s.forward(prompt, o.prompt, 'none');
            const t = performance.now();
            for (let i = 0; i < steps; i++) s.forward(step, 1, 'last');
            return (performance.now() - t) / 1000;
          };
          run(Math.min(8, o.steps));  // warm-up
          const seconds = run(o.steps);
          decode.push({ batch, prompt: o.prompt, steps: o.steps, seconds, tokensPerSecond: (batch * o.steps) / seconds,
            replayed: s.replaying });
          log(`${variant}: decode batch ${batch}: ${((batch * o.steps) / seconds).toFixed(1)} tokens/s` +
            `${s.replaying ? ' (recorded step replayed)' : ''}`);
        } finally {
          s.close();
        }
      }
      rows.push({ variant, device: model.device, modelBytes: model.modelBytes, loadSeconds,
        prefill: { tokens: o.prefill, seconds: best, tokensPerSecond: o.prefill / best }, decode });
    } finally {
      model.close();
    }
  }
  const ratios: { name: string; value: number }[] = [];
  const fp16 = rows.find((r) => r.variant === 'fp16');
  for (const r of rows) {
    if (fp16 === undefined || r === fp16) continue;
    ratios.push({ name: `${r.variant} prefill ${o.prefill} / fp16`, value: fp16.prefill.seconds / r.prefill.seconds });
    for (const d of r.decode) {
      const base = fp16.decode.find((x) => x.batch === d.batch);
      if (base !== undefined) ratios.push({ name: `${r.variant} decode batch ${d.batch} / fp16`, value: d.tokensPerSecond / base.tokensPerSecond });
    }
  }
  return { config: name, rows, ratios };
}

export function formatE2e(r: E2eReport): string {
  const lines = [`e2e ${r.config} (random weights) on ${r.rows[0]?.device ?? '?'}`,
    'variant  weights GiB  prefill tok/s  ' + (r.rows[0]?.decode.map((d) => `decode b${d.batch} tok/s`).join('  ') ?? '')];
  for (const row of r.rows) {
    lines.push(`${row.variant.padEnd(8)} ${(row.modelBytes / 2 ** 30).toFixed(2).padStart(11)}  ${row.prefill.tokensPerSecond.toFixed(0).padStart(13)}  ` +
      row.decode.map((d) => d.tokensPerSecond.toFixed(1).padStart(15)).join('  '));
  }
  for (const x of r.ratios) lines.push(`${x.name}: ${x.value.toFixed(2)}x`);
  return lines.join('\n');
}
