/**
 * Model weights as ONNX initializers. F32, F16 and BF16 tensors are *external data* pointing
 * into the safetensors file at the tensor's absolute offset (no copy in JS; F16/BF16 go through a
 * Cast to float that ORT constant-folds when the session is created). Other dtypes (and files
 * outside the model directory) are converted to F32 in JS and stored inline.
 */
import { isAbsolute, relative, resolve } from 'node:path';
import type { Checkpoint } from '../safetensors/checkpoint.js';
import { DataType, type DataTypeCode } from './onnx-proto.js';
import type { GraphBuilder } from './graph-builder.js';

const EXTERNAL_TYPES: Record<string, DataTypeCode> = { F32: DataType.FLOAT, F16: DataType.FLOAT16, BF16: DataType.BFLOAT16 };

export class CheckpointWeights {
  private readonly values = new Map<string, string>();

  constructor(
    private readonly g: GraphBuilder,
    private readonly checkpoint: Checkpoint,
    /** directory external data locations are relative to */
    readonly dir: string,
  ) {}

  shape(name: string): readonly number[] {
    return this.checkpoint.info(name).shape;
  }

  /** Graph value (float32) holding the checkpoint tensor `name`. */
  async float(name: string): Promise<string> {
    const known = this.values.get(name);
    if (known !== undefined) return known;
    const info = this.checkpoint.info(name);
    const location = relative(resolve(this.dir), resolve(info.file));
    const type = EXTERNAL_TYPES[info.dtype];
    let value: string;
    if (type !== undefined && !location.startsWith('..') && !isAbsolute(location)) {
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
