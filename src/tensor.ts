/** A dense row-major float32 tensor. Shapes are plain number arrays. */
export interface Tensor {
  readonly data: Float32Array;
  readonly shape: readonly number[];
}

export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function tensor(data: Float32Array, shape: readonly number[]): Tensor {
  const n = elementCount(shape);
  if (data.length !== n) {
    throw new Error(`tensor data has ${data.length} elements but shape [${shape.join(', ')}] needs ${n}`);
  }
  return { data, shape: [...shape] };
}

export function zeros(shape: readonly number[]): Tensor {
  return { data: new Float32Array(elementCount(shape)), shape: [...shape] };
}
