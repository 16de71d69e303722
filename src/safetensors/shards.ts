/**
 * Sharded checkpoints as transformers' `save_pretrained` writes them (through huggingface_hub's
 * `split_torch_state_dict_into_shards`): tensors are taken in order and a new shard starts when the
 * next tensor would push the current one past the maximum size (tensor bytes, headers not counted);
 * a tensor larger than the maximum gets a shard of its own (here in its place, so shards keep the tensor
 * order; huggingface_hub lists such shards first). One shard is written as
 * `model.safetensors` without an index; N > 1 shards as `model-0000i-of-0000N.safetensors` plus
 * `model.safetensors.index.json`:
 *   {"metadata": {"total_parameters": elements, "total_size": tensor bytes}, "weight_map": {name: shard file}}
 * (keys sorted, two-space indent, as transformers writes it).
 */
import { dtypeByteSize } from './dtypes.js';
import { SINGLE_FILE } from './checkpoint.js';
import type { TensorSpec } from './stream-writer.js';

/** transformers' default `max_shard_size` ("5GB" = 5·10⁹ bytes). */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

export interface Shard {
  file: string;
  tensors: TensorSpec[];
  /** tensor bytes in this shard */
  bytes: number;
}

export interface ShardPlan {
  shards: Shard[];
  /** model.safetensors.index.json contents, or undefined for a single file */
  index: string | undefined;
}

const elementsOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
export const tensorBytes = (t: TensorSpec): number => elementsOf(t.shape) * dtypeByteSize(t.dtype);

/** transformers' shard file name: model-00001-of-00003.safetensors. */
export function shardFileName(index: number, count: number): string {
  const pad = (n: number): string => String(n).padStart(5, '0');
  return `model-${pad(index + 1)}-of-${pad(count)}.safetensors`;
}

/** true for a name `shardFileName` produces. */
export function isShardFileName(name: string): boolean {
  return /^model-\d{5,}-of-\d{5,}\.safetensors$/.test(name);
}

/** Splits `tensors` (in order) into shards of at most `maxShardBytes` tensor bytes each. */
export function planShards(tensors: readonly TensorSpec[], maxShardBytes: number = DEFAULT_MAX_SHARD_BYTES): ShardPlan {
  if (!(maxShardBytes > 0)) throw new RangeError(`max shard size must be positive, got ${maxShardBytes}`);
  const groups: { tensors: TensorSpec[]; bytes: number }[] = [];
  let current: { tensors: TensorSpec[]; bytes: number } = { tensors: [], bytes: 0 };
  for (const t of tensors) {
    const size = tensorBytes(t);
    if (current.tensors.length > 0 && current.bytes + size > maxShardBytes) {
      groups.push(current);
      current = { tensors: [], bytes: 0 };
    }
    current.tensors.push(t);
    current.bytes += size;
  }
  if (current.tensors.length > 0 || groups.length === 0) groups.push(current);
  if (groups.length === 1) return { shards: [{ file: SINGLE_FILE, ...groups[0]! }], index: undefined };
  const shards = groups.map((g, i) => ({ file: shardFileName(i, groups.length), ...g }));
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  let totalParameters = 0;
  for (const s of shards) {
    for (const t of s.tensors) {
      weightMap[t.name] = s.file;
      totalParameters += elementsOf(t.shape);
    }
    totalSize += s.bytes;
  }
  const sorted = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]!]));
  const index = { metadata: { total_parameters: totalParameters, total_size: totalSize }, weight_map: sorted };
  return { shards, index: `${JSON.stringify(index, null, 2)}\n` };
}

