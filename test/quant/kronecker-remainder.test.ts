/**
 * Rotations for input widths without a balanced factorisation (issue 15): R = diag(R1 ⊗ R2, R3),
 * K = a·b + r (src/quant/kronecker.ts kroneckerSplit). Every real model's width has an exact factorisation (r = 0);
 * every implementation of the rotation (JS reference, engine-product version, TS native forward, ONNX graph)
 * equals the dense block-diagonal matrix; OKT learns orthogonal factors; and a Llama whose intermediate size is
 * prime (the bundled model's MLP cut to 761 of its 768 channels) quantizes with bwla and evaluates alike through onnxruntime
 * and the native runtime, with no dense K×K tensor written.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { tempDirs } from '../helpers/temp-dirs.js';
import { runCli } from '../helpers/run-cli.js';
import { kroneckerFactors, kroneckerSplit, rotateRowsBy, rotateRowsWith } from '../../src/quant/kronecker.js';
import { learnSplitOkt } from '../../src/quant/okt-split.js';
import { randomOrthogonal } from '../../src/quant/okt.js';
import { jsMatmul, Rng } from '../../src/linalg/index.js';
import { rotateRows as nativeRotateRows } from '../../src/native/quant-linear.js';
import { parseQuantizationConfig } from '../../src/model/quantization-config.js';
import { GraphBuilder } from '../../src/onnx/graph-builder.js';
import { DataType } from '../../src/onnx/onnx-proto.js';
import { rotateOp } from '../../src/onnx/recipe-ops.js';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { writeSafetensors, type TensorToWrite } from '../../src/safetensors/writer.js';
import type { FloatGemm } from '../../src/native/float-gemm.js';
import { rotationBackward, rotationForward } from '../../src/quant/reconstruct/rotation.js';
import { maxAbsDiff } from '../helpers/reference-math.js';
import { orthogonalityError } from '../../src/linalg/dense.js';

const tmp = tempDirs();

/** The dense matrix diag(R1 ⊗ R2, R3) [n, n] (x' = x M). */
function denseRotation(r1: Float64Array, a: number, r2: Float64Array, b: number, r3: Float64Array, r: number): Float64Array {
  const m = a * b;
  const n = m + r;
  const out = new Float64Array(n * n);
  for (let p = 0; p < a; p++) for (let i = 0; i < a; i++) for (let q = 0; q < b; q++) for (let j = 0; j < b; j++) {
    out[(p * b + q) * n + i * b + j] = r1[p * a + i]! * r2[q * b + j]!;
  }
  for (let q = 0; q < r; q++) for (let j = 0; j < r; j++) out[(m + q) * n + m + j] = r3[q * r + j]!;
  return out;
}

function randomRows(rows: number, cols: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  const x = new Float64Array(rows * cols);
  for (let i = 0; i < x.length; i++) x[i] = rng.normal();
  return x;
}



describe('kroneckerSplit', () => {
  it('factors the bundled and the 7B–32B widths exactly (r = 0): R2 of 128 up to 128², balanced above', () => {
    // the bundled model (256, 768), Llama-2-7B (4096, 11008), Llama-3-8B / Mistral (14336), Qwen2-7B (3584, 18944),
    // Qwen3-32B (25600), Qwen2.5-32B (27648), the 8-layer bench shape (5632)
    const expected: Record<number, [number, number]> = {
      256: [2, 128], 768: [6, 128], 4096: [32, 128], 11008: [86, 128], 14336: [112, 128], 3584: [28, 128], 18944: [128, 148],
      25600: [160, 160], 27648: [144, 192], 5632: [44, 128],
    };
    for (const [n, [a, b]] of Object.entries(expected)) {
      expect(kroneckerSplit(Number(n))).toEqual({ a, b, r: 0 });
      expect(kroneckerFactors(Number(n))).toEqual({ a, b });
    }
  });

  it('splits prime and unbalanced widths into two factors of at most 2√K (128 from K = 256) and a remainder below √K', () => {
    expect(kroneckerSplit(61)).toEqual({ a: 7, b: 8, r: 5 }); // below 256: the balanced split
    expect(kroneckerSplit(127)).toEqual({ a: 11, b: 11, r: 6 });
    expect(kroneckerSplit(262)).toEqual({ a: 2, b: 128, r: 6 }); // 2·131: 131 > 128
    expect(kroneckerSplit(761)).toEqual({ a: 6, b: 126, r: 5 });
    expect(kroneckerSplit(10007)).toEqual({ a: 80, b: 125, r: 7 });
    expect(kroneckerSplit(16382)).toEqual({ a: 127, b: 128, r: 126 }); // 2·8191
    for (let n = 1; n <= 20000; n += n < 3000 ? 1 : 97) {
      const { a, b, r } = kroneckerSplit(n);
      expect(a * b + r).toBe(n);
      expect(Math.max(a, b)).toBeLessThanOrEqual(Math.max(128, 2 * Math.sqrt(n)));
      expect(r * r).toBeLessThan(n);
    }
  });
});

