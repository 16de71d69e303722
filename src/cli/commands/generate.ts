/**
 * `bwq generate [MODEL_OR_OUT_DIR] --prompt TEXT`: text generation on the runtime engine (float model
 * directories and quantized OUT_DIRs alike), streamed to stdout, timings on stderr (docs/GENERATE.md).
 * Flags are checked before anything is read; the prompt length before the model is loaded.
 */
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { BwqError, usageError } from '../../errors.js';
import { openModelDir } from '../../model/model-dir.js';
import { loadTokenizer } from '../../model/tokenizer.js';
import { loadEosTokenIds } from '../../model/generation-config.js';
import { generate, type PhaseTiming, type StopReason } from '../../runtime/generate.js';
import { MAX_SEED } from '../../runtime/sampling.js';
import type { RuntimeDevice } from '../../runtime/session.js';
import { DEFAULT_MODEL_DIR } from '../../package-paths.js';
import { parseIntegerFlag, parseNumberFlag, printResult } from '../output.js';

const DEVICES: readonly RuntimeDevice[] = ['auto', 'cuda', 'cpu'];

interface GenerateFlags {
  prompt?: string;
  maxNewTokens?: string;
  temperature?: string;
  topP?: string;
  seed?: string;
  device?: string;
  json?: boolean;
}

export interface GenerateSummary {
  model: string;
  device: string;
  prompt: string;
  promptTokens: number;
  text: string;
  tokens: number[];
  prefill: PhaseTiming;
  decode: PhaseTiming;
  stopReason: StopReason;
}

interface GenerateSettings {
  prompt: string;
  maxNewTokens: number;
  temperature: number;
  topP: number;
  seed: number;
  device: RuntimeDevice;
}

/** Flag values → settings; a usage error (exit 2) for any bad one. */
export function parseGenerateFlags(flags: GenerateFlags): GenerateSettings {
  const prompt = flags.prompt ?? '';
  if (prompt === '') throw usageError('--prompt is required and must not be empty');
  const maxNewTokens = flags.maxNewTokens === undefined ? 64 : parseIntegerFlag('--max-new-tokens', flags.maxNewTokens, 1);
  const temperature = flags.temperature === undefined ? 0 : parseNumberFlag('--temperature', flags.temperature);
  if (temperature < 0) throw usageError(`--temperature must be 0 (greedy) or positive, got ${flags.temperature}`);
  const topP = flags.topP === undefined ? 1 : parseNumberFlag('--top-p', flags.topP);
  if (!(topP > 0 && topP <= 1)) throw usageError(`--top-p must be in (0, 1], got ${flags.topP}`);
  const seed = flags.seed === undefined ? 0 : parseIntegerFlag('--seed', flags.seed, 0);
  if (seed > MAX_SEED) throw usageError(`--seed must be at most ${MAX_SEED}, got ${flags.seed}`);
  const device = (flags.device ?? 'auto') as RuntimeDevice;
  if (!DEVICES.includes(device)) throw usageError(`--device must be one of ${DEVICES.join(', ')}, got "${flags.device}"`);
  return { prompt, maxNewTokens, temperature, topP, seed, device };
}

/** Runs generation; `onText` receives the streamed text (not called with --json). */
export async function runGenerate(modelArg: string | undefined, flags: GenerateFlags, onText?: (text: string) => void): Promise<GenerateSummary> {
  const settings = parseGenerateFlags(flags);
  const modelDir = modelArg === undefined ? DEFAULT_MODEL_DIR : resolve(modelArg);
  const model = await openModelDir(modelDir);
  try {
    const tokenizer = await loadTokenizer(modelDir);
    const promptIds = tokenizer.encode(settings.prompt);
    const maxPositions = model.config.maxPositionEmbeddings;
    const configFile = resolve(modelDir, 'config.json');
    if (promptIds.length === 0) throw usageError('--prompt encodes to no tokens');
    if (promptIds.length >= maxPositions) {
      throw new BwqError(
        `the prompt has ${promptIds.length} tokens, not fewer than the model's max_position_embeddings ${maxPositions} (no room to generate)`,
        { file: configFile, exitCode: 2 },
      );
    }
    for (const id of promptIds) {
      if (id >= model.config.vocabSize) {
        throw new BwqError(`tokenizer produced id ${id} outside the model's vocabulary (${model.config.vocabSize})`, { file: resolve(modelDir, 'tokenizer.json') });
      }
    }
    const eosTokenIds = await loadEosTokenIds(modelDir, model.config, tokenizer);

    const { openRuntime } = await import('../../runtime/engine.js');
    // The KV cache needs no more than the prompt plus the new tokens.
    const maxSeq = Math.min(maxPositions, promptIds.length + settings.maxNewTokens);
    const session = await openRuntime(model, { device: settings.device, maxSeq, batch: 1 });
    try {
      const result = generate(session, tokenizer, promptIds, { ...settings, eosTokenIds }, onText);
      return { model: modelDir, device: session.device, prompt: settings.prompt, ...result };
    } finally {
      session.close();
    }
  } finally {
    await model.checkpoint.close();
  }
}

function seconds(s: number): string {
  return s >= 1 ? s.toFixed(2) : s.toFixed(3);
}

/** The stderr line: prefill and decode throughput, device and why generation stopped. */
export function formatTimings(s: GenerateSummary): string {
  const p = s.prefill;
  const d = s.decode;
  return (
    `bwq: prefill ${p.tokens} tokens in ${seconds(p.seconds)} s (${Math.round(p.tokensPerSecond)} tok/s), ` +
    `decode ${d.tokens} tokens in ${seconds(d.seconds)} s (${Math.round(d.tokensPerSecond)} tok/s) on ${s.device}; stop: ${s.stopReason}`
  );
}

export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description('generate text from a prompt (float model or quantized OUT_DIR), streamed to stdout')
    .argument('[MODEL_OR_OUT_DIR]', 'model or quantized output directory (default: the bundled models/sotu-llama)')
    .option('--prompt <TEXT>', 'the prompt (required; not echoed)')
    .option('--max-new-tokens <N>', 'generate at most N tokens (default: 64)')
    .option('--temperature <T>', '0 = greedy (default), else softmax temperature')
    .option('--top-p <P>', 'nucleus sampling mass in (0, 1] (default: 1)')
    .option('--seed <S>', 'sampling seed, 0 … 4294967295 (default: 0)')
    .option('--device <NAME>', 'auto (CUDA when a GPU is present; default), cuda or cpu')
    .option('--json', 'print one JSON object instead of streaming')
    .action(async (modelArg: string | undefined, flags: GenerateFlags) => {
      const json = flags.json === true;
      const summary = await runGenerate(modelArg, flags, json ? undefined : (text) => process.stdout.write(text));
      if (json) {
        printResult(true, summary, () => '');
        return;
      }
      process.stdout.write('\n');
      process.stderr.write(`${formatTimings(summary)}\n`);
    });
}
