import { describe, expect, it } from 'vitest';
import { jsMatmul, withKept } from '../../src/linalg/matmul.js';
import { Rng } from '../../src/linalg/random.js';
import { openModelDir } from '../../src/model/model-dir.js';
import { deviceMatmul, type DeviceProducts } from '../../src/pipeline/device-matmul.js';
import { transposeF32 } from '../../src/linalg/dense.js';
import { DEFAULT_MODEL_DIR } from '../../src/package-paths.js';
import { createRuntimeBlockEngine } from '../../src/runtime/block-runner.js';
import { runtimeAvailable } from '../../src/eval/backend.js';
import { float64Product, relDiff } from '../helpers/reference-math.js';

/** op(x) op(y) in float64, rounded to float32 (op = transpose when flagged; x stored [k, rows] when ta, y [cols, k] when tb). */
function float64ProductT(x: Float32Array, ta: boolean, y: Float32Array, tb: boolean, rows: number, k: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
    let s = 0;
    for (let p = 0; p < k; p++) s += x[ta ? p * rows + i : i * k + p]! * y[tb ? j * k + p : p * cols + j]!;
    out[i * cols + j] = s;
  }
  return out;
}

function random(n: number, rng: Rng): Float32Array {
  return Float32Array.from({ length: n }, () => rng.next() * 2 - 1);
}

describe('the quantize numerics\' matmul on the block engine\'s device', () => {
  const [m, k, n] = [37, 53, 29];
  const rng = new Rng(7);
  const a = random(m * k, rng);
  const b = random(k * n, rng);
  const cases = [
    { options: {}, a, b },
    { options: { transposeA: true }, a: transposeF32(a, m, k), b },
    { options: { transposeB: true }, a, b: transposeF32(b, k, n) },
    { options: { transposeA: true, transposeB: true }, a: transposeF32(a, m, k), b: transposeF32(b, k, n) },
  ];

  it('passes every transposition case to the device as flags and agrees with a float64 product', async () => {
    const reference = float64Product(a, b, m, k, n);
    const deviceCalls: string[] = [];
    const onDevice = (x: Float32Array, ta: boolean, y: Float32Array, tb: boolean, rows: number, kk: number, cols: number): Float32Array => {
      deviceCalls.push(`${ta}/${tb}`);
      return float64ProductT(x, ta, y, tb, rows, kk, cols);
    };
    const hostCalls: string[] = [];
    const host = async (...args: Parameters<typeof jsMatmul>) => { hostCalls.push('host'); return jsMatmul(...args); };
    for (const c of cases) {
      const got = await deviceMatmul({ matmulT: onDevice as DeviceProducts['matmulT'] }, host, 0)(c.a, c.b, m, k, n, c.options);
      expect(relDiff(got, reference)).toBeLessThan(1e-6);
    }
    // the operands reach the device as given (no host transposition), with the flags
    expect(deviceCalls).toEqual(['false/false', 'true/false', 'false/true', 'true/true']);
    expect(hostCalls).toHaveLength(0);
    // below the threshold the host GEMM answers
    await deviceMatmul({ matmulT: onDevice as DeviceProducts['matmulT'] }, host)(a, b, m, k, n);
    expect([deviceCalls.length, hostCalls.length]).toEqual([4, 1]);
  });

  it('keep: the kept array is written to the device once, passed as a device array inside the body, freed after it', async () => {
    const log: string[] = [];
    const arrays = new Map<object, Float32Array>();
    const device: DeviceProducts = {
      createArray(floats) {
        const data = new Float32Array(floats);
        const arr = { floats, write: (o: number, x: Float32Array) => { log.push(`write ${x.length}`); data.set(x, o); }, read: () => data, free: () => { log.push('free'); } };
        arrays.set(arr, data);
        return arr;
      },
      matmulT(x, ta, y, tb, rows, kk, cols) {
        log.push(`mm ${x instanceof Float32Array ? 'host' : 'device'} ${y instanceof Float32Array ? 'host' : 'device'}`);
        const xa = x instanceof Float32Array ? x : arrays.get(x)!;
        const ya = y instanceof Float32Array ? y : arrays.get(y)!;
        return Promise.resolve(float64ProductT(xa, ta, ya, tb, rows, kk, cols));
      },
    };
    const mm = deviceMatmul(device, jsMatmul, 0);
    const reference = float64Product(a, b, m, k, n);
    const got = await withKept(mm, [b], async () => {
      const first = await mm(a, b, m, k, n);
      const second = await mm(a, b, m, k, n);
      // nested keep of the same array: no second copy
      const third = await mm.keep!(b, () => mm(a, b, m, k, n));
      return [first, second, third];
    });
    for (const g of got) expect(relDiff(g, reference)).toBeLessThan(1e-6);
    await mm(a, b, m, k, n);
    expect(log).toEqual([`write ${k * n}`, 'mm host device', 'mm host device', 'mm host device', 'free', 'mm host host']);
    // an error inside the body still frees the copy; a device without room runs the body with host operands
    log.length = 0;
    await expect(withKept(mm, [a], async () => { throw new Error('inside'); })).rejects.toThrow('inside');
    expect(log).toEqual([`write ${m * k}`, 'free']);
    const full = deviceMatmul({ matmulT: device.matmulT, createArray: () => { throw new Error('not enough memory'); } }, jsMatmul, 0);
    log.length = 0;
    await withKept(full, [a], () => full(a, b, m, k, n));
    expect(log).toEqual(['mm host host']);
  });

  it.runIf(runtimeAvailable())('the runtime\'s native matmul (CPU backend) equals a float64 product to float32 rounding', async () => {
    const model = await openModelDir(DEFAULT_MODEL_DIR);
    const engine = await createRuntimeBlockEngine(model, { device: 'cpu' });
    try {
      expect(engine.matmulT).toBeDefined();
      const reference = float64Product(a, b, m, k, n);
      for (const c of cases) {
        const got = await deviceMatmul({ matmulT: engine.matmulT! }, jsMatmul, 0)(c.a, c.b, m, k, n, c.options);
        expect(relDiff(got, reference)).toBeLessThan(1e-5);
      }
      await expect(engine.matmulT!(new Float32Array(3), false, new Float32Array(4), true, 2, 2, 2)).rejects.toThrow(/smaller than m x k/);
      // kept operands: the same products with a and b copied into engine arrays once and used in place
      const mm = deviceMatmul({ matmulT: engine.matmulT!, createArray: engine.createArray! }, jsMatmul, 0);
      for (const c of cases) {
        const plain = await mm(c.a, c.b, m, k, n, c.options);
        const kept = await withKept(mm, [c.a, c.b], () => mm(c.a, c.b, m, k, n, c.options));
        expect(kept).toEqual(plain);
      }
      // an array that is too small for the product is refused as a host array would be
      const small = engine.createArray!(3);
      await expect(engine.matmulT!(small, false, b, false, m, k, n)).rejects.toThrow(/smaller than m x k/);
      small.free();
      await expect(engine.matmulT!(small, false, b, false, m, k, n)).rejects.toThrow(/freed or belongs to another engine/);
    } finally {
      await engine.close();
      await model.checkpoint.close();
    }
  });
});
