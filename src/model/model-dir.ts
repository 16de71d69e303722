/**
 * A Hugging Face model directory: config.json + safetensors checkpoint (single or sharded), or a quantized
 * OUT_DIR holding only its packed model (`bwq quantize --no-simulated`, src/model/packed-only.ts).
 */
import { stat } from 'node:fs/promises';
import { BwqError } from '../errors.js';
import { Checkpoint } from '../safetensors/checkpoint.js';
import { hasSimulatedWeights, openPackedOnly } from './packed-only.js';
import { loadModelConfig, type ModelConfig } from './config.js';
import { rotationTensorNames } from './quantization-config.js';
import { checkWeightShapes, resolveWeightNames, type ModelWeightNames } from './weights.js';

export interface ModelDir {
  dir: string;
  config: ModelConfig;
  checkpoint: Checkpoint;
  /** Weight names resolved against the checkpoint (all present). */
  weightNames: ModelWeightNames;
  /**
   * true for a quantized OUT_DIR written with --no-simulated: `checkpoint` is its packed file and the
   * quantized linears exist only packed (src/model/packed-only.ts)
   */
  packedOnly?: boolean;
}

/** Opens DIR; BwqError for a missing directory, config, weights or required tensor. */
export async function openModelDir(dir: string): Promise<ModelDir> {
  const s = await stat(dir).catch(() => undefined);
  if (s === undefined) throw new BwqError('model directory not found', { file: dir });
  if (!s.isDirectory()) throw new BwqError('not a directory (expected a model directory with config.json)', { file: dir });
  const config = await loadModelConfig(dir);
  // (billm / arb OUT_DIRs have no packed model: their simulated model is the only checkpoint)
  const packedWeights = config.quantization?.packed_weights;
  if (packedWeights !== undefined && !(await hasSimulatedWeights(dir))) {
    return { dir, config, ...(await openPackedOnly(dir, config, packedWeights)), packedOnly: true };
  }
  const checkpoint = await Checkpoint.open(dir);
  try {
    const where = checkpoint.indexFile ?? checkpoint.files[0] ?? dir;
    const weightNames = resolveWeightNames(config, checkpoint, where);
    checkWeightShapes(config, weightNames, checkpoint, where);
    if (config.quantization !== undefined) {
      for (const name of rotationTensorNames(config.quantization)) {
        if (!checkpoint.has(name)) {
          throw new BwqError(`rotation tensor '${name}' named in quantization_config is missing from the checkpoint`, { file: where });
        }
      }
    }
    return { dir, config, checkpoint, weightNames };
  } catch (error) {
    await checkpoint.close().catch(() => undefined);
    throw error;
  }
}
