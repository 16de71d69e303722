/**
 * The weight files of a `bwq quantize` OUT_DIR, written block by block from the layer spill files:
 *
 *   simulated model   every checkpoint tensor with the quantized linears replaced by their simulated weights
 *                     (sign × scale (+ low-rank), in the rotated basis) plus the OKT factors; each tensor in
 *                     its checkpoint dtype when that is bf16 / fp16 / f32 (anything else as f32), the OKT
 *                     factors in f32; sharded as transformers shards (src/safetensors/shards.ts):
 *                     model.safetensors, or model-0000i-of-0000N.safetensors + model.safetensors.index.json
 *   packed model      model.packed.safetensors (bwq-packed-v1, docs/FORMATS.md): unquantized tensors in their
 *                     checkpoint dtype, per quantized linear qweight / wscale (/ lr_a, lr_b), the OKT factors
 *
 * Tensors go in block order (tensors outside the decoder layers first, then layer 0, 1, …; by name within
 * each), so both files advance together; as soon as a block is in both, its spill file is deleted. Disk use
 * therefore peaks at the outputs plus one block's spill file (docs/FORMATS.md, "Disk use").
 * `simulated: false` (`--no-simulated`) writes the packed model only; `packed: false` (billm, arb: weights that are
 * not sign × row scale) the simulated model only.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Progress } from '../progress.js';
import type { Checkpoint } from '../safetensors/checkpoint.js';
import { INDEX_FILE } from '../safetensors/checkpoint.js';
import { planShards, type ShardPlan } from '../safetensors/shards.js';
import { SafetensorsStreamWriter, type TensorSpec } from '../safetensors/stream-writer.js';
import type { TensorData } from '../safetensors/writer.js';
import type { LayerSpillStore, SimulatedDtype, SpilledLinear } from './layer-spill.js';

export const PACKED_FILE = 'model.packed.safetensors';

/** The dtype a tensor keeps in the outputs: its checkpoint dtype when bf16 / fp16 / f32, else f32. */
export function keptFloatDtype(checkpointDtype: string): SimulatedDtype {
  return checkpointDtype === 'BF16' || checkpointDtype === 'F16' ? checkpointDtype : 'F32';
}

/** config.json `dtype` of safetensors dtypes that all tensors share (else float32). */
export function configDtypeName(dtypes: ReadonlySet<SimulatedDtype>): 'bfloat16' | 'float16' | 'float32' {
  if (dtypes.size !== 1) return 'float32';
  const [only] = dtypes;
  return only === 'BF16' ? 'bfloat16' : only === 'F16' ? 'float16' : 'float32';
}

export interface QuantizedLinearEntry {
  q: SpilledLinear;
  /** HF name without `.weight` */
  prefix: string;
  bias: string | undefined;
}

export interface WeightsToWrite {
  checkpoint: Checkpoint;
  /** HF weight name → quantized linear (read from its spill file) */
  linears: ReadonlyMap<string, QuantizedLinearEntry>;
  /** OKT factor name → F32 tensor */
  rotations: ReadonlyMap<string, { data: Float32Array; shape: readonly number[] }>;
  spill: LayerSpillStore;
  /** write the simulated model too (else only the packed model) */
  simulated: boolean;
  /** write the packed model (default true; false: only the simulated model, for methods without one) */
  packed?: boolean;
  /** dtype of a quantized linear's simulated weight (as spilled); default keptFloatDtype of its checkpoint dtype */
  linearDtype?: (name: string) => SimulatedDtype;
  /** largest simulated shard, tensor bytes (default 5·10⁹ as transformers) */
  maxShardBytes?: number;
  simulatedMetadata: Record<string, string>;
  packedMetadata: Record<string, string>;
  /** runs once, before the first spill file is deleted (the checkpoint stops being resumable) */
  beforeFirstRemoval?: () => Promise<void>;
}

const LAYER = /(?:^|\.)layers\.(\d+)\./;

/** Decoder block of a tensor name (-1 outside the layers). */
function blockOf(name: string, linear: QuantizedLinearEntry | undefined): number {
  if (linear !== undefined) return linear.q.layer;
  const m = LAYER.exec(name);
  return m === null ? -1 : Number(m[1]);
}

interface Item {
  spec: TensorSpec;
  data: () => Promise<TensorData>;
}

/** One tensor name's share of both files: the same tensor in both (`shared`), or a simulated weight and its packed parts. */
interface Entry {
  simulated: Item;
  packed: Item[];
  shared: boolean;
}

interface Block {
  block: number;
  entries: Entry[];
  spilled: boolean;
}