describe('diag(R1 ⊗ R2, R3)', () => {
  const { a, b, r } = kroneckerSplit(61); // 7 × 8 + 5
  const rng = new Rng(3);
  const r1 = randomOrthogonal(a, rng);
  const r2 = randomOrthogonal(b, rng);
  const r3 = randomOrthogonal(r, rng);
  const rows = 9;
  const x = randomRows(rows, 61, 11);
  const dense = denseRotation(r1, a, r2, b, r3, r);
  const want = new Float64Array(rows * 61);
  for (let t = 0; t < rows; t++) for (let j = 0; j < 61; j++) {
    let s = 0;
    for (let k = 0; k < 61; k++) s += x[t * 61 + k]! * dense[k * 61 + j]!;
    want[t * 61 + j] = s;
  }

  it('is orthogonal, and every implementation equals the dense block-diagonal product', async () => {
    expect(orthogonalityError(dense, 61)).toBeLessThan(1e-12);
    expect(maxAbsDiff(rotateRowsBy(x, rows, { r1, a, r2, b, r3, r }), want)).toBeLessThan(1e-12);
    const x32 = Float32Array.from(x);
    expect(maxAbsDiff(await rotateRowsWith({ matmul: jsMatmul }, x32, rows, { r1, a, r2, b, r3, r }), want)).toBeLessThan(1e-5);
    const gemm = { plain: (m: Float32Array, rowsA: number, k: number, w: Float32Array, n: number) => jsMatmul(m, w, rowsA, k, n) } as unknown as FloatGemm;
    const native = await nativeRotateRows(x32, rows, {
      r1: Float32Array.from(r1), a, r2: Float32Array.from(r2), b, r3: Float32Array.from(r3), r, names: ['r1', 'r2', 'r3'],
    }, gemm);
    expect(maxAbsDiff(native, want)).toBeLessThan(1e-5);
  });

  it('the rotation of block reconstruction (forward, and its transpose as the backward) computes the same', async () => {
    const rot = { r1, a, r2, b, r3, r };
    expect(maxAbsDiff(await rotationForward(x, rows, rot), want)).toBeLessThan(1e-12);
    expect(maxAbsDiff(await rotationBackward(await rotationForward(x, rows, rot), rows, rot), x)).toBeLessThan(1e-12);
  });

  it('the ONNX rotation op of the simulated graph computes the same', async () => {
    const g = new GraphBuilder('rot');
    const input = g.input('x', DataType.FLOAT, [1, rows, 61]);
    const c = (name: string, m: Float64Array, n: number): string => g.input(name, DataType.FLOAT, [n, n]);
    const out = rotateOp(g, input, c('r1', r1, a), c('r2', r2, b), a, b, { r3: c('r3', r3, r), r: r });
    g.outputAs(out, 'y', DataType.FLOAT, [1, rows, 61]);
    const session = await ort.InferenceSession.create(g.encode());
    const t = (m: Float64Array, shape: number[]): ort.Tensor => new ort.Tensor('float32', Float32Array.from(m), shape);
    const res = await session.run({ x: t(x, [1, rows, 61]), r1: t(r1, [a, a]), r2: t(r2, [b, b]), r3: t(r3, [r, r]) });
    expect(maxAbsDiff(res['y']!.data as Float32Array, want)).toBeLessThan(1e-5);
  });
});

