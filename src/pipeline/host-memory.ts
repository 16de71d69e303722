/**
 * The memory bound of one `bwq quantize` run (docs/FORMATS.md "Memory"): what the pipeline holds at its peak,
 * term by term, from the model's block shape and the run's calibration. None of the terms grows with the number
 * of layers: the hidden states are one stream of every calibration token, the weights are one block's.
 *
 * Host (bytes), T = nsamples·seqlen tokens, H hidden, QD = heads·head_dim, KV = kv_heads·head_dim, I intermediate,
 * V vocabulary, W = Σ rows·cols of one block's seven linears, R = rows of one block batch (≤ 8192 tokens),
 * ΣK = H + QD + H + I (the four linear-input widths), ΣK² their squares, s = statistics rows:
 *   runtime       256 MiB                             Node, onnxruntime, the addon, tokenizer, calibration text
 *   calibration   4·T·H + 8·T  (+ 4·T·H + reconstruction step and parameters with --reconstruct; calib-memory.ts);
 *                 8·T + 64 MiB when the hidden states are on the GPU (the checkpoint's reads and writes of them)
 *   embeddings    4·V·H                               the block engine's float32 embedding table
 *   block         k·4·W, k = 7 (rtn) or 10            the block's float32 weights, the runtime's copy, the simulated
 *                                                     weights, the method's temporaries (OKT, PSP, searches) and the
 *                                                     allocator's slack
 *   batch         4·R·(H + QD + 2·KV + 9·I)           the runtime session's scratch (CPU device only)
 *               + 4·R·(4·H + QD + I) + 8·R·KV         the taps and outputs handed back, the K/V cache
 *               + 4·b·heads·S²                        attention scores of the b windows of a batch
 *   statistics    4·s·ΣK
 *   Gram          4·ΣK² + 20·ΣK²                      H = Σ x xᵀ: one accumulator per tap, and for each group being
 *                 (bwta: 4·ΣK² + 20·K²max)            quantized (a phase's groups run at once; bwta's one at a time)
 *                                                     one batch's product or the rotation's copies (H R, its
 *                                                     transpose, Rᵀ H R, the rotation's scratch), then bwla's
 *                                                     compensation frame (Rᵀ H R, its damped copy, L⁻¹ and the
 *                                                     blocked Cholesky's quarter blocks: column-blocks.ts);
 *                                                     methods that read H
 * Device (CUDA): 4·W (the block, float32) + the session's scratch (the batch term's first and third lines) +
 * 4·ΣK² (Gram accumulators) + 8·R·Kmax (a batch's widest tap as hi + lo for the Gram's TF32 products) + 4·T·H (the
 * hidden states, when they are kept there) + the numerics' operand buffers, kept between products (the largest
 * product's three operands, or ≤ 3 × 256 MiB of kron_rotate chunks).
 */
import { blockWeightCount, calibrationMemory, type ReconstructionShape } from './calib-memory.js';

export const RUNTIME_BASE_BYTES = 256 * 2 ** 20;
/** the host chunk through which device-resident hidden states reach the checkpoint file (checkpoint.ts) */
const STATE_CHUNK_BYTES = 64 * 2 ** 20;

export interface MemoryModelShape {
  hiddenSize: number;
  intermediateSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
}

export interface MemoryRun {
  method: string;
  nsamples: number;
  seqlen: number;
  /** windows per block batch */
  batch: number;
  /** sampled statistics rows */
  statTokens: number;
  /** whether the method reads the Gram matrices of the linear inputs */
  grams: boolean;
  /** the block forwards' device: the session's scratch is in host memory only on the CPU */
  device: 'cpu' | 'cuda';
  /** the calibration hidden states live on the GPU (src/pipeline/calibration-stream.ts) */
  statesOnDevice?: boolean;
  reconstruction?: ReconstructionShape;
}

export interface MemoryBound {
  bytes: number;
  parts: Record<'runtime' | 'calibration' | 'embeddings' | 'block' | 'batch' | 'statistics' | 'gram', number>;
}

