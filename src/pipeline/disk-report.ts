/**
 * The `disk` section of quantize-report.json: the up-front estimate of the run's peak disk use
 * (src/pipeline/output-size.ts, formula in docs/FORMATS.md "Disk use") by part, and the bytes of the
 * files actually written into OUT_DIR (the report itself excluded).
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { OutputSize } from './output-size.js';

export interface DiskReport {
  /** peak = max(layer_files, simulated + packed + copies + largest_block_layer_file) + checkpoint */
  estimated_peak_bytes: number;
  estimate: {
    simulated: number;
    packed: number;
    layer_files: number;
    largest_block_layer_file: number;
    checkpoint: number;
    copies: number;
  };
  /** bytes of the files in OUT_DIR before the report was added */
  output_bytes: number;
}

export async function diskReport(dir: string, files: readonly string[], size: OutputSize): Promise<DiskReport> {
  let written = 0;
  for (const f of files) written += (await stat(join(dir, f)).catch(() => undefined))?.size ?? 0;
  return {
    estimated_peak_bytes: size.total,
    estimate: {
      simulated: size.simulated, packed: size.packed, layer_files: size.spill, largest_block_layer_file: size.spillBlock,
      checkpoint: size.checkpoint, copies: size.copies,
    },
    output_bytes: written,
  };
}
