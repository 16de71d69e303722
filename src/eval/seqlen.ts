/** Resolution of the evaluation window length against the model's context. */
import { BwqError } from '../errors.js';

export const DEFAULT_SEQLEN = 2048;

/**
 * Explicit seqlen: must be ≥ 2 and ≤ max_position_embeddings (error naming `file` otherwise).
 * Default: 2048 clamped to max_position_embeddings.
 */
export function resolveSeqlen(explicit: number | undefined, maxPositionEmbeddings: number, file: string): number {
  if (explicit === undefined) return Math.min(DEFAULT_SEQLEN, maxPositionEmbeddings);
  if (explicit < 2) throw new BwqError(`--seqlen must be at least 2, got ${explicit}`, { exitCode: 2 });
  if (explicit > maxPositionEmbeddings) {
    throw new BwqError(`--seqlen ${explicit} exceeds the model's max_position_embeddings ${maxPositionEmbeddings}`, { file, exitCode: 2 });
  }
  return explicit;
}
