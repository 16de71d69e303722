/**
 * The quantizer's matmul engine backed by onnxruntime (float32 MLAS Gemm with transA/transB
 * attributes, so no operand is transposed in JS). Products smaller than ~256k multiply-adds stay
 * in the float64 JS GEMM (no session round trip). Sessions are cached per (transA, transB).
 */
import { gemm, type Floats } from '../linalg/dense.js';
import type { Matmul } from '../linalg/matmul.js';
import { DataType } from '../onnx/onnx-proto.js';
import { GraphBuilder } from '../onnx/graph-builder.js';
import { createSession, floatTensor, outputData, type ort } from '../onnx/session.js';

const SMALL = 1 << 18;

function toF32(a: Floats): Float32Array {
  return a instanceof Float32Array ? a : Float32Array.from(a);
}

export interface OrtEngine {
  matmul: Matmul;
  close(): Promise<void>;
}

export function createOrtEngine(threads?: number): OrtEngine {
  const sessions = new Map<string, Promise<ort.InferenceSession>>();
  const session = (ta: boolean, tb: boolean): Promise<ort.InferenceSession> => {
    const key = `${ta}:${tb}`;
    let s = sessions.get(key);
    if (s === undefined) {
      const g = new GraphBuilder('bwq-quant-gemm');
      const a = g.input('a', DataType.FLOAT, ta ? ['k', 'm'] : ['m', 'k']);
      const b = g.input('b', DataType.FLOAT, tb ? ['n', 'k'] : ['k', 'n']);
      const c = g.node('Gemm', [a, b], { transA: ta ? 1 : 0, transB: tb ? 1 : 0 });
      g.outputAs(c, 'c', DataType.FLOAT, ['m', 'n']);
      s = createSession(g.encode(), threads === undefined ? {} : { threads });
      sessions.set(key, s);
    }
    return s;
  };
  const matmul: Matmul = async (a, b, m, k, n, options = {}) => {
    if (m * k * n < SMALL) return gemm(a, b, m, k, n, options);
    const ta = options.transposeA === true;
    const tb = options.transposeB === true;
    const s = await session(ta, tb);
    const out = await s.run({
      a: floatTensor(toF32(a), ta ? [k, m] : [m, k]),
      b: floatTensor(toF32(b), tb ? [n, k] : [k, n]),
    });
    return Float64Array.from(outputData(out, 'c'));
  };
  return {
    matmul,
    async close() {
      for (const s of sessions.values()) await (await s).release();
      sessions.clear();
    },
  };
}