/** Weights of one block counted by the bound (k·4·W): k by method. */
export function blockCopies(method: string): number {
  return method === 'rtn' ? 7 : 10;
}

function widths(s: MemoryModelShape): { h: number; qd: number; kv: number; i: number; sum: number; sumSquares: number; max: number } {
  const h = s.hiddenSize;
  const qd = s.numHeads * s.headDim;
  const kv = s.numKvHeads * s.headDim;
  const i = s.intermediateSize;
  return { h, qd, kv, i, sum: 2 * h + qd + i, sumSquares: 2 * h * h + qd * qd + i * i, max: Math.max(h, qd, i) };
}

/** Session scratch of the runtime for R rows (native/runtime/forward.cpp Session::init) and the b windows' scores. */
function sessionBytes(s: MemoryModelShape, rows: number, windows: number, seqlen: number): number {
  const { h, qd, kv, i } = widths(s);
  return 4 * rows * (h + qd + 2 * kv + 9 * i) + 8 * rows * kv + 4 * windows * s.numHeads * seqlen * seqlen;
}

export function hostMemoryBound(s: MemoryModelShape, run: MemoryRun): MemoryBound {
  const { h, qd, i, sum, sumSquares, max } = widths(s);
  const tokens = run.nsamples * run.seqlen;
  const windows = Math.min(run.batch, run.nsamples);
  const rows = windows * run.seqlen;
  const w = blockWeightCount(h, { batch: 1, intermediateSize: i, numHeads: s.numHeads, numKvHeads: s.numKvHeads, headDim: s.headDim });
  const session = run.device === 'cpu' ? sessionBytes(s, rows, windows, run.seqlen) : 0;
  const parts = {
    runtime: RUNTIME_BASE_BYTES,
    calibration: run.statesOnDevice === true ? 8 * tokens + STATE_CHUNK_BYTES : calibrationMemory(run.nsamples, run.seqlen, h, run.reconstruction).bytes,
    embeddings: 4 * s.vocabSize * h,
    block: blockCopies(run.method) * 4 * w,
    batch: session + 4 * rows * (4 * h + qd + i),
    statistics: 4 * Math.min(run.statTokens, tokens) * sum,
    gram: run.grams ? 4 * sumSquares + 20 * (run.method === 'bwta' ? max * max : sumSquares) : 0,
  };
  let bytes = 0;
  for (const v of Object.values(parts)) bytes += v;
  return { bytes, parts };
}

/** The device memory of a run whose blocks run on a GPU (the terms the module comment lists, transients aside). */
export function deviceMemoryBound(s: MemoryModelShape, run: MemoryRun): number {
  const { h, i, sumSquares, max } = widths(s);
  const windows = Math.min(run.batch, run.nsamples);
  const rows = windows * run.seqlen;
  const w = blockWeightCount(h, { batch: 1, intermediateSize: i, numHeads: s.numHeads, numKvHeads: s.numKvHeads, headDim: s.headDim });
  // the Gram accumulators, and a batch's widest tap split in two for the TF32 products (CudaBackend::gram)
  return 4 * w + sessionBytes(s, rows, windows, run.seqlen) + (run.grams ? 4 * sumSquares + 8 * rows * max : 0)
    + (run.statesOnDevice === true ? 4 * run.nsamples * run.seqlen * h : 0);
}

/** quantize-report.json's `memory`: the peak RSS of the run so far (getrusage) and the bounds above. */
export function memoryReport(s: MemoryModelShape, run: MemoryRun): {
  peak_rss_bytes: number; host_bound_bytes: number; host_bound_parts: MemoryBound['parts']; device_bound_bytes?: number;
} {
  const host = hostMemoryBound(s, run);
  return {
    peak_rss_bytes: process.resourceUsage().maxRSS * 1024,
    host_bound_bytes: host.bytes,
    host_bound_parts: host.parts,
    ...(run.device === 'cuda' ? { device_bound_bytes: deviceMemoryBound(s, run) } : {}),
  };
}
