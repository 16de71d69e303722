/**
 * `bwq quantize [MODEL_DIR] -o OUT_DIR --method bwta|bwla|rtn ...` (issue #4).
 */
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { usageError } from '../../errors.js';
import { parseIntegerFlag, printResult } from '../output.js';
import { createProgress } from '../progress.js';
import { quantizeModel, type QuantizeOptions } from '../../pipeline/quantize.js';
import { DEFAULT_CALIBRATION_TEXT, DEFAULT_MODEL_DIR } from '../../package-paths.js';
import { quantizeOptionsWithRecipe } from '../recipe-flags.js';
import { parseReconstructFlags, RECONSTRUCT_FLAG_HELP as REC, type ReconstructRawFlags } from '../reconstruct-flags.js';
import { BWLA_FLAG_HELP as BWLA, parseBwlaFlags, type BwlaRawFlags } from '../bwla-flags.js';
import { DEFAULT_TEXT_FIELD, parseTextField, TEXT_FIELD_HELP } from '../text-field-flag.js';

export const DEFAULT_NSAMPLES = 32;
export const DEFAULT_SEQLEN = 512;
export const DEFAULT_RANK = 8;
export const DEFAULT_SEED = 0;

interface RawOptions extends ReconstructRawFlags, BwlaRawFlags {
  output?: string;
  method?: string;
  wBits?: string;
  aBits?: string;
  calib?: string;
  textField?: string;
  nsamples?: string;
  seqlen?: string;
  rank?: string;
  seed?: string;
  threads?: string;
  device?: string;
  statTokens?: string;
  sequential?: string;
  force?: boolean;
  resume?: boolean;
  /** false with --no-simulated */
  simulated?: boolean;
  json?: boolean;
  recipe?: string;
}

export function parseQuantizeOptions(modelDirArg: string | undefined, raw: RawOptions): QuantizeOptions {
  if (raw.output === undefined) throw usageError('-o/--output OUT_DIR is required');
  const method = raw.method;
  if (method === undefined) throw usageError('--method is required (bwta, bwla, rtn, billm or arb)');
  if (method !== 'bwta' && method !== 'bwla' && method !== 'rtn' && method !== 'billm' && method !== 'arb') {
    throw usageError(`--method must be bwta, bwla, rtn, billm or arb (got "${method}")`);
  }
  if (raw.wBits !== undefined && raw.wBits.trim() !== '1') throw usageError(`--w-bits must be 1 (got "${raw.wBits}"); bwq quantizes weights to 1 bit`);
  let aBits: number | 'ternary';
  if (raw.aBits === undefined) aBits = method === 'bwta' ? 'ternary' : 6;
  else if (raw.aBits.trim().toLowerCase() === 'ternary') aBits = 'ternary';
  else {
    aBits = parseIntegerFlag('--a-bits', raw.aBits, 2);
    if (aBits > 16) throw usageError(`--a-bits must be at most 16 (16 = no activation quantization), got ${aBits}`);
  }
  if (method === 'bwta' && aBits !== 'ternary') throw usageError(`--method bwta uses ternary activations; --a-bits must be "ternary" (got ${aBits})`);
  if (method === 'bwla' && aBits === 'ternary') throw usageError('--a-bits ternary is for --method bwta; bwla takes an integer bit width (e.g. 6, 8, 16)');
  // the peer baselines (docs/ALGORITHMS.md §BiLLM, §ARB-LLM): integer activations, simulated model only, no reconstruction
  if (method === 'billm' || method === 'arb') {
    if (aBits === 'ternary') throw usageError(`--a-bits ternary is for --method bwta; ${method} takes an integer bit width (e.g. 6, 8, 16)`);
    if (raw.simulated === false) throw usageError(`--method ${method} has no packed model (its weights are not sign × row scale; docs/FORMATS.md): drop --no-simulated`);
    if (raw.reconstruct === true) throw usageError(`--reconstruct is not available for --method ${method} (a peer baseline, as its paper quantizes)`);
  }
  const seqlenExplicit = raw.seqlen !== undefined;
  const options: QuantizeOptions = {
    modelDir: resolve(modelDirArg ?? DEFAULT_MODEL_DIR),
    outDir: resolve(raw.output),
    method,
    aBits,
    calibFile: resolve(raw.calib ?? DEFAULT_CALIBRATION_TEXT),
    ...parseTextField(raw.textField),
    nsamples: raw.nsamples === undefined ? DEFAULT_NSAMPLES : parseIntegerFlag('--nsamples', raw.nsamples, 1),
    seqlen: raw.seqlen === undefined ? DEFAULT_SEQLEN : parseIntegerFlag('--seqlen', raw.seqlen, 2),
    seqlenExplicit,
    rank: raw.rank === undefined ? DEFAULT_RANK : parseIntegerFlag('--rank', raw.rank, 0),
    seed: raw.seed === undefined ? DEFAULT_SEED : parseIntegerFlag('--seed', raw.seed, 0),
    force: raw.force === true,
  };
  if (raw.resume === true) options.resume = true;
  Object.assign(options, parseBwlaFlags(method, raw));
  const reconstruct = parseReconstructFlags(method, raw);
  if (reconstruct !== undefined) options.reconstruct = reconstruct;
  if (raw.simulated === false) options.simulated = false;
  if (raw.nsamples !== undefined) options.nsamplesExplicit = true;
  if (raw.threads !== undefined) options.threads = parseIntegerFlag('--threads', raw.threads, 1);
  if (raw.device !== undefined) {
    if (raw.device !== 'auto' && raw.device !== 'cuda' && raw.device !== 'cpu') {
      throw usageError(`--device must be auto, cuda or cpu (got "${raw.device}")`);
    }
    options.device = raw.device;
  }
  if (raw.statTokens !== undefined) options.statTokens = parseIntegerFlag('--stat-tokens', raw.statTokens, 8);
  if (raw.sequential !== undefined) {
    if (raw.sequential !== 'block' && raw.sequential !== 'halves' && raw.sequential !== 'groups') {
      throw usageError(`--sequential must be block, halves or groups (got "${raw.sequential}")`);
    }
    options.sequential = raw.sequential;
  }
  return options;
}

