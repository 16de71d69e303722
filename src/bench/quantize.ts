/**
 * `bwq bench --quantize`: wall time of `bwq quantize` per block and in total, on a checkpoint with random bf16
 * weights from a real config (bench/configs/*.json, or any config.json), cut to the first `layers` blocks, and
 * the whole model's time projected from it:
 *
 *   projected = (total − Σ block) + mean(block) · num_hidden_layers
 *
 * where total − Σ block is the work outside the blocks (reading, tokenizing and embedding the calibration text,
 * writing the outputs). Writing grows with the number of layers, so the projection slightly underestimates it;
 * the blocks dominate (docs/PERFORMANCE.md).
 *
 * The checkpoint is written to a temporary directory that this run makes and removes (with its output). Its
 * tokenizer and calibration text are the bundled model's: their ids (< 4096) are valid ids of every benchmark
 * config's vocabulary.
 */
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BwqError } from '../errors.js';
import { modelWeightNames, expectedShapes } from '../model/weights.js';
import { DEFAULT_MODEL_DIR } from '../package-paths.js';
import { quantizeModel, type QuantizeOptions } from '../pipeline/quantize.js';
import type { Progress } from '../progress.js';
import { randomModelSource } from '../runtime/random-model.js';
import { dtypeByteSize, type SafetensorsDtype } from '../safetensors/dtypes.js';
import { writeSafetensors, type TensorToWrite } from '../safetensors/writer.js';
import { loadBenchConfig } from './e2e.js';

/** The bundled tokenizer's vocabulary: a config must have at least this many ids. */
const BUNDLED_VOCAB = 4096;

export interface QuantizeBenchOptions {
  /** the run, as `bwq quantize` parses its flags (src/cli/commands/quantize.ts parseQuantizeOptions); its
   *  model and output directories are replaced by the bench's temporary ones */
  quantize: QuantizeOptions;
  /** blocks quantized (the first `layers` of the config) */
  layers: number;
  progress: Progress;
  /** where the bench makes (and removes) its temporary directory; default the system's */
  tempRoot?: string;
}

export interface QuantizeBenchReport {
  config: string;
  method: QuantizeOptions['method'];
  device: string;
  nsamples: number;
  seqlen: number;
  /** blocks quantized, and the config's number of blocks */
  layers: number;
  configLayers: number;
  /** bf16 bytes of the random checkpoint (the cut model) */
  checkpointBytes: number;
  blockSeconds: number[];
  meanBlockSeconds: number;
  /** wall time of the quantize call, and the part outside the blocks */
  totalSeconds: number;
  otherSeconds: number;
  /** the write-out of OUT_DIR (part of otherSeconds), and that time scaled to the whole model by its bytes */
  writeSeconds: number;
  projectedWriteSeconds: number;
  /** (total − Σ block − write) + projected write + mean(block) · configLayers */
  projectedSeconds: number;
  /** the process's peak resident set (bytes), including the checkpoint's generation */
  peakRssBytes: number;
  /** block-wise reconstruction (part of each block's time), when the run reconstructs */
  reconstruction?: {
    /** Adam steps per block and windows per step */
    iterations: number;
    batch: number;
    /** wall time of each block's reconstruction (float teacher block, training, freezing) */
    blockSeconds: number[];
    meanBlockSeconds: number;
    /** meanBlockSeconds / iterations */
    secondsPerStep: number;
  };
}

/** The tensors of a random checkpoint of `config` (src/runtime/random-model.ts), with its dtypes and its size in bytes. */
function randomCheckpoint(config: ReturnType<typeof loadBenchConfig>['config'], name: string): { tensors: TensorToWrite[]; bytes: number } {
  const store = randomModelSource(config, 'fp16', `random:${name}`).stores[0]!;
  const tensors: TensorToWrite[] = [];
  let bytes = 0;
  for (const [tensor, shape] of expectedShapes(config, modelWeightNames(config))) {
    const dtype = store.info(tensor).dtype as SafetensorsDtype & TensorToWrite['dtype'];
    bytes += shape.reduce((a, b) => a * b, 1) * dtypeByteSize(dtype);
    tensors.push({ name: tensor, dtype, shape, data: () => store.readBytes(tensor) });
  }
  return { tensors, bytes };
}

/** Writes a model directory with random bf16 weights for `config` cut to `layers` blocks. */
async function writeRandomCheckpoint(dir: string, raw: Record<string, unknown>, name: string, layers: number,
  base: ReturnType<typeof loadBenchConfig>['config']): Promise<number> {
  const { tensors, bytes } = randomCheckpoint({ ...base, numLayers: layers }, name);
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  await writeFile(join(dir, 'config.json'), `${JSON.stringify({ ...raw, num_hidden_layers: layers, dtype: 'bfloat16' }, null, 2)}\n`);
  for (const file of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(DEFAULT_MODEL_DIR, file), join(dir, file));
  return bytes;
}