describe('learnSplitOkt', () => {
  it('learns orthogonal R1, R2, R3 for a width with a remainder (2·131) and lowers the whole-row binarization error', async () => {
    const rows = 40;
    const cols = 262; // 2 × 128 + 6
    // heavy-tailed rows (a few large channels), as trained weights have
    const w = randomRows(rows, cols, 5);
    for (let t = 0; t < rows; t++) for (const k of [3, 30, 58, 200, 260]) w[t * cols + k] = w[t * cols + k]! * 6;
    for (const init of ['identity', 'random'] as const) {
      const res = await learnSplitOkt([{ data: w, rows }], cols, { iterations: 15, init, seed: 1 });
      expect([res.a, res.b, res.r]).toEqual([2, 128, 6]);
      expect(orthogonalityError(res.r1, 2)).toBeLessThan(1e-9);
      expect(orthogonalityError(res.r2, 128)).toBeLessThan(1e-9);
      expect(orthogonalityError(res.r3!, 6)).toBeLessThan(1e-9);
      // ε_w of the whole rows, recomputed here from the returned factors (1 − Σ‖w R‖₁² / (K Σ‖w‖²))
      const wr = rotateRowsBy(w, rows, { r1: res.r1, a: 2, r2: res.r2, b: 128, r3: res.r3, r: 6 });
      let l1 = 0;
      let energy = 0;
      let plain = 0;
      for (let t = 0; t < rows; t++) {
        let h = 0;
        let p = 0;
        for (let k = 0; k < cols; k++) {
          h += Math.abs(wr[t * cols + k]!);
          p += Math.abs(w[t * cols + k]!);
          energy += w[t * cols + k]! ** 2;
        }
        l1 += h * h;
        plain += p * p;
      }
      const after = 1 - l1 / (cols * energy);
      expect(res.weightError.after).toBeCloseTo(after, 4);
      expect(res.weightError.before).toBeCloseTo(1 - plain / (cols * energy), 6);
      expect(after).toBeLessThan(0.9 * res.weightError.before);
    }
  });
});

describe('recipe kind kronecker_remainder', () => {
  const base = { quant_method: 'bwq', bwq_version: '0', method: 'bwla', w_bits: 1, a_bits: 6, packed_weights: 'model.packed.safetensors', settings: {} };
  const withRotation = (rotation: unknown): unknown => ({ ...base, layers: [{ linears: { down_proj: { rotation, quantizer: { kind: 'none' } } } }] });

  it('is read with its three tensor names; a missing r3, or r3 on kind kronecker, is refused in one line', () => {
    const q = parseQuantizationConfig(withRotation({ kind: 'kronecker_remainder', r1: 'x.okt_r1', r2: 'x.okt_r2', r3: 'x.okt_r3' }), { file: 'config.json', numLayers: 1, architecture: 'llama' });
    expect(q.layers[0]!.linears.down_proj!.rotation).toEqual({ kind: 'kronecker_remainder', r1: 'x.okt_r1', r2: 'x.okt_r2', r3: 'x.okt_r3' });
    expect(() => parseQuantizationConfig(withRotation({ kind: 'kronecker_remainder', r1: 'a', r2: 'b' }), { file: 'config.json', numLayers: 1, architecture: 'llama' }))
      .toThrow("quantization_config.layers[0].linears.down_proj.rotation: rotation 'r3' must be a tensor name");
    expect(() => parseQuantizationConfig(withRotation({ kind: 'kronecker', r1: 'a', r2: 'b', r3: 'c' }), { file: 'config.json', numLayers: 1, architecture: 'llama' }))
      .toThrow("rotation 'r3' belongs to kind kronecker_remainder, not kronecker");
  });
});

/** The bundled model with its MLP cut to the first `inter` channels (gate/up rows, down columns). */
async function primeMlpModel(dir: string, inter: number): Promise<void> {
  mkdirSync(dir);
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) copyFileSync(join('models/sotu-llama', f), join(dir, f));
  const config = JSON.parse(readFileSync('models/sotu-llama/config.json', 'utf8')) as Record<string, unknown>;
  config['intermediate_size'] = inter;
  config['dtype'] = 'float32'; // the simulated model in float32 too: the two engines then differ by rounding only
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const src = await SafetensorsFile.open('models/sotu-llama/model.safetensors');
  const tensors: TensorToWrite[] = [];
  for (const name of src.names()) {
    const info = src.info(name);
    const f = await src.readFloat32(name);
    let data = f;
    let shape = info.shape;
    if (/mlp\.(gate|up)_proj\.weight$/.test(name)) {
      shape = [inter, info.shape[1]!];
      data = f.slice(0, inter * info.shape[1]!);
    } else if (/mlp\.down_proj\.weight$/.test(name)) {
      const [rows, cols] = info.shape as [number, number];
      shape = [rows, inter];
      data = new Float32Array(rows * inter);
      for (let t = 0; t < rows; t++) data.set(f.subarray(t * cols, t * cols + inter), t * inter);
    }
    tensors.push({ name, dtype: 'F32', shape, data: Float32Array.from(data) });
  }
  await src.close();
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
}

