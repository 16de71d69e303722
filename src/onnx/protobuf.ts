/**
 * Minimal protobuf (proto3 wire format) encoder: enough to write ONNX ModelProto.
 *
 * A message is built as a list of byte chunks (no copying of large payloads such as raw tensor
 * data until the final `concat`). Wire types: 0 = varint, 2 = length-delimited, 5 = 32-bit.
 */

export class ProtoWriter {
  private readonly chunks: Uint8Array[] = [];
  private scratch: number[] = [];
  private size = 0;

  get byteLength(): number {
    return this.size + this.scratch.length;
  }

  private flushScratch(): void {
    if (this.scratch.length > 0) {
      this.chunks.push(Uint8Array.from(this.scratch));
      this.size += this.scratch.length;
      this.scratch = [];
    }
  }

  private pushBytes(bytes: Uint8Array): void {
    if (bytes.length < 64) {
      for (let i = 0; i < bytes.length; i++) this.scratch.push(bytes[i]!);
      return;
    }
    this.flushScratch();
    this.chunks.push(bytes);
    this.size += bytes.length;
  }

  /** Unsigned or signed 64-bit varint (negative numbers use 10-byte two's complement). */
  private varint(value: number | bigint): void {
    if (typeof value === 'number') {
      if (!Number.isInteger(value)) throw new Error(`varint needs an integer, got ${value}`);
      if (value >= 0 && value < 2 ** 31) {
        let v = value;
        while (v >= 0x80) {
          this.scratch.push((v & 0x7f) | 0x80);
          v >>>= 7;
        }
        this.scratch.push(v);
        return;
      }
      value = BigInt(value);
    }
    let v = BigInt.asUintN(64, value);
    while (v >= 0x80n) {
      this.scratch.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.scratch.push(Number(v));
  }

  private tag(field: number, wireType: number): void {
    this.varint(field * 8 + wireType);
  }

  int(field: number, value: number | bigint): this {
    this.tag(field, 0);
    this.varint(value);
    return this;
  }

  float(field: number, value: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.pushBytes(b);
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.tag(field, 2);
    this.varint(value.length);
    this.pushBytes(value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  message(field: number, inner: ProtoWriter): this {
    this.tag(field, 2);
    this.varint(inner.byteLength);
    inner.flushScratch();
    this.flushScratch();
    for (const c of inner.chunks) this.chunks.push(c);
    this.size += inner.size;
    return this;
  }

  /** Packed repeated varints. */
  packedInts(field: number, values: ArrayLike<number | bigint>): this {
    const inner = new ProtoWriter();
    for (let i = 0; i < values.length; i++) inner.varint(values[i]!);
    return this.message(field, inner);
  }

  /** Packed repeated 32-bit floats. */
  packedFloats(field: number, values: ArrayLike<number>): this {
    const b = new Uint8Array(values.length * 4);
    const view = new DataView(b.buffer);
    for (let i = 0; i < values.length; i++) view.setFloat32(4 * i, values[i]!, true);
    return this.bytes(field, b);
  }

  finish(): Uint8Array {
    this.flushScratch();
    const out = new Uint8Array(this.size);
    let offset = 0;
    for (const c of this.chunks) {
      out.set(c, offset);
      offset += c.length;
    }
    return out;
  }
}
