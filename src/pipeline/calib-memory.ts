/**
 * Memory of the calibration state of `bwq quantize`, checked before anything is tokenized so that an
 * impossible `--nsamples`/`--seqlen` is refused in one line with the estimate (instead of
 * "internal error: Invalid typed array length" after minutes). Per calibration token the pipeline keeps
 *   hidden states   hidden_size float32 (src/pipeline/quantize.ts: one Float32Array [nsamples·seqlen·H])
 *   token ids       one int32 (src/data/calibration.ts)
 *   sample index    one int32 (Rng.sample's permutation over all tokens, for the statistics subset)
 * and with block-wise reconstruction (src/pipeline/reconstruct.ts) also
 *   float stream    hidden_size float32 (the teacher's inputs / outputs, advanced in place block by block)
 * Reconstruction adds two terms independent of nsamples (reconstructionWorkBytes below): the training step's
 * activations for `batch` windows and the block's parameter state. Everything else (one block's batch, the
 * statistics rows) is bounded independently of nsamples.
 * Bounds: the whole state must fit in the machine's memory (os.totalmem()) and each hidden stream in
 * one typed array (buffer.constants.MAX_LENGTH elements: 2^32 in Node 20).
 */
import { constants } from 'node:buffer';
import { totalmem } from 'node:os';
import { BwqError } from '../errors.js';
import { formatSize } from '../fs/size.js';

/** What the reconstruction's memory depends on (the model's block shape and --rec-batch). */
export interface ReconstructionShape {
  /** windows per training step (--rec-batch, at most nsamples) */
  batch: number;
  intermediateSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
}

export interface CalibrationMemory {
  hiddenElements: number;
  bytes: number;
  /** with reconstruction: its float stream (per token) and its step and parameter state (per block) */
  reconstruction?: { floatStreamBytes: number; stepBytes: number; parameterBytes: number };
}

/** Σ rows·cols over the seven linears of one block. */
export function blockWeightCount(hiddenSize: number, r: ReconstructionShape): number {
  const qd = r.numHeads * r.headDim;
  const kv = r.numKvHeads * r.headDim;
  return 2 * hiddenSize * qd + 2 * hiddenSize * kv + 3 * hiddenSize * r.intermediateSize;
}

/**
 * The reconstruction's working set for one block, in bytes (src/quant/reconstruct/):
 *   step         4·batch·seqlen·2·(10·H + 7·QD + 8·KV + 5·I)   the forward cache of every op (inputs, site outputs,
 *                                                               rotations and q/k norms included) and as much again for
 *                                                               the backward's gradients in flight
 *              + 4·batch·(2·heads + 3)·seqlen²                  softmax P and its quantized P̂ per head, kept for the
 *                                                               backward; ∂P̂, ∂P, ∂S of the head being differentiated
 *   parameters   4·7·W + 4·max linear                           per block weight: latent Λ, its gradient, Ŵ, Adam's two
 *                                                               moments, the starting point's copy, the frozen Ŵ; ∂Ŵ of one
 *                                                               linear (W: weights of the block's seven linears)
 */
export function reconstructionWorkBytes(seqlen: number, hiddenSize: number, r: ReconstructionShape): { stepBytes: number; parameterBytes: number } {
  const h = hiddenSize;
  const qd = r.numHeads * r.headDim;
  const kv = r.numKvHeads * r.headDim;
  const i = r.intermediateSize;
  const perToken = 2 * (10 * h + 7 * qd + 8 * kv + 5 * i);
  const stepBytes = 4 * r.batch * seqlen * perToken + 4 * r.batch * (2 * r.numHeads + 3) * seqlen * seqlen;
  const largest = Math.max(qd * h, h * i);
  const parameterBytes = 4 * 7 * blockWeightCount(h, r) + 4 * largest;
  return { stepBytes, parameterBytes };
}

export function calibrationMemory(nsamples: number, seqlen: number, hiddenSize: number, reconstruction?: ReconstructionShape): CalibrationMemory {
  const tokens = nsamples * seqlen;
  const hiddenElements = tokens * hiddenSize;
  const bytes = 4 * hiddenElements + 4 * tokens + 4 * tokens;
  if (reconstruction === undefined) return { hiddenElements, bytes };
  const floatStreamBytes = 4 * hiddenElements;
  const { stepBytes, parameterBytes } = reconstructionWorkBytes(seqlen, hiddenSize, reconstruction);
  return {
    hiddenElements, bytes: bytes + floatStreamBytes + stepBytes + parameterBytes,
    reconstruction: { floatStreamBytes, stepBytes, parameterBytes },
  };
}

/** BwqError (usage, exit 2) when the calibration state cannot fit; `limits` are for tests. */
export function checkCalibrationMemory(
  nsamples: number, seqlen: number, hiddenSize: number,
  limits: { totalMemory?: number; maxTypedArrayLength?: number } = {},
  reconstruction?: ReconstructionShape,
): CalibrationMemory {
  const memory = calibrationMemory(nsamples, seqlen, hiddenSize, reconstruction);
  const total = limits.totalMemory ?? totalmem();
  const maxLength = limits.maxTypedArrayLength ?? constants.MAX_LENGTH;
  const r = memory.reconstruction;
  const parts = r === undefined ? '' : `; with reconstruction: float stream ${formatSize(r.floatStreamBytes)}, training step `
    + `${formatSize(r.stepBytes)}, block parameters ${formatSize(r.parameterBytes)}`;
  const what = `--nsamples ${nsamples} × --seqlen ${seqlen} needs about ${formatSize(memory.bytes)} of calibration state`
    + ` (${nsamples * seqlen} tokens × hidden size ${hiddenSize} float32${parts})`;
  if (memory.bytes > total) {
    throw new BwqError(`${what}, more than this machine's ${formatSize(total)} of memory; lower --nsamples or --seqlen`, { exitCode: 2 });
  }
  if (memory.hiddenElements > maxLength) {
    throw new BwqError(`${what}, more than one typed array can hold (${maxLength} elements); lower --nsamples or --seqlen`, { exitCode: 2 });
  }
  return memory;
}
