/**
 * The contract of bwq's compute engine as TypeScript sees it: a model held on one device (the native
 * runtime, native/runtime/) with a KV cache for `batch` sequences of up to `maxSeq` positions. Every
 * call is one host call into native code: the whole forward runs there (docs/RUNTIME.md).
 */
import type { ModelConfig } from '../model/config.js';

export type RuntimeDevice = 'auto' | 'cpu' | 'cuda';

/** Which logits a forward returns: every position's, the last position's of each sequence, or none. */
export type LogitsWanted = 'all' | 'last' | 'none';

export interface ForwardTiming {
  /** Wall seconds of the native call (the host waits for the device). */
  readonly seconds: number;
}

export interface RuntimeSession {
  readonly config: ModelConfig;
  /** e.g. 'cpu (avx512, 2 threads)' or 'cuda (NVIDIA H100 80GB HBM3, sm_90)' */
  readonly device: string;
  readonly batch: number;
  readonly maxSeq: number;
  /** Positions already in the cache (the same for every sequence). */
  readonly position: number;
  /** Bytes held on the device: weights, cache and scratch. */
  readonly residentBytes: number;
  /** True once one-token forwards returning the last logits replay a recorded step (CUDA graph). */
  readonly replaying: boolean;
  /** Forgets the cache (position back to 0). */
  reset(): void;
  /**
   * Appends `t` tokens to each of the `batch` sequences (ids [batch * t], sequence-major) at the current
   * position and advances it by t. Logits: 'all' → [batch * t, vocab], 'last' → [batch, vocab], 'none' → empty.
   */
  forward(ids: Int32Array, t: number, logits: LogitsWanted): Float32Array;
  /**
   * Mean-NLL pieces of `ids` [batch * t] run from position 0 (the cache is reset first): the sum over
   * positions 0 … t−2 of each row predicting the next token, and that count (batch·(t−1)).
   */
  nll(ids: Int32Array, t: number): { sum: number; count: number };
  /** Frees the device memory. */
  close(): void;
}

export interface OpenRuntimeOptions {
  device?: RuntimeDevice;
  /** KV-cache length; default the model's max_position_embeddings (clamped to what fits). */
  maxSeq?: number;
  batch?: number;
  /** CPU threads (CPU backend). */
  threads?: number;
}