export function registerQuantize(program: Command): void {
  program
    .command('quantize')
    .description('post-training quantization to 1-bit weights with ternary (bwta) or low-bit (bwla, rtn; the baselines billm, arb) activations')
    .argument('[MODEL_DIR]', 'Hugging Face model directory (default: the bundled models/sotu-llama)')
    .option('-o, --output <OUT_DIR>', 'output directory (simulated model + packed weights)')
    .option('--method <method>', 'bwta | bwla | rtn | billm (BiLLM) | arb (ARB-LLM_RC); billm and arb write the simulated model only')
    .option('--w-bits <n>', 'weight bits (only 1)', '1')
    .option('--a-bits <n>', 'activation bits: ternary (bwta), or an integer 2..16 (16 = float); default ternary for bwta, 6 otherwise')
    .option('--calib <FILE>', 'calibration text: .txt, .jsonl, .json or .parquet (each optionally .gz) or a directory of them; default calibration/sotu-calib.txt')
    .option('--text-field <NAME>', TEXT_FIELD_HELP, DEFAULT_TEXT_FIELD)
    .option('--nsamples <n>', `calibration windows (default ${DEFAULT_NSAMPLES}; 128 when the blocks run on a GPU)`)
    .option('--seqlen <n>', `tokens per window (default ${DEFAULT_SEQLEN}, 2048 on a GPU; clamped to max_position_embeddings)`)
    .option('--rank <r>', `PSP low-rank term rank for bwla (default ${DEFAULT_RANK}; 0 disables)`)
    .option('--seed <s>', `seed for window sampling, token subsampling and OKT init (default ${DEFAULT_SEED})`)
    .option('--stat-tokens <n>', 'calibration tokens per layer kept for the statistics (default 512)')
    .option('--sequential <mode>', 'calibration passes per block: block (one float pass, default), halves, groups')
    .option('--device <name>', 'where block forwards run: auto (CUDA when a GPU answers, else the CPU; default), cuda or cpu')
    .option('--threads <n>', 'CPU threads')
    .option('--force', 'replace OUT_DIR if a previous bwq run wrote it (and discard an interrupted run\'s checkpoint)')
    .option('--resume', 'continue an interrupted run from its checkpoint (.OUT_DIR.bwq-checkpoint beside OUT_DIR)')
    .option('--no-simulated', 'write only the packed model (model.packed.safetensors), not the simulated one; eval it with --backend native')
    .option('--okt-iterations <n>', BWLA.oktIterations)
    .option('--okt-tol <x>', BWLA.oktTol)
    .option('--okt-act-weight <x>', BWLA.oktActWeight)
    .option('--okt-anneal <list>', BWLA.oktAnneal)
    .option('--psp-iterations <n>', BWLA.pspIterations)
    .option('--psp-tol <x>', BWLA.pspTol)
    .option('--compensation-damping <d>', BWLA.compensationDamping)
    .option('--psp-weighting <mode>', BWLA.pspWeighting)
    .option('--scale-refit <mode>', BWLA.scaleRefit)
    .option('--reconstruct', REC.reconstruct)
    .option('--no-reconstruct', 'no block-wise reconstruction (bwta: calibration only)')
    .option('--rec-iterations <n>', REC.iterations)
    .option('--rec-batch <n>', REC.batch)
    .option('--rec-lr-weight <x>', REC.lrWeight)
    .option('--rec-lr-scale <x>', REC.lrScale)
    .option('--rec-lr-act <x>', REC.lrAct)
    .option('--rec-stages <list>', REC.stages)
    .option('--rec-final-fraction <x>', REC.finalFraction)
    .option('--rec-handover <x>', REC.handover)
    .option('--rec-align', REC.align)
    .option('--no-rec-align', 'reconstruction: no magnitude-alignment projection factors')
    .option('--json', 'print the summary as JSON on stdout')
    .option('--recipe <FILE>', 'every option of the run from a JSON or YAML file, or an OUT_DIR/quantize-report.json (docs/CI.md); flags given here win')
    .action(async (modelDir: string | undefined, _flags: RawOptions, command: Command) => {
      // --recipe fills in the flags not given on the command line (src/cli/recipe-flags.ts)
      const { options, raw } = await quantizeOptionsWithRecipe<RawOptions>(command, modelDir, parseQuantizeOptions);
      const progress = createProgress({ quiet: raw.json === true });
      const summary = await quantizeModel(options, progress);
      printResult(raw.json === true, summary, () => {
        const lines = [
          `quantized ${options.modelDir} → ${summary.outDir}`,
          `  method ${summary.method}, W1 A${summary.aBits === 'ternary' ? ' ternary' : summary.aBits}, ${summary.nsamples}×${summary.seqlen} calibration tokens, ${summary.seconds.toFixed(1)} s`,
          ...summary.layers.map((l) => `  layer ${l.layer}: block output rel. error ${l.blockOutputRelError.toFixed(3)}`),
          `  files: ${summary.files.join(', ')}`,
        ];
        return lines.join('\n');
      });
    });
}