describe('bwla on a Llama with a prime intermediate size (761)', () => {
  it('quantizes, writes R3 [5, 5] and no dense K×K rotation, and onnx and the native runtime agree', async () => {
    const root = tmp('bwq-kron-rem-');
    const model = join(root, 'model');
    await primeMlpModel(model, 761); // 6 × 126 + 5
    const out = join(root, 'q');
    const q = await runCli('quantize', model, '-o', out, '--method', 'bwla', '--nsamples', '4', '--seqlen', '64', '--okt-iterations', '4',
      '--device', 'cpu', '--json');
    expect(q.code, q.stderr).toBe(0);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { quantization_config: { layers: Array<{ linears: Record<string, { rotation?: Record<string, string> }> }> } };
    const layer0 = config.quantization_config.layers[0]!.linears;
    expect(layer0['down_proj']!.rotation).toEqual({
      kind: 'kronecker_remainder', r1: 'model.layers.0.mlp_out.okt_r1', r2: 'model.layers.0.mlp_out.okt_r2', r3: 'model.layers.0.mlp_out.okt_r3',
    });
    expect(layer0['gate_proj']!.rotation!['kind']).toBe('kronecker'); // hidden 256 = 2 × 128
    for (const file of ['model.safetensors', 'model.packed.safetensors']) {
      const st = await SafetensorsFile.open(join(out, file));
      try {
        for (let l = 0; l < 4; l++) {
          const shapes = ['r1', 'r2', 'r3'].map((k) => st.info(`model.layers.${l}.mlp_out.okt_${k}`).shape);
          expect(shapes).toEqual([[6, 6], [126, 126], [5, 5]]);
          const r3 = await st.readFloat32(`model.layers.${l}.mlp_out.okt_r3`);
          expect(orthogonalityError(r3, 5)).toBeLessThan(1e-5);
        }
        for (const name of st.names()) {
          if (!name.includes('.okt_r')) continue;
          const s = st.info(name).shape;
          expect(s[0]!, name).toBeLessThanOrEqual(128); // no [761, 761] (nor [256, 256]) factor
        }
      } finally {
        await st.close();
      }
    }
    const ppl = async (backend: string, windows: number): Promise<number> => {
      const r = await runCli('eval', out, '--backend', backend, ...(backend === 'native' ? ['--device', 'cpu'] : []), '--seqlen', '128', '--max-windows', String(windows), '--json');
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout).ppl as number;
    };
    // W1A6 as quantized: the engines' float sums differ in order, so a few 6-bit codes round the other way
    // (measured: 217.90 onnx / 217.19 native, 0.32 %; the bundled model's exact 24 × 32 Kronecker shows the same
    // kind of gap)
    const [onnx, native] = [await ppl('onnx', 24), await ppl('native', 24)];
    expect(Number.isFinite(onnx)).toBe(true);
    expect(Math.abs(native / onnx - 1)).toBeLessThan(0.005);
    // the same packed weights and rotations without activation quantization: only float rounding is left, so the
    // engines agree to 1e-5 (measured 6e-7) — R3 applied wrongly (or not at all) by either engine fails this
    const configPath = join(out, 'config.json');
    const raw = JSON.parse(readFileSync(configPath, 'utf8')) as { quantization_config: { layers: Array<{ linears: Record<string, { quantizer: unknown }> }> } };
    for (const layer of raw.quantization_config.layers) for (const lin of Object.values(layer.linears)) lin.quantizer = { kind: 'none' };
    writeFileSync(configPath, JSON.stringify(raw, null, 2));
    const [onnxFloat, nativeFloat] = [await ppl('onnx', 4), await ppl('native', 4)];
    expect(Math.abs(nativeFloat / onnxFloat - 1)).toBeLessThan(1e-5);
  }, 180_000);
});
