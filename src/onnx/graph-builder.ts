/**
 * A small ONNX graph builder: nodes get unique output names, constants become initializers,
 * and `build()` yields a GraphSpec for `encodeModel`.
 */
import {
  DataType,
  encodeModel,
  type AttributeValue,
  type DataTypeCode,
  type Dim,
  type GraphSpec,
  type NodeSpec,
  type TensorSpec,
  type ValueInfoSpec,
} from './onnx-proto.js';

export type Attr = number | string | readonly number[] | { floats: readonly number[] } | { float: number };

function toAttribute(value: Attr): AttributeValue {
  if (typeof value === 'number') return { kind: 'int', value };
  if (typeof value === 'string') return { kind: 'string', value };
  if (Array.isArray(value)) return { kind: 'ints', value: value as readonly number[] };
  if ('floats' in (value as object)) return { kind: 'floats', value: (value as { floats: readonly number[] }).floats };
  return { kind: 'float', value: (value as { float: number }).float };
}

export class GraphBuilder {
  private readonly nodes: NodeSpec[] = [];
  private readonly initializers: TensorSpec[] = [];
  private readonly inputs: ValueInfoSpec[] = [];
  private readonly outputs: ValueInfoSpec[] = [];
  private readonly used = new Set<string>();
  private readonly constCache = new Map<string, string>();
  private counter = 0;

  constructor(readonly name: string) {}

  /** A fresh value name with the given stem. */
  fresh(stem: string): string {
    let name = stem;
    while (this.used.has(name)) name = `${stem}_${++this.counter}`;
    this.used.add(name);
    return name;
  }

  input(name: string, elemType: DataTypeCode, shape: readonly Dim[]): string {
    if (this.used.has(name)) throw new Error(`duplicate graph value ${name}`);
    this.used.add(name);
    this.inputs.push({ name, elemType, shape });
    return name;
  }

  output(name: string, elemType: DataTypeCode, shape: readonly Dim[] | undefined): void {
    this.outputs.push({ name, elemType, shape });
  }

  /** Renames `value` to the output `name` through Identity, and declares it as a graph output. */
  outputAs(value: string, name: string, elemType: DataTypeCode, shape: readonly Dim[] | undefined): void {
    if (this.used.has(name)) throw new Error(`duplicate graph value ${name}`);
    this.used.add(name);
    this.nodes.push({ opType: 'Identity', inputs: [value], outputs: [name] });
    this.output(name, elemType, shape);
  }

  initializer(spec: TensorSpec): string {
    if (this.used.has(spec.name)) throw new Error(`duplicate graph value ${spec.name}`);
    this.used.add(spec.name);
    this.initializers.push(spec);
    return spec.name;
  }

  /** A float32 constant initializer (deduplicated by value). */
  constFloat(values: readonly number[] | Float32Array, dims: readonly number[] = values.length === 1 ? [] : [values.length]): string {
    const data = values instanceof Float32Array ? values : Float32Array.from(values);
    const key = data.length <= 16 ? `f:${dims.join('x')}:${Array.from(data).join(',')}` : undefined;
    if (key !== undefined && this.constCache.has(key)) return this.constCache.get(key)!;
    const name = this.fresh('const_f');
    this.initializers.push({ name, dataType: DataType.FLOAT, dims, raw: new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice() });
    if (key !== undefined) this.constCache.set(key, name);
    return name;
  }

  /** An int64 constant initializer (shapes, axes, indices). */
  constInt64(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const key = `i:${dims.join('x')}:${values.join(',')}`;
    const cached = this.constCache.get(key);
    if (cached !== undefined) return cached;
    const name = this.fresh('const_i');
    const data = BigInt64Array.from(values.map((v) => BigInt(v)));
    this.initializers.push({ name, dataType: DataType.INT64, dims, raw: new Uint8Array(data.buffer) });
    this.constCache.set(key, name);
    return name;
  }

  /** Adds a node with `outputCount` outputs; returns their names. */
  nodeN(opType: string, inputs: readonly string[], outputCount: number, attrs: Record<string, Attr> = {}, stem?: string): string[] {
    const outputs: string[] = [];
    for (let i = 0; i < outputCount; i++) outputs.push(this.fresh(stem ?? opType.toLowerCase()));
    const attributes: Record<string, AttributeValue> = {};
    for (const [k, v] of Object.entries(attrs)) attributes[k] = toAttribute(v);
    this.nodes.push({ opType, inputs, outputs, attributes });
    return outputs;
  }

  /** Adds a single-output node; returns the output name. */
  node(opType: string, inputs: readonly string[], attrs: Record<string, Attr> = {}, stem?: string): string {
    return this.nodeN(opType, inputs, 1, attrs, stem)[0]!;
  }

  // Convenience wrappers for common ops.
  add(a: string, b: string): string { return this.node('Add', [a, b]); }
  sub(a: string, b: string): string { return this.node('Sub', [a, b]); }
  mul(a: string, b: string): string { return this.node('Mul', [a, b]); }
  div(a: string, b: string): string { return this.node('Div', [a, b]); }
  matmul(a: string, b: string): string { return this.node('MatMul', [a, b]); }
  reshape(x: string, shape: readonly number[]): string { return this.node('Reshape', [x, this.constInt64(shape)]); }
  transpose(x: string, perm: readonly number[]): string { return this.node('Transpose', [x], { perm }); }

  build(): GraphSpec {
    return { name: this.name, nodes: this.nodes, initializers: this.initializers, inputs: this.inputs, outputs: this.outputs };
  }

  encode(): Uint8Array {
    return encodeModel(this.build());
  }
}
