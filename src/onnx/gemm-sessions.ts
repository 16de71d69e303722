/**
 * onnxruntime sessions of one float32 Gemm node (MLAS, with transA / transB attributes so no operand is
 * transposed in JS), one per layout, made on first use; onnxruntime itself is imported on the first product, so
 * a run that sends its products elsewhere (a GPU run of quantize) never loads it. Used by the quantize numerics'
 * matmul (src/pipeline/ort-engine.ts) and the reconstruction's GEMMs (src/pipeline/reconstruct-gemm.ts).
 */
import { DataType } from './onnx-proto.js';
import { GraphBuilder } from './graph-builder.js';
import type { ort } from './session.js';

type SessionModule = typeof import('./session.js');
let sessionModule: Promise<SessionModule> | undefined;
function loadSessionModule(): Promise<SessionModule> {
  sessionModule ??= import('./session.js');
  return sessionModule;
}

export interface GemmSessions {
  /** c [m, n] = op(a)·op(b): a [m, k] (or [k, m] with ta), b [k, n] (or [n, k] with tb) */
  run(ta: boolean, tb: boolean, a: Float32Array, b: Float32Array, m: number, k: number, n: number): Promise<Float32Array>;
  close(): Promise<void>;
}

export function createGemmSessions(name: string, threads?: number): GemmSessions {
  const sessions = new Map<string, Promise<ort.InferenceSession>>();
  const session = (ta: boolean, tb: boolean): Promise<ort.InferenceSession> => {
    const key = `${ta}:${tb}`;
    let s = sessions.get(key);
    if (s === undefined) {
      const g = new GraphBuilder(name);
      const a = g.input('a', DataType.FLOAT, ta ? ['k', 'm'] : ['m', 'k']);
      const b = g.input('b', DataType.FLOAT, tb ? ['n', 'k'] : ['k', 'n']);
      const c = g.node('Gemm', [a, b], { transA: ta ? 1 : 0, transB: tb ? 1 : 0 });
      g.outputAs(c, 'c', DataType.FLOAT, ['m', 'n']);
      s = loadSessionModule().then(({ createSession }) => createSession(g.encode(), threads === undefined ? {} : { threads }));
      sessions.set(key, s);
    }
    return s;
  };
  return {
    async run(ta, tb, a, b, m, k, n) {
      const s = await session(ta, tb);
      const { floatTensor, outputData } = await loadSessionModule();
      const out = await s.run({
        a: floatTensor(a.length === m * k ? a : a.subarray(0, m * k), ta ? [k, m] : [m, k]),
        b: floatTensor(b.length === k * n ? b : b.subarray(0, k * n), tb ? [n, k] : [k, n]),
      });
      return outputData(out, 'c');
    },
    async close() {
      for (const s of sessions.values()) await (await s).release();
      sessions.clear();
    },
  };
}