/** Both outputs' tensors, grouped by block in write order. */
function planBlocks(w: WeightsToWrite): Block[] {
  const { checkpoint } = w;
  const byBlock = new Map<number, string[]>();
  const names = [...checkpoint.names(), ...w.rotations.keys()];
  for (const name of names) {
    const b = blockOf(name, w.linears.get(name));
    const list = byBlock.get(b) ?? [];
    list.push(name);
    byBlock.set(b, list);
  }
  const blocks: Block[] = [];
  for (const b of [...byBlock.keys()].sort((x, y) => x - y)) {
    const block: Block = { block: b, entries: [], spilled: false };
    for (const name of byBlock.get(b)!.sort()) {
      const rotation = w.rotations.get(name);
      if (rotation !== undefined) {
        const item = { spec: { name, dtype: 'F32' as const, shape: rotation.shape }, data: async () => rotation.data };
        block.entries.push({ simulated: item, packed: [item], shared: true });
        continue;
      }
      const info = checkpoint.info(name);
      const dtype = keptFloatDtype(info.dtype);
      const lin = w.linears.get(name);
      if (lin === undefined) {
        const item = {
          spec: { name, dtype, shape: info.shape },
          data: (): Promise<TensorData> => (dtype === info.dtype ? checkpoint.readBytes(name) : checkpoint.readFloat32(name)),
        };
        block.entries.push({ simulated: item, packed: [item], shared: true });
        continue;
      }
      block.spilled = true;
      const { q, prefix } = lin;
      const simDtype = w.linearDtype?.(name) ?? dtype;
      const packed: Item[] = [
        { spec: { name: `${prefix}.qweight`, dtype: 'U32', shape: [q.rows, Math.ceil(q.cols / 32)] }, data: () => q.read('qweight') },
        { spec: { name: `${prefix}.wscale`, dtype: 'F32', shape: [q.rows] }, data: () => q.read('wscale') },
      ];
      if (q.rank > 0) {
        packed.push({ spec: { name: `${prefix}.lr_a`, dtype: 'F32', shape: [q.rows, q.rank] }, data: () => q.read('lr_a') });
        packed.push({ spec: { name: `${prefix}.lr_b`, dtype: 'F32', shape: [q.rank, q.cols] }, data: () => q.read('lr_b') });
      }
      block.entries.push({ simulated: { spec: { name, dtype: simDtype, shape: [q.rows, q.cols] }, data: () => q.read('simulated') }, packed, shared: false });
    }
    blocks.push(block);
  }
  return blocks;
}

/** Simulated shards opened one after the other as their tensors come. */
class ShardedWriter {
  private shard = -1;
  private writer: SafetensorsStreamWriter | undefined;
  private readonly shardOf = new Map<string, number>();

  constructor(private readonly dir: string, readonly plan: ShardPlan, private readonly metadata: Record<string, string>) {
    plan.shards.forEach((s, i) => { for (const t of s.tensors) this.shardOf.set(t.name, i); });
  }

  async write(name: string, data: TensorData): Promise<void> {
    const shard = this.shardOf.get(name)!;
    if (shard !== this.shard) {
      await this.writer?.close();
      this.writer = undefined;
      this.shard = shard;
      const s = this.plan.shards[shard]!;
      this.writer = await SafetensorsStreamWriter.create(join(this.dir, s.file), s.tensors, this.metadata);
    }
    await this.writer!.write(name, data);
  }

  async close(): Promise<void> {
    await this.writer?.close();
    this.writer = undefined;
  }

  async abort(): Promise<void> {
    await this.writer?.abort();
    this.writer = undefined;
  }
}

/** Writes the weight files into `dir`; returns their names (simulated shards, index, packed file). */
export async function writeWeights(dir: string, w: WeightsToWrite, progress: Progress): Promise<string[]> {
  const blocks = planBlocks(w);
  const files: string[] = [];
  let sharded: ShardedWriter | undefined;
  if (w.simulated) {
    const plan = planShards(blocks.flatMap((b) => b.entries.map((e) => e.simulated.spec)), w.maxShardBytes);
    sharded = new ShardedWriter(dir, plan, w.simulatedMetadata);
    files.push(...plan.shards.map((s) => s.file));
    if (plan.index !== undefined) files.push(INDEX_FILE);
  }
  if (!w.simulated && w.packed === false) throw new Error('writeWeights: neither the simulated nor the packed model asked for');
  const packed = w.packed === false ? undefined
    : await SafetensorsStreamWriter.create(join(dir, PACKED_FILE), blocks.flatMap((b) => b.entries.flatMap((e) => e.packed.map((i) => i.spec))), w.packedMetadata);
  if (packed !== undefined) files.push(PACKED_FILE);
  let removed = false;
  progress.start(`writing ${!w.simulated ? 'the packed model' : packed === undefined ? 'the simulated model' : 'the simulated and packed models'}`);
  try {
    for (const [bi, block] of blocks.entries()) {
      for (const entry of block.entries) {
        // a tensor both files hold (embeddings, norms, rotations) is read once
        const first = sharded === undefined ? undefined : await entry.simulated.data();
        if (first !== undefined) await sharded!.write(entry.simulated.spec.name, first);
        for (const item of packed === undefined ? [] : entry.packed) {
          await packed!.write(item.spec.name, entry.shared && first !== undefined ? first : await item.data());
        }
      }
      if (block.spilled && block.block >= 0) {
        if (!removed) await w.beforeFirstRemoval?.();
        removed = true;
        await w.spill.removeLayer(block.block);
      }
      progress.update(bi + 1, blocks.length, block.block < 0 ? 'embeddings, final norm, lm_head' : `block ${block.block}`);
    }
    await sharded?.close();
    await packed?.close();
  } catch (error) {
    await sharded?.abort();
    await packed?.abort();
    throw error;
  }
  if (sharded?.plan.index !== undefined) await writeFile(join(dir, INDEX_FILE), sharded.plan.index);
  progress.succeed(`wrote ${files.join(', ')}`);
  return files;
}
