/**
 * Memory of the calibration state of `bwq quantize`, checked before anything is tokenized so that an
 * impossible `--nsamples`/`--seqlen` is refused in one line with the estimate (instead of
 * "internal error: Invalid typed array length" after minutes). Per calibration token the pipeline keeps
 *   hidden states   hidden_size float32 (src/pipeline/quantize.ts: one Float32Array [nsamples·seqlen·H])
 *   token ids       one int32 (src/data/calibration.ts)
 *   sample index    one int32 (Rng.sample's permutation over all tokens, for the statistics subset)
 * Everything else (one block's batch, the statistics rows) is bounded independently of nsamples.
 * Bounds: the whole state must fit in the machine's memory (os.totalmem()) and the hidden states in
 * one typed array (buffer.constants.MAX_LENGTH elements: 2^32 in Node 20).
 */
import { constants } from 'node:buffer';
import { totalmem } from 'node:os';
import { BwqError } from '../errors.js';
import { formatSize } from '../fs/size.js';

export interface CalibrationMemory {
  hiddenElements: number;
  bytes: number;
}

export function calibrationMemory(nsamples: number, seqlen: number, hiddenSize: number): CalibrationMemory {
  const tokens = nsamples * seqlen;
  const hiddenElements = tokens * hiddenSize;
  return { hiddenElements, bytes: 4 * hiddenElements + 4 * tokens + 4 * tokens };
}

/** BwqError (usage, exit 2) when the calibration state cannot fit; `limits` are for tests. */
export function checkCalibrationMemory(
  nsamples: number, seqlen: number, hiddenSize: number,
  limits: { totalMemory?: number; maxTypedArrayLength?: number } = {},
): CalibrationMemory {
  const memory = calibrationMemory(nsamples, seqlen, hiddenSize);
  const total = limits.totalMemory ?? totalmem();
  const maxLength = limits.maxTypedArrayLength ?? constants.MAX_LENGTH;
  const what = `--nsamples ${nsamples} × --seqlen ${seqlen} needs about ${formatSize(memory.bytes)} of calibration state`
    + ` (${nsamples * seqlen} tokens × hidden size ${hiddenSize} float32)`;
  if (memory.bytes > total) {
    throw new BwqError(`${what}, more than this machine's ${formatSize(total)} of memory; lower --nsamples or --seqlen`, { exitCode: 2 });
  }
  if (memory.hiddenElements > maxLength) {
    throw new BwqError(`${what}, more than one typed array can hold (${maxLength} elements); lower --nsamples or --seqlen`, { exitCode: 2 });
  }
  return memory;
}
