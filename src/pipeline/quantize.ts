/**
 * `bwq quantize`: sequential block-wise post-training quantization (llm-compressor style).
 *
 *   1. tokenize the calibration text, draw `nsamples` windows of `seqlen` tokens (seeded);
 *   2. embed them (hidden states [nsamples, seqlen, H], the only state kept across blocks);
 *   3. for each decoder block i:
 *        a. run the float block on the current hidden states (which already went through the
 *           quantized blocks 0..i−1) in batches, keeping a seeded random subset of `statTokens`
 *           rows of each linear input tap (memory bounded by one block + the subset);
 *        b. BWTA: one window (batch 1) with the query/key/value/probs taps, subsampled query rows;
 *        c. quantize the block's linears group by group (src/quant/layer-quant.ts) and, for BWTA,
 *           calibrate the attention-operand thresholds;
 *        d. run the quantized block (weights override + LayerRecipe) to produce block i+1's inputs;
 *   4. write OUT_DIR (simulated model, packed weights, config with quantization_config, report)
 *      atomically: everything is built under a temporary directory renamed at the very end.
 * Before any of it: OUT_DIR is checked (src/pipeline/output-dir.ts: --force replaces only a previous bwq
 * output), its temporary directory is created (an unwritable destination fails at once), and the
 * calibration memory (src/pipeline/calib-memory.ts) and disk space (src/pipeline/output-size.ts) are
 * checked against the machine and the destination file system.
 */
