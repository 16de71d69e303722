/**
 * Full-model forward pass in onnxruntime-node (CPU): float, or simulated-quantized when the
 * model's config carries `quantization_config` (the recipe ops are inserted per layer).
 * Two graphs are built lazily: one returning logits, one returning per-token NLL
 * (LogSoftmax + GatherElements inside the graph, so logits never leave ORT during eval).
 */
import type { ModelConfig } from '../model/config.js';
import type { ModelDir } from '../model/model-dir.js';
import { BwqError } from '../errors.js';
import { buildModelGraph, checkSupported, type HeadMode } from './model-graph.js';
import { externalDataLayout } from './checkpoint-weights.js';
import { causalMask, ropeTables } from './rope.js';
import { createSession, floatTensor, int64Tensor, outputData, type ort } from './session.js';

export interface ModelRunner {
  readonly config: ModelConfig;
  /** ids: [batch*seq] Int32 → logits Float32 [batch, seq, vocab] */
  logits(ids: Int32Array, batch: number, seq: number): Promise<Float32Array>;
  /** sum of NLL of ids[t+1] given ids[..t] for each row, and the count of predicted tokens */
  nll(ids: Int32Array, batch: number, seq: number): Promise<{ sum: number; count: number }>;
  close(): Promise<void>;
}

/** Per-sequence-length graph inputs (mask, cos, sin), cached for the last few lengths. */
export class SequenceFeeds {
  private readonly cache = new Map<number, Record<string, ort.Tensor>>();

  constructor(private readonly config: ModelConfig) {}

  get(seq: number): Record<string, ort.Tensor> {
    let feeds = this.cache.get(seq);
    if (feeds === undefined) {
      const window = this.config.slidingWindow !== undefined && this.config.slidingWindow < seq ? this.config.slidingWindow : undefined;
      feeds = { mask: floatTensor(causalMask(seq, window), [seq, seq]) };
      if (this.config.rope !== undefined) {
        const { cos, sin, dim } = ropeTables(this.config, seq);
        feeds['cos'] = floatTensor(cos, [seq, dim]);
        feeds['sin'] = floatTensor(sin, [seq, dim]);
      }
      if (this.cache.size >= 4) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(seq, feeds);
    }
    return feeds;
  }
}

export function checkIds(config: ModelConfig, ids: Int32Array, batch: number, seq: number): void {
  if (!Number.isInteger(batch) || !Number.isInteger(seq) || batch < 1 || seq < 1) throw new Error(`bad batch/seq ${batch}x${seq}`);
  if (ids.length !== batch * seq) throw new Error(`ids has ${ids.length} entries, expected ${batch}x${seq}`);
  if (seq > config.maxPositionEmbeddings) {
    throw new BwqError(`sequence length ${seq} exceeds max_position_embeddings ${config.maxPositionEmbeddings}`);
  }
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= config.vocabSize) throw new BwqError(`token id ${id} outside the vocabulary (size ${config.vocabSize})`);
  }
}

export async function createModelRunner(model: ModelDir, options: { threads?: number } = {}): Promise<ModelRunner> {
  const { config } = model;
  checkSupported(config, model.dir);
  const feeds = new SequenceFeeds(config);
  const layout = await externalDataLayout(model.checkpoint.files);
  const sessions = new Map<HeadMode, Promise<ort.InferenceSession>>();
  const session = (mode: HeadMode): Promise<ort.InferenceSession> => {
    let s = sessions.get(mode);
    if (s === undefined) {
      s = buildModelGraph(model, mode, layout).then((bytes) =>
        createSession(bytes, { threads: options.threads, externalDataDir: layout.root }),
      );
      sessions.set(mode, s);
    }
    return s;
  };
  const run = async (mode: HeadMode, ids: Int32Array, batch: number, seq: number): Promise<Float32Array> => {
    checkIds(config, ids, batch, seq);
    const s = await session(mode);
    const out = await s.run({ ids: int64Tensor(ids, [batch, seq]), ...feeds.get(seq) });
    return outputData(out, mode);
  };
  return {
    config,
    logits: (ids, batch, seq) => run('logits', ids, batch, seq),
    async nll(ids, batch, seq) {
      if (seq < 2) return { sum: 0, count: 0 };
      const values = await run('nll', ids, batch, seq);
      let sum = 0;
      for (let i = 0; i < values.length; i++) sum += values[i]!;
      return { sum, count: batch * (seq - 1) };
    },
    async close() {
      for (const s of sessions.values()) await (await s).release();
      sessions.clear();
    },
  };
}
