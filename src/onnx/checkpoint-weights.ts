/**
 * Model weights as ONNX initializers. F32, F16 and BF16 tensors are *external data* pointing
 * into the safetensors file at the tensor's absolute offset (no copy in JS; F16/BF16 go through a
 * Cast to float that ORT constant-folds when the session is created). Other dtypes are converted
 * to F32 in JS and stored inline.
 *
 * ORT only accepts external data locations that are relative and stay inside the folder it is
 * given (symlinks are resolved first), so locations are made relative to the deepest common
 * directory of the files' real paths (e.g. the `blobs/` folder of a Hugging Face cache snapshot
 * whose model.safetensors is a symlink).
 */
import { realpath } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import type { Checkpoint } from '../safetensors/checkpoint.js';
import { DataType, type DataTypeCode } from './onnx-proto.js';
import type { GraphBuilder } from './graph-builder.js';

const EXTERNAL_TYPES: Record<string, DataTypeCode> = { F32: DataType.FLOAT, F16: DataType.FLOAT16, BF16: DataType.BFLOAT16 };

/** Where ORT should look for external data, and each checkpoint file's location relative to it. */
export interface ExternalDataLayout {
  root: string;
  /** checkpoint file path (as in TensorInfo.file) → location relative to root */
  locations: Map<string, string>;
}

export async function externalDataLayout(files: readonly string[]): Promise<ExternalDataLayout> {
  const real = await Promise.all(files.map(async (f) => realpath(resolve(f)).catch(() => resolve(f))));
  let root = dirname(real[0] ?? resolve('.'));
  for (const r of real) {
    while (root !== dirname(root) && !(r === root || r.startsWith(root.endsWith(sep) ? root : root + sep))) root = dirname(root);
  }
  const locations = new Map<string, string>();
  files.forEach((f, i) => {
    const location = relative(root, real[i]!);
    if (location !== '' && !location.startsWith('..') && !isAbsolute(location)) locations.set(f, location);
  });
  return { root, locations };
}

export class CheckpointWeights {
  private readonly values = new Map<string, string>();

  constructor(
    private readonly g: GraphBuilder,
    private readonly checkpoint: Checkpoint,
    /** external data root and file locations (see externalDataLayout) */
    readonly layout: ExternalDataLayout,
  ) {}

  shape(name: string): readonly number[] {
    return this.checkpoint.info(name).shape;
  }

  /** Graph value (float32) holding the checkpoint tensor `name`. */
  async float(name: string): Promise<string> {
    const known = this.values.get(name);
    if (known !== undefined) return known;
    const info = this.checkpoint.info(name);
    const location = this.layout.locations.get(info.file);
    const type = EXTERNAL_TYPES[info.dtype];
    let value: string;
    if (type !== undefined && location !== undefined) {
      const init = this.g.initializer({
        name,
        dataType: type,
        dims: info.shape,
        external: { location, offset: info.fileOffset, length: info.byteLength },
      });
      value = type === DataType.FLOAT ? init : this.g.node('Cast', [init], { to: DataType.FLOAT }, `${name}.f32`);
    } else {
      const data = await this.checkpoint.readFloat32(name);
      value = this.g.initializer({ name, dataType: DataType.FLOAT, dims: info.shape, raw: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
    }
    this.values.set(name, value);
    return value;
  }

  async optional(name: string | undefined): Promise<string | undefined> {
    return name === undefined ? undefined : this.float(name);
  }
}