export async function runQuantizeBench(configName: string, o: QuantizeBenchOptions): Promise<QuantizeBenchReport> {
  const { name, config, raw } = loadBenchConfig(configName);
  if (config.vocabSize < BUNDLED_VOCAB) {
    throw new BwqError(`bench --quantize needs vocab_size >= ${BUNDLED_VOCAB} (the bundled tokenizer's), got ${config.vocabSize}`,
      { file: configName });
  }
  if (o.layers > config.numLayers) {
    throw new BwqError(`--layers ${o.layers} exceeds the config's num_hidden_layers ${config.numLayers}`, { exitCode: 2 });
  }
  const work = await mkdtemp(join(o.tempRoot ?? tmpdir(), 'bwq-bench-quantize-'));
  try {
    const modelDir = join(work, 'model');
    await mkdir(modelDir);
    o.progress.start(`writing a random ${name} checkpoint (${o.layers} of ${config.numLayers} blocks)`);
    const checkpointBytes = await writeRandomCheckpoint(modelDir, raw, name, o.layers, config);
    o.progress.succeed(`random ${name} checkpoint: ${o.layers} blocks, ${(checkpointBytes / 2 ** 30).toFixed(2)} GiB bf16`);
    const summary = await quantizeModel({ ...o.quantize, modelDir, outDir: join(work, 'out'), force: false }, o.progress);
    const blockSeconds = summary.layers.map((l) => l.seconds);
    const sum = blockSeconds.reduce((a, b) => a + b, 0);
    const mean = sum / Math.max(1, blockSeconds.length);
    const otherSeconds = Math.max(0, summary.seconds - sum);
    // the outputs grow with the blocks: the write-out scaled by the whole model's checkpoint bytes over the cut one's
    const fullBytes = randomCheckpoint(config, name).bytes;
    const projectedWriteSeconds = summary.writeSeconds * fullBytes / checkpointBytes;
    const rec = o.quantize.reconstruct;
    const recSeconds = summary.layers.map((l) => l.reconstruction?.seconds ?? 0);
    const recMean = recSeconds.reduce((a, b) => a + b, 0) / Math.max(1, recSeconds.length);
    return {
      ...(rec === undefined ? {} : {
        reconstruction: {
          iterations: rec.iterations, batch: Math.min(rec.batch, summary.nsamples), blockSeconds: recSeconds,
          meanBlockSeconds: recMean, secondsPerStep: recMean / rec.iterations,
        },
      }),
      config: name, method: summary.method, device: summary.device, nsamples: summary.nsamples, seqlen: summary.seqlen,
      layers: o.layers, configLayers: config.numLayers, checkpointBytes, blockSeconds, meanBlockSeconds: mean,
      totalSeconds: summary.seconds, otherSeconds, writeSeconds: summary.writeSeconds, projectedWriteSeconds,
      projectedSeconds: Math.max(0, otherSeconds - summary.writeSeconds) + projectedWriteSeconds + mean * config.numLayers,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function minutes(seconds: number): string {
  return seconds < 120 ? `${seconds.toFixed(1)} s` : `${(seconds / 60).toFixed(1)} min`;
}

export function formatQuantizeBench(r: QuantizeBenchReport): string {
  return [
    `quantize bench ${r.config} (${r.method}) on ${r.device}: ${r.nsamples} x ${r.seqlen} calibration tokens`,
    `blocks ${r.layers} of ${r.configLayers}: ${r.blockSeconds.map((s) => s.toFixed(1)).join(', ')} s (mean ${r.meanBlockSeconds.toFixed(1)} s)`,
    ...(r.reconstruction === undefined ? [] : [
      `of which reconstruction (${r.reconstruction.iterations} steps of ${r.reconstruction.batch} x ${r.seqlen} tokens): `
      + `${r.reconstruction.blockSeconds.map((s) => s.toFixed(1)).join(', ')} s (mean ${r.reconstruction.meanBlockSeconds.toFixed(1)} s, `
      + `${(1000 * r.reconstruction.secondsPerStep).toFixed(0)} ms per step)`,
    ]),
    `total ${minutes(r.totalSeconds)} (outside the blocks ${minutes(r.otherSeconds)}, of which the write-out ${minutes(r.writeSeconds)})`,
    `projected for ${r.configLayers} blocks: ${minutes(r.projectedSeconds)} (the write-out ${minutes(r.projectedWriteSeconds)})`,
    `peak RSS ${(r.peakRssBytes / 2 ** 30).toFixed(2)} GiB`,
  ].join('\n');
}