import { copyFile, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { BwqError } from '../errors.js';
import { writeAtomically } from '../fs/atomic.js';
import { checkFreeSpace, freeBytes } from '../fs/free-space.js';
import { formatSize } from '../fs/size.js';
import type { Progress } from '../progress.js';
import { openModelDir, type ModelDir } from '../model/model-dir.js';
import type { ModelConfig } from '../model/config.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { linearByRole } from '../model/weights.js';
import type { BlockWeights, TapName } from '../onnx/block-runner.js';
import { createRuntimeBlockEngine, isGramTap, type BlockEngine, type GramTapName } from '../runtime/block-runner.js';
import type { RuntimeDevice } from '../runtime/session.js';
import { loadCalibrationWindows } from '../data/calibration.js';
import { Rng } from '../linalg/random.js';
import type { AttentionRecipe, LayerRecipe, LinearInputRecipe, LinearRole, QuantizationConfig, QuantMethod } from '../quant/recipe.js';
import { SIMULATED_ONLY_METHODS } from '../quant/recipe.js';
import { baselineConfigSettings } from '../quant/baseline-group.js';
import { BWLA_DEFAULTS, quantizeGroup, type GroupName, type GroupLinear, type GroupNumerics, type GroupSettings, type InputGram, type QuantizedGroup } from '../quant/layer-quant.js';
import { binarizationReport, bwlaConfigSettings, bwlaSettings, rotationReport } from '../quant/bwla-report.js';
import { searchAttentionTernary, type AttentionSearchResult } from '../quant/act-calib.js';
import { describeQuantizer } from '../quant/quantizers.js';
import { VERSION } from '../version.js';
import { LayerSpillStore, type QuantizedLinearArrays, type SimulatedDtype, type SpilledLinear } from './layer-spill.js';
import { Checkpoint, inputDigests, runFingerprint, type CheckpointLinear, type CheckpointState, type InputDigests } from './checkpoint.js';
import { resolvedRecipe, type Recipe } from './recipe-file.js';
import { createOrtEngine } from './ort-engine.js';
import { deviceMatmul } from './device-matmul.js';
import { createCalibrationStream, type CalibrationStream } from './calibration-stream.js';
import { nativeWeightPasses } from '../native/weight-passes.js';
import { nativeQuantizeRows } from '../native/act-quant.js';
import { nativeQr } from '../native/qr.js';
import { jsWeightPasses } from '../quant/weight-passes.js';
import type { Matmul, Numerics } from '../linalg/matmul.js';
import { checkOutputDirectory, COPIED_MODEL_FILES } from './output-dir.js';
import { describeOutputSize, estimateOutputSize, outputSizeInput, type OutputSize } from './output-size.js';
import { configDtypeName, keptFloatDtype, writeWeights } from './write-weights.js';
import { diskReport } from './disk-report.js';
import { checkCalibrationMemory, type ReconstructionShape } from './calib-memory.js';
import { BlockReconstruction, type ReconstructOptions, type ReconstructionReport } from './reconstruct.js';
import { groupRotationTensors } from './rotation-tensors.js';
import { memoryReport } from './host-memory.js';

export interface QuantizeOptions {
  modelDir: string;
  outDir: string;
  method: QuantMethod;
  aBits: number | 'ternary';
  calibFile: string;
  /** JSON field or parquet column of the calibration text (default "text"; src/data/text-corpus.ts) */
  textField?: string;
  nsamples: number;
  /** requested sequence length; clamped to max_position_embeddings unless `seqlenExplicit` */
  seqlen: number;
  seqlenExplicit: boolean;
  /** --nsamples was given (else a GPU run takes GPU_CALIBRATION.nsamples) */
  nsamplesExplicit?: boolean;
  rank: number;
  seed: number;
  force: boolean;
  threads?: number;
  /** where block forwards run (the runtime): auto (CUDA when a GPU answers, else the CPU), cuda or cpu */
  device?: RuntimeDevice;
  /** rows of each linear-input tap kept for calibration statistics (default 512) */
  statTokens?: number;
  /** OKT EM iterations (default 10) */
  oktIterations?: number;
  /** OKT initialisation (default 'random'; 'best' tries identity and random) */
  oktInit?: 'identity' | 'random' | 'best';
  /** activation-weighted PSP L-step (default true) */
  weightedPsp?: boolean;
  /** output-optimal per-row weight scale after PSP (default true) */
  dataAwareScale?: boolean;
  /** PSP alternations (default 3) */
  pspIterations?: number;
  /** PSP soft threshold τ = ratio·σ_{r+1} of the initial residual, fixed per layer (default 0.25) */
  pspTauRatio?: number;
  /** OKT relative tolerance, activation-term weight λ, smoothing schedule and its per-stage cap; PSP tolerance (BWLA_DEFAULTS) */
  oktTolerance?: number;
  oktActivationWeight?: number;
  oktAnneal?: readonly number[];
  oktAnnealIterations?: number;
  pspTolerance?: number;
  /** after PSP, signs re-chosen with GPTQ-style error compensation on Rᵀ H R damped by this fraction of its mean
   *  diagonal (default 0.1; 0 = PSP's signs; src/quant/column-blocks.ts) */
  compensationDamping?: number;
  /** calibration passes per block: 'block' (default; one float pass), 'halves' (attention, then MLP), 'groups' (each group sees the upstream groups quantized) */
  sequential?: SequentialMode;
  /** query rows sampled per head for the attention calibration (default 64) */
  attentionRows?: number;
  /** free bytes of the destination file system (default fs.statfs; tests inject a value) */
  freeSpace?: (path: string) => Promise<number | undefined>;
  /** continue an interrupted run from its checkpoint (src/pipeline/checkpoint.ts) */
  resume?: boolean;
  /** block-wise reconstruction after each block's calibration (src/pipeline/reconstruct.ts); undefined = none */
  reconstruct?: ReconstructOptions;
  /** write the simulated model (default true; false = --no-simulated: the packed model only) */
  simulated?: boolean;
  /** largest simulated-model shard in tensor bytes (default 5·10⁹, transformers' 5GB; tests force small shards) */
  maxShardBytes?: number;
  /** dtype of the simulated linears: the checkpoint's (default) or float32 (exactly the packed model's weights; tests) */
  simulatedDtype?: 'checkpoint' | 'float32';
  /** the flags as the command got them (src/cli/recipe-flags.ts); the report records them, resolved */
  recipe?: Recipe;
}

export interface LinearReport {
  weightRelError: number;
  plainBinarizationRelError: number;
  pspRank: number;
  /** relative binarization error² before (W) and after (W R) OKT; Gaussian rows: 1 − 2/π */
  binarizationError?: { plain: number; rotated: number; gaussian: number };
  /** billm / arb: salient columns over the weight's blocks */
  salientColumns?: number;
}

export interface LayerReport {
  layer: number;
  /** the block's wall time: statistics, transforms, propagation, spill and its checkpoint commit */
  seconds: number;
  groups: Record<string, {
    quantizer: string;
    outputRelError: number;
    rotation?: {
      init: string; a: number; b: number; r?: number; oktObjective: number[]; oktIterations?: number; oktConverged?: boolean;
      crestFactor?: { before: number; after: number }; activationTail?: { before: number; after: number };
    };
    candidates?: Array<{ init: string; outputRelError: number }>;
  }>;
  linears: Record<string, LinearReport>;
  attention?: { query: string; key: string; value: string; probs: string; scoresRelError: number; contextRelError: number };
  /** ‖block_q(x) − block_f(x)‖ / ‖block_f(x)‖ on the first calibration batch */
  blockOutputRelError: number;
  /** block-wise reconstruction (--reconstruct): losses before / after, schedule, time */
  reconstruction?: ReconstructionReport;
}

export interface QuantizeSummary {
  outDir: string;
  method: QuantizeOptions['method'];
  aBits: number | 'ternary';
  nsamples: number;
  seqlen: number;
  /** where the block forwards ran (the runtime's device) */
  device: string;
  layers: LayerReport[];
  seconds: number;
  /** the write-out of OUT_DIR (simulated and packed models, report), part of `seconds` */
  writeSeconds: number;
  files: string[];
}

interface GroupSpec {
  name: GroupName;
  tap: TapName;
  roles: LinearRole[];
}

const GROUPS: readonly GroupSpec[] = [
  { name: 'attn_in', tap: 'attn_input', roles: ['q_proj', 'k_proj', 'v_proj'] },
  { name: 'attn_out', tap: 'attn_context', roles: ['o_proj'] },
  { name: 'mlp_in', tap: 'mlp_input', roles: ['gate_proj', 'up_proj'] },
  { name: 'mlp_out', tap: 'mlp_hidden', roles: ['down_proj'] },
];

/** Batch (windows per block run) so that one run holds at most ~8k tokens and ~64 MiB of scores. */
function batchSize(nsamples: number, seqlen: number, heads: number): number {
  const byTokens = Math.max(1, Math.floor(8192 / seqlen));
  const byScores = Math.max(1, Math.floor((64 * 2 ** 20) / (4 * heads * seqlen * seqlen)));
  return Math.max(1, Math.min(nsamples, byTokens, byScores));
}

export async function quantizeModel(options: QuantizeOptions, progress: Progress): Promise<QuantizeSummary> {
  const t0 = performance.now();
  const inputs = [
    { path: options.modelDir, what: 'input model directory' },
    { path: options.calibFile, what: 'calibration file' },
  ];
  checkBaselineOptions(options);
  // before anything is read or written: which OUT_DIR may be written or replaced (src/pipeline/output-dir.ts)
  await checkOutputDirectory(options.outDir, options.force, { inputs });
  // the temporary OUT_DIR is made first, so an unwritable destination fails at once
  let checkpoint: Checkpoint<LayerReport> | undefined;
  const summary = await writeAtomically(
    options.outDir,
    async (temp) => {
      const model = await openModelDir(options.modelDir);
      try {
        const { config } = model;
        if (config.architecture === 'gpt2') {
          throw new BwqError('gpt2 is unsupported for quantization (bwq quantizes llama, mistral, qwen2 and qwen3 models)', { file: options.modelDir });
        }
        if (config.quantization !== undefined) {
          throw new BwqError('model is already quantized (config.json has quantization_config)', { file: options.modelDir });
        }
        if (options.method === 'bwta' && options.aBits !== 'ternary') {
          throw new BwqError(`--method bwta uses ternary activations (got --a-bits ${options.aBits})`, { exitCode: 2 });
        }
        // the engine first: its device decides the calibration defaults
        const runner = await createRuntimeBlockEngine(model, { device: options.device ?? 'auto', ...(options.threads === undefined ? {} : { threads: options.threads }) });
        let spill: LayerSpillStore | undefined;
        try {
          // on a GPU the papers' calibration (128 windows of 2048 tokens) unless given; else the CPU defaults
          const onGpu = runner.device.startsWith('cuda');
          const nsamples = options.nsamplesExplicit === true || !onGpu ? options.nsamples : GPU_CALIBRATION.nsamples;
          const requested = options.seqlenExplicit || !onGpu ? options.seqlen : GPU_CALIBRATION.seqlen;
          const seqlen = options.seqlenExplicit ? requested : Math.min(requested, config.maxPositionEmbeddings);
          if (seqlen > config.maxPositionEmbeddings) {
            throw new BwqError(`--seqlen ${seqlen} exceeds max_position_embeddings ${config.maxPositionEmbeddings}`, { exitCode: 2 });
          }
          const run: QuantizeOptions = { ...options, nsamples };
          checkCalibrationMemory(nsamples, seqlen, config.hiddenSize, {}, reconstructionShape(run, config));
          const size = estimateOutputSize(await outputSizeInput(model, options.method, options.rank, COPIED_MODEL_FILES,
            { simulated: options.simulated !== false, calibrationTokens: nsamples * seqlen }));
          const free = await (options.freeSpace ?? freeBytes)(temp);
          checkFreeSpace(options.outDir, size.total, free, describeOutputSize(size, formatSize));

          const tokenizer = await loadTokenizer(options.modelDir);
          const windows = await loadCalibrationWindows(options.calibFile, tokenizer, {
            nsamples, seqlen, seed: options.seed, vocabSize: config.vocabSize,
            ...(options.textField === undefined ? {} : { textField: options.textField }),
          });
          // every finished block is checkpointed beside OUT_DIR, so a killed run can --resume
          const digests = await inputDigests(options.modelDir, options.calibFile);
          const fingerprint = runFingerprint(digests, resultOptions(run, seqlen));
          const opened = await Checkpoint.open<LayerReport>(options.outDir, fingerprint,
            { resume: options.resume === true, force: options.force });
          checkpoint = opened.checkpoint;
          if (options.resume === true && opened.state === undefined) progress.succeed('no checkpoint to resume: starting at the first block');
          // simulated weights are spilled in the dtype they are written in (none with --no-simulated)
          spill = new LayerSpillStore(checkpoint.layersDir,
            { simulatedDtype: (name) => (options.simulated === false ? undefined : simulatedLinearDtype(model, options, name)) });
          const result = await runPipeline(model, runner, windows.ids, run, seqlen, progress, spill,
            { checkpoint, state: opened.state });
          const tw = performance.now();
          const files = await writeOutputs(model, temp, run, seqlen, result, (performance.now() - t0) / 1000, runner.device, digests,
            { spill, checkpoint, size, progress });
          return {
            outDir: options.outDir, method: options.method, aBits: options.aBits, nsamples, seqlen,
            device: runner.device,
            layers: result.reports, seconds: (performance.now() - t0) / 1000, writeSeconds: (performance.now() - tw) / 1000, files,
          };
        } finally {
          // the spill files stay in the checkpoint until OUT_DIR is in place
          await spill?.close();
          await runner.close();
        }
      } finally {
        await model.checkpoint.close().catch(() => undefined);
      }
    },
    {
      directory: true,
      replaceDirectory: options.force,
      // OUT_DIR may have changed during the run: the same rules once more, just before the swap
      beforeReplace: async (destination) => { await checkOutputDirectory(destination, true, { inputs }); },
    },
  );
  // OUT_DIR is in place: the checkpoint has served its purpose
  await checkpoint?.remove();
  return summary;
}

/** 75 s → "1 min 15 s", 3700 s → "1 h 2 min". */
export function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** What the reconstruction's memory depends on (src/pipeline/calib-memory.ts), or undefined without --reconstruct. */
function reconstructionShape(o: QuantizeOptions, config: ModelConfig): ReconstructionShape | undefined {
  return o.reconstruct === undefined ? undefined : {
    batch: Math.min(o.reconstruct.batch, o.nsamples), intermediateSize: config.intermediateSize,
    numHeads: config.numHeads, numKvHeads: config.numKvHeads, headDim: config.headDim,
  };
}

/** billm / arb write no packed model (their weights are not sign × row scale; docs/FORMATS.md). */
function hasPackedModel(method: QuantMethod): boolean {
  return !SIMULATED_ONLY_METHODS.includes(method);
}

/** What the peer baselines cannot do, refused before any work (the CLI refuses the same flags first). */
function checkBaselineOptions(o: QuantizeOptions): void {
  if (hasPackedModel(o.method)) return;
  if (o.aBits === 'ternary') throw new BwqError(`--method ${o.method} takes integer activation bits (e.g. 6, 8, 16); ternary is for --method bwta`, { exitCode: 2 });
  if (o.simulated === false) {
    throw new BwqError(`--method ${o.method} has no packed model (its weights are not sign × row scale; docs/FORMATS.md): drop --no-simulated`, { exitCode: 2 });
  }
  if (o.reconstruct !== undefined) throw new BwqError(`--method ${o.method} has no block-wise reconstruction (drop --reconstruct)`, { exitCode: 2 });
}

/** Calibration when the block forwards run on a GPU and --nsamples / --seqlen are not given (GPTQ, BiLLM, BWLA). */
export const GPU_CALIBRATION = { nsamples: 128, seqlen: 2048 } as const;

/** The options that change a run's result (its checkpoint fingerprint covers them). */
function resultOptions(o: QuantizeOptions, seqlen: number): Record<string, unknown> {
  return {
    method: o.method, aBits: o.aBits, nsamples: o.nsamples, seqlen, rank: o.rank, seed: o.seed,
    statTokens: o.statTokens ?? null, oktIterations: o.oktIterations ?? null, oktInit: o.oktInit ?? null,
    weightedPsp: o.weightedPsp ?? null, dataAwareScale: o.dataAwareScale ?? null, pspIterations: o.pspIterations ?? null,
    pspTauRatio: o.pspTauRatio ?? null, oktTolerance: o.oktTolerance ?? null, oktActivationWeight: o.oktActivationWeight ?? null,
    oktAnneal: o.oktAnneal ?? null, oktAnnealIterations: o.oktAnnealIterations ?? null, pspTolerance: o.pspTolerance ?? null, compensationDamping: o.compensationDamping ?? null, sequential: o.sequential ?? null, attentionRows: o.attentionRows ?? null,
    // only when given, so the fingerprints of runs without it stay as they were
    ...(o.textField === undefined ? {} : { textField: o.textField }),
    ...(o.simulated === false ? { simulated: false } : {}),
    ...(o.simulatedDtype === 'float32' ? { simulatedDtype: 'float32' } : {}),
    ...(o.reconstruct === undefined ? {} : { reconstruct: o.reconstruct }),
    // the Gram matrices over every calibration token (not the sampled rows) change the scales and PSP weights
    ...(usesInputGram(o) ? { gramStatistics: 'all-tokens' } : {}),
  };
}

/** Whether the run's transforms read the input Gram matrices: the output-optimal scales (bwta, bwla) or BWLA's
 *  activation-weighted PSP (docs/ALGORITHMS.md "Calibration statistics"); rtn reads neither. */
function usesInputGram(o: QuantizeOptions): boolean {
  if (o.method === 'rtn') return false;
  if (o.method === 'billm' || o.method === 'arb') return true; // the layer Hessian H = (2/T) Σ x xᵀ
  return (o.dataAwareScale ?? true) || (o.method === 'bwla' && (o.weightedPsp ?? true));
}

interface PipelineResult {
  /** HF weight name → quantized linear */
  linears: Map<string, { q: SpilledLinear; prefix: string; bias: string | undefined }>;
  /** okt tensor name → F32 tensor */
  rotations: Map<string, { data: Float32Array; shape: number[] }>;
  recipes: LayerRecipe[];
  reports: LayerReport[];
  /** the calibration hidden states were kept on the GPU */
  statesOnDevice: boolean;
}

async function runPipeline(model: ModelDir, runner: BlockEngine, ids: Int32Array, options: QuantizeOptions, seqlen: number,
  progress: Progress, spill: LayerSpillStore,
  resume: { checkpoint: Checkpoint<LayerReport>; state: CheckpointState<LayerReport> | undefined }): Promise<PipelineResult> {
  const { config } = model;
  const h = config.hiddenSize;
  const ns = options.nsamples;
  const bs = batchSize(ns, seqlen, config.numHeads);
  const nBatches = Math.ceil(ns / bs);
  const statTokens = Math.min(options.statTokens ?? 512, ns * seqlen);
  const settings: GroupSettings = {
    method: options.method, aBits: options.aBits, rank: options.method === 'bwla' ? options.rank : 0,
    oktIterations: options.method === 'bwla' ? options.oktIterations ?? BWLA_DEFAULTS.oktIterations : 0,
    oktInit: options.oktInit ?? 'random',
    weightedPsp: options.weightedPsp ?? true,
    dataAwareScale: options.dataAwareScale ?? true,
    pspIterations: options.pspIterations ?? BWLA_DEFAULTS.pspIterations, pspTauRatio: options.pspTauRatio ?? BWLA_DEFAULTS.pspTauRatio, seed: options.seed,
    ...bwlaSettings(options),
  };

  // the calibration hidden states: on the GPU when the blocks run there and they fit (not with --reconstruct, whose
  // training steps read host windows), else on the host (src/pipeline/calibration-stream.ts)
  const hidden = createCalibrationStream(runner, ns, seqlen, h, options.reconstruct === undefined, (line) => progress.info(line));
  const result: PipelineResult = { linears: new Map(), rotations: new Map(), recipes: [], reports: [], statesOnDevice: hidden.onDevice };
  const rng = new Rng(options.seed ^ 0x5bd1e995);
  const { checkpoint, state } = resume;
  const done: CheckpointLinear[] = [];
  const rotationsByLayer: { layer: number; names: string[] }[] = [];
  if (state !== undefined) {
    // a resumed run: the finished blocks' results and the hidden states after them
    await checkpoint.readHidden(state.completed, hidden);
    rng.setState(state.rng);
    result.recipes.push(...state.recipes);
    result.reports.push(...state.reports);
    for (const [name, t] of await checkpoint.readRotations(state)) result.rotations.set(name, t);
    rotationsByLayer.push(...state.rotations);
    for (const l of state.linears) {
      const q = spill.reopen(l.layer, [l]).get(l.name)!;
      result.linears.set(l.name, { q, prefix: l.prefix, bias: l.bias });
      done.push(l);
    }
    progress.succeed(`resumed after block ${state.completed} of ${config.numLayers} (checkpoint ${checkpoint.dir})`);
  } else {
    progress.start('embedding calibration windows');
    for (let b = 0; b < nBatches; b++) {
      const n = Math.min(bs, ns - b * bs);
      const emb = await runner.embed(ids.subarray(b * bs * seqlen, (b * bs + n) * seqlen), n, seqlen);
      hidden.write(b * bs, emb);
      progress.update(b + 1, nBatches);
    }
    progress.succeed(`embedded ${ns} windows of ${seqlen} tokens`);
  }
  const floatRecipe: LayerRecipe = { linears: {} };
  const engine = createOrtEngine(options.threads);
  // large products on the GPU when the blocks run there (src/pipeline/device-matmul.ts)
  const mm = runner.matmulT !== undefined && runner.device.startsWith('cuda') ? deviceMatmul({ matmulT: runner.matmulT, ...(runner.createArray === undefined ? {} : { createArray: runner.createArray }) }, engine.matmul) : engine.matmul;
  // the rotations W R, X R and Rᵀ H R on the engine's device (the runtime's kron_rotate; CPU threads or CUDA)
  // and learnOkt's whole EM in one native call on the engine's device (src/runtime/device-okt.ts; CPU threads or CUDA)
  // and PSP's passes over the weights, the activation searches' quantizers and the sketches' QR on the CPU kernels'
  // threads (src/quant/weight-passes.ts, src/quant/quantizers.ts, src/linalg/qr.ts)
  const weightPasses = nativeWeightPasses();
  const quantizeRows = nativeQuantizeRows();
  const qr = nativeQr();
  const numerics: GroupNumerics = {
    matmul: mm, ...(runner.rotateRows === undefined ? {} : { rotateRows: runner.rotateRows }), ...(qr === undefined ? {} : { qr }),
    ...(weightPasses === undefined ? {} : { weightPasses }),
    ...(quantizeRows === undefined ? {} : { quantizeRows }),
    ...(runner.learnOkt !== undefined ? { okt: runner.learnOkt } : {}),
  };
  // Gram matrices over every calibration token: accumulated in the runtime on a GPU, else from the taps per batch
  const gramMode: GramMode = !usesInputGram(options) ? 'none' : runner.readGram !== undefined && runner.device.startsWith('cuda') ? 'device' : 'host';
  // --reconstruct: the float stream (teacher inputs) beside the quantized one (src/pipeline/reconstruct.ts)
  const reconstruction = options.reconstruct === undefined ? undefined : await BlockReconstruction.create(model, runner, ids, ns, seqlen, bs,
    state?.completed ?? 0, options.reconstruct, options.seed, options.threads, progress);
  try {
    for (let layer = state?.completed ?? 0; layer < config.numLayers; layer++) {
      const tl = performance.now();
      const rotationsBefore = new Set(result.rotations.keys());
      const tag = `layer ${layer + 1}/${config.numLayers}`;
      const weights = await runner.loadBlockWeights(layer);
      const names = model.weightNames.layers[layer]!;

      const picked = rng.sample(ns * seqlen, statTokens); // global token indices, ascending
      const recipeLinears: Partial<Record<LinearRole, LinearInputRecipe>> = {};
      const newLinears = { ...weights.linears };
      const extra = new Map(weights.extra);
      const report: LayerReport = { layer, seconds: 0, groups: {}, linears: {}, blockOutputRelError: 0 };
      const layerLinears = new Map<string, { q: QuantizedLinearArrays; prefix: string; bias: string | undefined }>();
      let attention: AttentionRecipe | undefined;
      const currentRecipe = (): LayerRecipe =>
        attention === undefined ? { linears: { ...recipeLinears } } : { linears: { ...recipeLinears }, attention };
      const currentWeights = (): BlockWeights => ({ ...weights, linears: { ...newLinears }, extra: new Map(extra) });
      let firstFloatOut: Float32Array | undefined;
      let gi = 0;
      const phases = sequentialPhases(options.sequential ?? 'block');
      for (let pi = 0; pi < phases.length; pi++) {
        const phase = phases[pi]!;
        // a. statistics: sampled rows of this phase's input taps, from the block with the groups
        //    of earlier phases already quantized (phase 0: the float block)
        const taps = [...new Set(phase.map((g) => g.tap))];
        progress.start(`${tag}: statistics pass ${pi + 1}/${phases.length} (${taps.join(', ')})`);
        const st = await collectStats(hidden, layer, bs, currentWeights(), pi === 0 ? floatRecipe : currentRecipe(), taps, picked, progress, { mode: gramMode, mm, ...(runner.readGram === undefined ? {} : { readGram: runner.readGram }) });
        if (pi === 0) firstFloatOut = st.firstOutput;
        progress.succeed(`${tag}: statistics pass ${pi + 1}/${phases.length} on ${statTokens} sampled tokens${gramMode === 'none' ? '' : `, Gram matrices over ${ns * seqlen} tokens`}`);

        // b/c. quantize this phase's groups
        progress.start(`${tag}: quantizing ${phase.map((g) => g.name).join(', ')}`);
        // the phase's groups with their members and seeds, in the phase's order (a group without members is skipped)
        const jobs: Array<{ g: (typeof phase)[number]; members: GroupLinear[]; seed: number }> = [];
        for (const g of phase) {
          const cols = st.widths.get(g.tap)!;
          const members: GroupLinear[] = [];
          for (const role of g.roles) {
            const w = weights.linears[role];
            if (w === undefined) continue;
            members.push({ role, weight: w, rows: w.length / cols });
          }
          if (members.length > 0) jobs.push({ g, members, seed: options.seed + 7919 * layer + 31 * gi++ });
        }
        const groupSeconds = new Map<string, number>();
        const quantizeJob = async (job: (typeof jobs)[number]): Promise<QuantizedGroup> => {
          const tg = performance.now();
          const { g } = job;
          const q = await quantizeGroup(g.name, job.members, st.widths.get(g.tap)!, st.stats.get(g.tap)!, statTokens, settings, job.seed, numerics, st.grams.get(g.tap));
          groupSeconds.set(g.name, (performance.now() - tg) / 1000);
          return q;
        };
        // The groups run concurrently: each one's device products, rotations and OKT run on the addon's backend thread
        // while the JS thread works on another's (every group reads only its own inputs, so the results are those of
        // one after the other). bwta's run one at a time: its attention calibration after attn_in reads q/k/v quantized.
        const concurrent = options.method === 'bwta' ? undefined : await allInOrder(jobs.map(quantizeJob));
        for (let ji = 0; ji < jobs.length; ji++) {
          const { g } = jobs[ji]!;
          const q: QuantizedGroup = concurrent?.[ji] ?? await quantizeJob(jobs[ji]!);
          const rotation = q.rotation === undefined ? undefined : groupRotationTensors(layer, g.name, q.rotation);
          for (const [name, t] of rotation?.tensors ?? []) {
            result.rotations.set(name, t);
            extra.set(name, t);
          }
          for (const ql of q.linears) {
            const entry: LinearInputRecipe = rotation === undefined
              ? { quantizer: q.quantizer }
              : { rotation: rotation.recipe, quantizer: q.quantizer };
            recipeLinears[ql.role] = entry;
            newLinears[ql.role] = ql.simulated;
            const ln = linearByRole(names, ql.role)!;
            // keep packed signs (1 bit per weight) rather than the Int8 signs until the outputs are written
            const stored: QuantizedLinearArrays = {
              rows: ql.rows, cols: ql.cols, simulated: ql.simulated, qweight: (weightPasses ?? jsWeightPasses).packSigns(ql.signs, ql.rows, ql.cols),
              scales: ql.scales, lrA: ql.lrA, lrB: ql.lrB, rank: ql.rank,
            };
            layerLinears.set(ln.weight, { q: stored, prefix: ln.weight.replace(/\.weight$/, ''), bias: ln.bias });
            report.linears[ql.role] = { weightRelError: ql.weightRelError, plainBinarizationRelError: ql.plainRelError, pspRank: ql.rank, binarizationError: binarizationReport(ql),
              ...(ql.salientColumns === undefined ? {} : { salientColumns: ql.salientColumns }) };
          }
          report.groups[g.name] = {
            quantizer: describeQuantizer(q.quantizer),
            outputRelError: q.outputRelError,
            ...(q.rotation === undefined ? {} : {
              rotation: { init: q.rotation.init, a: q.rotation.a, b: q.rotation.b, ...(q.rotation.r > 0 ? { r: q.rotation.r } : {}), oktObjective: q.rotation.history, ...rotationReport(q.rotation) },
              candidates: q.candidates,
            }),
          };
          progress.update(ji + 1, jobs.length, g.name);

          // BWTA: attention operands, calibrated on Q/K/V produced by the quantized q/k/v projections
          if (options.method === 'bwta' && g.name === 'attn_in') {
            const att = await calibrateAttention(runner, layer, hidden, seqlen, currentWeights(), currentRecipe(), config, options.attentionRows ?? 64, rng, mm);
            attention = { query: att.query, key: att.key, probs: att.probs, value: att.value, probsRow: att.probsRow };
            report.attention = {
              query: describeQuantizer(att.query), key: describeQuantizer(att.key), value: describeQuantizer(att.value),
              probs: describeQuantizer(att.probs), scoresRelError: Math.sqrt(att.scoresRelError), contextRelError: Math.sqrt(att.contextRelError),
            };
          }
        }
        progress.succeed(`${tag}: quantized ${phase.map((g) => `${g.name} ${report.groups[g.name]?.quantizer ?? '-'} err ${(report.groups[g.name]?.outputRelError ?? 0).toFixed(3)} (${(groupSeconds.get(g.name) ?? 0).toFixed(1)} s)`).join(', ')}`);
      }
      // block-wise reconstruction: replaces the calibrated linears and quantizers of this block in place
      if (reconstruction !== undefined) {
        const rec = await reconstruction.reconstruct(layer, hidden.hostArray!, { weights, newLinears, recipeLinears, extra, layerLinears, names }, attention, progress, tag);
        attention = rec.attention;
        report.reconstruction = rec.report;
      }
      const recipe = currentRecipe();
      result.recipes.push(recipe);

      // d. propagate through the quantized block
      progress.start(`${tag}: propagating`);
      const qWeights = currentWeights();
      for (let b = 0; b < nBatches; b++) {
        const n = Math.min(bs, ns - b * bs);
        await hidden.run(layer, b * bs, n, { weights: qWeights, recipe }, 'replace');
        if (b === 0 && firstFloatOut !== undefined) {
          const out = hidden.read(0, n);
          let num = 0;
          let den = 0;
          for (let i = 0; i < out.length; i++) {
            num += (out[i]! - firstFloatOut[i]!) ** 2;
            den += firstFloatOut[i]! ** 2;
          }
          report.blockOutputRelError = den > 0 ? Math.sqrt(num / den) : 0;
        }
        progress.update(b + 1, nBatches);
      }
      // e. move this layer's quantized linears out of memory
      const spilled = await spill.spill(layer, new Map([...layerLinears].map(([name, l]) => [name, l.q])));
      for (const [name, l] of layerLinears) {
        result.linears.set(name, { q: spilled.get(name)!, prefix: l.prefix, bias: l.bias });
        done.push({ name, layer, prefix: l.prefix, bias: l.bias, rows: l.q.rows, cols: l.q.cols, rank: l.q.rank });
      }
      report.seconds = (performance.now() - tl) / 1000;
      result.reports.push(report);
      // f. checkpoint: this block is finished (a killed run resumes after it)
      const added = [...result.rotations.keys()].filter((n) => !rotationsBefore.has(n));
      rotationsByLayer.push({ layer, names: added });
      await checkpoint.commitBlock(layer, hidden, new Map(added.map((n) => [n, result.rotations.get(n)!])), {
        completed: layer + 1, rng: rng.getState(), recipes: result.recipes, reports: result.reports, linears: done,
        rotations: rotationsByLayer,
      });
      // the block's time with its commit (the checkpoint's copy of the report was written without it)
      report.seconds = (performance.now() - tl) / 1000;
      const timed = result.reports.slice(state?.completed ?? 0);
      const remaining = config.numLayers - layer - 1;
      const eta = remaining === 0 ? '' : `; about ${formatDuration(remaining * timed.reduce((a, r) => a + r.seconds, 0) / timed.length)} to go`;
      progress.succeed(`${tag}: done in ${report.seconds.toFixed(1)} s (block output rel. error ${report.blockOutputRelError.toFixed(3)}${eta})`);
    }
  } finally {
    await engine.close();
    await reconstruction?.close();
    hidden.free();
  }
  return result;
}

/** Which groups are calibrated together: one float pass, two (attention, MLP) or one per group. */
export type SequentialMode = 'block' | 'halves' | 'groups';

function sequentialPhases(mode: SequentialMode): GroupSpec[][] {
  const g = (name: GroupName): GroupSpec => GROUPS.find((x) => x.name === name)!;
  switch (mode) {
    case 'block':
      return [[...GROUPS]];
    case 'halves':
      return [[g('attn_in'), g('attn_out')], [g('mlp_in'), g('mlp_out')]];
    case 'groups':
      return GROUPS.map((x) => [x]);
  }
}

/** Where the input Gram matrices are accumulated: not at all (the run reads none), in the runtime on the engine's
 *  device (only the sampled rows come back), or on the host from the whole taps with the numerics' Matmul. */
export type GramMode = 'none' | 'device' | 'host';

/**
 * Runs the block over all windows in batches, keeping the rows `picked` (ascending global token indices) of each tap
 * and, unless mode 'none', accumulating each tap's Gram matrix H = Σ_t x_t x_tᵀ over every token (float32).
 */
export async function collectStats(
  hidden: CalibrationStream, layer: number, bs: number,
  weights: BlockWeights, recipe: LayerRecipe, taps: readonly TapName[], picked: Int32Array, progress: Progress,
  gram: { mode: GramMode; mm: Matmul; readGram?: (tap: GramTapName) => Float32Array },
): Promise<{ stats: Map<TapName, Float32Array>; widths: Map<TapName, number>; grams: Map<TapName, InputGram>; firstOutput: Float32Array | undefined }> {
  const { windows: ns, seqlen } = hidden;
  const nBatches = Math.ceil(ns / bs);
  const stats = new Map<TapName, Float32Array>();
  const widths = new Map<TapName, number>();
  const hostGrams = new Map<TapName, Float32Array>();
  const gramTaps = taps.filter(isGramTap);
  let firstOutput: Float32Array | undefined;
  let cursor = 0;
  for (let b = 0; b < nBatches; b++) {
    const n = Math.min(bs, ns - b * bs);
    const lo = b * bs * seqlen;
    const hi = lo + n * seqlen;
    const first = cursor;
    let last = cursor;
    while (last < picked.length && picked[last]! < hi) last++;
    // on the device only the sampled rows of this batch come back (their indices within the batch)
    const onDevice = gram.mode === 'device';
    const rows = onDevice ? Int32Array.from(picked.subarray(first, last), (g) => g - lo) : undefined;
    const out = await hidden.run(layer, b * bs, n, {
      weights, recipe, taps, ...(onDevice ? { gramTaps, tapRows: rows } : {}),
    }, b === 0 ? 'return' : 'discard'); // the first batch's output: the block's error figure
    if (b === 0) firstOutput = out.output;
    const tapRows = onDevice ? last - first : n * seqlen;
    for (const t of taps) {
      const width = out.taps.get(t)!.length / tapRows;
      widths.set(t, width);
      if (!stats.has(t)) stats.set(t, new Float32Array(picked.length * width));
      if (gram.mode === 'host') {
        const x = out.taps.get(t)!;
        const batchGram = await gram.mm(x, x, width, n * seqlen, width, { transposeA: true });
        const acc = hostGrams.get(t);
        if (acc === undefined) hostGrams.set(t, batchGram);
        else for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! + batchGram[i]!;
      }
    }
    for (; cursor < last; cursor++) {
      const row = onDevice ? cursor - first : picked[cursor]! - lo;
      for (const t of taps) {
        const width = widths.get(t)!;
        stats.get(t)!.set(out.taps.get(t)!.subarray(row * width, (row + 1) * width), cursor * width);
      }
    }
    progress.update(b + 1, nBatches);
  }
  const grams = new Map<TapName, InputGram>();
  const tokens = ns * seqlen;
  if (gram.mode === 'device') for (const t of gramTaps) grams.set(t, { data: gram.readGram!(t), tokens });
  else for (const [t, data] of hostGrams) grams.set(t, { data, tokens });
  return { stats, widths, grams, firstOutput };
}

/** Attention taps of one window (truncated so the [heads, S, S] probs stay ≤ 64 MiB). */
async function calibrateAttention(
  runner: BlockEngine, layer: number, hidden: CalibrationStream, seqlen: number, weights: BlockWeights, recipe: LayerRecipe,
  config: ModelConfig, rows: number, rng: Rng, mm: Matmul,
): Promise<AttentionSearchResult> {
  const { numHeads: heads, numKvHeads: kvHeads, headDim, slidingWindow } = config;
  const cap = Math.max(16, Math.floor(Math.sqrt((64 * 2 ** 20) / (4 * heads))));
  const seq = Math.min(seqlen, cap);
  const hiddenSize = weights.inputNorm.weight.length;
  // the first `seq` positions of window 0 (causal: identical to the full window's prefix)
  const x = new Float32Array(seq * hiddenSize);
  x.set(hidden.read(0, 1).subarray(0, seq * hiddenSize));
  const out = await runner.run(layer, x, 1, seq, { weights, recipe, taps: ['query', 'key', 'value', 'probs'] });
  const picked = rng.sample(seq, Math.min(rows, seq));
  return searchAttentionTernary({
    query: out.taps.get('query')!, key: out.taps.get('key')!, value: out.taps.get('value')!, probs: out.taps.get('probs')!,
    heads, kvHeads, seq, headDim, slidingWindow, rows: picked,
  }, mm);
}

/** The dtype a quantized linear's simulated weight is spilled and written in. */
function simulatedLinearDtype(model: ModelDir, options: QuantizeOptions, name: string): SimulatedDtype {
  return options.simulatedDtype === 'float32' ? 'F32' : keptFloatDtype(model.checkpoint.info(name).dtype);
}

/** What the write-out needs besides the result: the spill files it consumes, the checkpoint it marks, the disk estimate. */
interface WriteOutContext {
  spill: LayerSpillStore;
  checkpoint: Checkpoint<LayerReport>;
  size: OutputSize;
  progress: Progress;
}

async function writeOutputs(model: ModelDir, temp: string, options: QuantizeOptions, seqlen: number, result: PipelineResult, seconds: number,
  device: string, digests: InputDigests, out: WriteOutContext): Promise<string[]> {
  const { checkpoint, config } = model;
  // simulated model (sharded, checkpoint dtype; unless --no-simulated) and packed model, block by block,
  // each block's spill file deleted once it is in both (src/pipeline/write-weights.ts)
  const files = await writeWeights(temp, {
    checkpoint, linears: result.linears, rotations: result.rotations, spill: out.spill,
    simulated: options.simulated !== false, packed: hasPackedModel(options.method), linearDtype: (name) => simulatedLinearDtype(model, options, name),
    ...(options.maxShardBytes === undefined ? {} : { maxShardBytes: options.maxShardBytes }),
    simulatedMetadata: { format: 'pt', bwq: `simulated-${options.method}` },
    packedMetadata: { format: 'bwq-packed-v1', method: options.method, a_bits: String(options.aBits), bwq_version: VERSION },
    beforeFirstRemoval: () => out.checkpoint.markWriteOut(),
  }, out.progress);

  // config.json: original + quantization_config; dtype: the quantized linears' checkpoint dtype (as written)
  const raw = JSON.parse(await readFile(join(model.dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const quantization: QuantizationConfig = {
    quant_method: 'bwq',
    bwq_version: VERSION,
    method: options.method,
    w_bits: 1,
    a_bits: options.aBits,
    layers: result.recipes,
    ...(hasPackedModel(options.method) ? { packed_weights: 'model.packed.safetensors' } : {}),
    settings: {
      calib: basename(options.calibFile), nsamples: options.nsamples, seqlen, seed: options.seed,
      rank: options.method === 'bwla' ? options.rank : 0,
      okt_iterations: options.method === 'bwla' ? options.oktIterations ?? BWLA_DEFAULTS.oktIterations : 0,
      okt_init: options.method === 'bwla' ? options.oktInit ?? 'random' : 'none',
      psp_iterations: options.method === 'bwla' ? options.pspIterations ?? BWLA_DEFAULTS.pspIterations : 0,
      psp_tau_ratio: options.pspTauRatio ?? 0.25,
      ...bwlaConfigSettings(options),
      psp_weighted: options.method === 'bwla' && (options.weightedPsp ?? true),
      data_aware_scale: (options.method === 'bwta' || options.method === 'bwla') && (options.dataAwareScale ?? true),
      ...baselineConfigSettings(options.method),
      stat_tokens: Math.min(options.statTokens ?? 512, options.nsamples * seqlen),
      gram_tokens: usesInputGram(options) ? options.nsamples * seqlen : 0,
      sequential: options.sequential ?? 'block',
    },
  };
  raw['quantization_config'] = quantization;
  const dtype = configDtypeName(new Set([...result.linears.keys()].map((n) => simulatedLinearDtype(model, options, n))));
  raw['dtype'] = dtype;
  if ('torch_dtype' in raw) raw['torch_dtype'] = dtype;
  await writeFile(join(temp, 'config.json'), `${JSON.stringify(raw, null, 2)}\n`);
  files.push('config.json');

  for (const f of COPIED_MODEL_FILES) {
    const src = join(model.dir, f);
    if ((await stat(src).catch(() => undefined))?.isFile()) {
      await copyFile(src, join(temp, f));
      files.push(f);
    }
  }

  const report = {
    bwq_version: VERSION, method: options.method, a_bits: options.aBits, model: options.modelDir,
    calib: options.calibFile, nsamples: options.nsamples, seqlen, seed: options.seed,
    architecture: config.architecture, device, seconds,
    // the sampled rows of the searches and the tokens of the Gram matrices (docs/ALGORITHMS.md "Calibration statistics")
    statistics: { stat_tokens: quantization.settings['stat_tokens'], gram_tokens: quantization.settings['gram_tokens'] },
    // pins the run: `bwq quantize --recipe OUT_DIR/quantize-report.json` repeats it (src/pipeline/recipe-file.ts)
    recipe: resolvedRecipe(options, seqlen, device), inputs: digests,
    disk: await diskReport(temp, files, out.size),
    // peak RSS so far and the bound of docs/FORMATS.md "Memory" (src/pipeline/host-memory.ts)
    memory: memoryReport(config, {
      method: options.method, nsamples: options.nsamples, seqlen, batch: batchSize(options.nsamples, seqlen, config.numHeads),
      statTokens: options.statTokens ?? 512, grams: usesInputGram(options), device: device.startsWith('cuda') ? 'cuda' : 'cpu',
      statesOnDevice: result.statesOnDevice,
      ...(options.reconstruct === undefined ? {} : { reconstruction: reconstructionShape(options, config) }),
    }),
    layers: result.reports,
  };
  await writeFile(join(temp, 'quantize-report.json'), `${JSON.stringify(report, null, 2)}\n`);
  files.push('quantize-report.json');
  return files;
}

/** The values of promises that all run at once, in their order; when any rejects, the first rejection in that order
 *  once every one has settled (none is left running behind the error). */
async function allInOrder<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  const settled = await Promise.allSettled(promises);
  for (const s of settled) if (s.status === 'rejected') throw s.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
}
