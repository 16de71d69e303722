import { fileURLToPath } from 'node:url';
import { SafetensorsFile } from '../../src/safetensors/reader.js';

const path = fileURLToPath(new URL('../fixtures/quant/quant_reference.safetensors', import.meta.url));

export interface RefTensor { data: Float64Array; shape: number[]; raw: Uint8Array; dtype: string }

/** All tensors of test/fixtures/quant/quant_reference.safetensors (written by make_quant_reference.py). */
export async function loadQuantReference(): Promise<Map<string, RefTensor>> {
  const file = await SafetensorsFile.open(path);
  const out = new Map<string, RefTensor>();
  for (const name of file.names()) {
    const info = file.info(name);
    const raw = await file.readBytes(name);
    const copy = raw.slice();
    let data: Float64Array;
    switch (info.dtype) {
      case 'F32': data = Float64Array.from(new Float32Array(copy.buffer)); break;
      case 'F64': data = new Float64Array(copy.buffer); break;
      case 'I8': data = Float64Array.from(new Int8Array(copy.buffer)); break;
      case 'I64': data = Float64Array.from(new BigInt64Array(copy.buffer), (v) => Number(v)); break;
      default: throw new Error(`unexpected dtype ${info.dtype}`);
    }
    out.set(name, { data, shape: info.shape, raw: copy, dtype: info.dtype });
  }
  await file.close();
  return out;
}
