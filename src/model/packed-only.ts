/**
 * A quantized OUT_DIR written with `bwq quantize --no-simulated` holds the packed model only
 * (quantization_config.packed_weights, no model.safetensors / index). Its packed file then serves as the
 * checkpoint: embeddings, norms, lm_head and OKT factors are there under their own names, and a quantized
 * linear `<prefix>.weight` is there as `<prefix>.qweight` [rows, ⌈cols/32⌉] + `<prefix>.wscale` [rows]
 * (+ lr_a, lr_b). Names resolve and shapes are checked against the config on that basis; the runtime
 * (`--backend native`) runs such a model, the ONNX backend, which needs the simulated weights, does not.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BwqError } from '../errors.js';
import { Checkpoint, INDEX_FILE, SINGLE_FILE } from '../safetensors/checkpoint.js';
import type { ModelConfig } from './config.js';
import { describeShapeMismatches, expectedShapes, resolveWeightNames, type ModelWeightNames, type ShapeMismatch } from './weights.js';

const QWEIGHT = (weight: string): string => weight.replace(/\.weight$/, '.qweight');
const WSCALE = (weight: string): string => weight.replace(/\.weight$/, '.wscale');

/** Whether a (quantized) model directory has its simulated model: model.safetensors, or shards with an index. */
export async function hasSimulatedWeights(dir: string): Promise<boolean> {
  for (const f of [INDEX_FILE, SINGLE_FILE]) if ((await stat(join(dir, f)).catch(() => undefined))?.isFile() === true) return true;
  return false;
}

/** Opens the packed file of a --no-simulated OUT_DIR as its checkpoint, with resolved and checked names. */
export async function openPackedOnly(dir: string, config: ModelConfig, packedWeights: string):
  Promise<{ checkpoint: Checkpoint; weightNames: ModelWeightNames }> {
  const path = join(dir, packedWeights);
  const checkpoint = await Checkpoint.openFile(path);
  try {
    const packed = (name: string): boolean => name.endsWith('.weight') && !checkpoint.has(name) && checkpoint.has(QWEIGHT(name));
    const weightNames = resolveWeightNames(config, {
      has: (name) => checkpoint.has(name) || packed(name),
      names: () => checkpoint.names(),
    }, path);
    const mismatches: ShapeMismatch[] = [];
    for (const [name, expected] of expectedShapes(config, weightNames)) {
      const check = (tensor: string, want: number[]): void => {
        const actual = checkpoint.info(tensor).shape;
        if (actual.length !== want.length || actual.some((d, i) => d !== want[i])) mismatches.push({ name: tensor, actual: [...actual], expected: want });
      };
      if (!packed(name)) {
        check(name, expected);
        continue;
      }
      const [rows = 0, cols = 0] = expected;
      check(QWEIGHT(name), [rows, Math.ceil(cols / 32)]);
      if (!checkpoint.has(WSCALE(name))) throw new BwqError(`packed linear '${QWEIGHT(name)}' has no '${WSCALE(name)}'`, { file: path });
      check(WSCALE(name), [rows]);
    }
    if (mismatches.length > 0) throw new BwqError(describeShapeMismatches(mismatches), { file: path });
    return { checkpoint, weightNames };
  } catch (error) {
    await checkpoint.close().catch(() => undefined);
    throw error;
  }
}
