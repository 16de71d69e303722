/**
 * Float GEMM through onnxruntime (MLAS): C[m,n] = A[m,k]·B[k,n], or A·Bᵀ with B [n,k] when
 * transposeB. One session per variant with symbolic dimensions (reused for every shape).
 */
import { DataType } from './onnx-proto.js';
import { GraphBuilder } from './graph-builder.js';
import { createSession, floatTensor, outputData, type ort } from './session.js';

const sessions = new Map<string, Promise<ort.InferenceSession>>();

function matmulSession(transposeB: boolean, threads: number | undefined): Promise<ort.InferenceSession> {
  const key = `${transposeB}:${threads ?? ''}`;
  let s = sessions.get(key);
  if (s === undefined) {
    const g = new GraphBuilder('bwq-matmul');
    const a = g.input('a', DataType.FLOAT, ['m', 'k']);
    const b = g.input('b', DataType.FLOAT, transposeB ? ['n', 'k'] : ['k', 'n']);
    const c = transposeB ? g.node('Gemm', [a, b], { transB: 1 }) : g.matmul(a, b);
    g.outputAs(c, 'c', DataType.FLOAT, ['m', 'n']);
    s = createSession(g.encode(), { threads });
    sessions.set(key, s);
  }
  return s;
}

export async function ortMatmul(
  a: Float32Array,
  b: Float32Array,
  m: number,
  k: number,
  n: number,
  options: { transposeB?: boolean; threads?: number } = {},
): Promise<Float32Array> {
  if (a.length !== m * k) throw new Error(`ortMatmul: A has ${a.length} values, expected ${m}x${k}`);
  if (b.length !== k * n) throw new Error(`ortMatmul: B has ${b.length} values, expected ${k}x${n}`);
  if (m === 0 || n === 0) return new Float32Array(m * n);
  if (k === 0) return new Float32Array(m * n);
  const transposeB = options.transposeB ?? false;
  const session = await matmulSession(transposeB, options.threads);
  const out = await session.run({ a: floatTensor(a, [m, k]), b: floatTensor(b, transposeB ? [n, k] : [k, n]) });
  return outputData(out, 'c');
}

/** Releases the cached sessions (tests, shutdown). */
export async function releaseOrtMatmul(): Promise<void> {
  const all = [...sessions.values()];
  sessions.clear();
  for (const s of all) await (await s).release();
}
