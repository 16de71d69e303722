/**
 * The packed-weights file of a quantized OUT_DIR (quantization_config.packed_weights, layout bwq-packed-v1,
 * docs/FORMATS.md), opened and checked; undefined for a model without quantization_config.
 */
import { join } from 'node:path';
import { BwqError } from '../errors.js';
import { SafetensorsFile } from '../safetensors/reader.js';
import type { ModelDir } from './model-dir.js';

export const PACKED_FORMAT = 'bwq-packed-v1';

export async function openPackedFile(model: ModelDir): Promise<{ file: SafetensorsFile; path: string } | undefined> {
  const q = model.config.quantization;
  if (q === undefined) return undefined;
  if (q.packed_weights === undefined) {
    throw new BwqError(`method ${q.method} has no packed model (bwq writes only its simulated model; docs/FORMATS.md), which the runtime needs (eval --backend native, generate): evaluate it with eval --backend onnx`,
      { file: model.dir, exitCode: 2 });
  }
  const path = join(model.dir, q.packed_weights);
  const file = await SafetensorsFile.open(path);
  const format = file.metadata['format'];
  if (format !== undefined && format !== PACKED_FORMAT) {
    await file.close();
    throw new BwqError(`packed-weights format is '${format}', expected '${PACKED_FORMAT}'`, { file: path });
  }
  return { file, path };
}
