// node native/test/transfer-timing.mjs [cuda|cpu]: host <-> device copy rates of the block engine (device arrays written
// and read, into fresh or reused host buffers) and the quantize numerics' product shapes with host or kept operands
// (docs/PERFORMANCE.md, "Host-device traffic of the transforms"). Uses the bundled model only to open an engine.
import { DEFAULT_MODEL_DIR } from '../../dist/package-paths.js';
import { openModelDir } from '../../dist/model/model-dir.js';
import { createRuntimeBlockEngine } from '../../dist/runtime/block-runner.js';

const model = await openModelDir(DEFAULT_MODEL_DIR);
const engine = await createRuntimeBlockEngine(model, { device: process.argv[2] ?? 'cuda' });
console.log(engine.device, process.env.BWQ_NO_STAGING ? '(BWQ_NO_STAGING)' : '');
const best = (f, reps = 3) => {
  let t = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    f();
    t = Math.min(t, performance.now() - t0);
  }
  return t;
};
const line = (what, ms, bytes) => console.log(`${what.padEnd(44)} ${ms.toFixed(1).padStart(8)} ms${bytes ? `  ${(bytes / ms / 1e6).toFixed(1).padStart(6)} GB/s` : ''}`);

const floats = 1 << 28; // 1 GiB
const host = new Float32Array(floats).fill(1);
const state = engine.createArray(floats);
line('write 1 GiB (host buffer reused)', best(() => state.write(0, host)), 4 * floats);
line('read 1 GiB into a fresh buffer', best(() => state.read(0, floats)), 4 * floats);
line('read 1 GiB into a reused buffer', best(() => state.read(0, floats, host)), 4 * floats);
const chunk = 1 << 24; // 64 MiB, the checkpoint's chunk
const into = new Float32Array(chunk);
line('read 16 x 64 MiB into one reused buffer', best(() => { for (let o = 0; o < floats; o += chunk) state.read(o, chunk, into); }), 4 * floats);
line('read 16 x 64 MiB into fresh buffers', best(() => { for (let o = 0; o < floats; o += chunk) state.read(o, chunk); }), 4 * floats);
state.free();

const rnd = (n) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.61));
const shapes = [
  ['sketch A[11008,4096] x [4096,40]', 11008, 4096, 40, false, false],
  ['sketch A^T Q [4096,11008] x [11008,40]', 4096, 11008, 40, true, false],
  ['low rank [4096,32] x [32,11008]', 4096, 32, 11008, false, false],
  ['signs x H [4096,11008] x [11008,11008]', 4096, 11008, 11008, false, false],
  ['act search X[512,4096] x W^T[11008,4096]', 512, 4096, 11008, false, true],
];
for (const [what, m, k, n, ta, tb] of shapes) {
  const a = rnd(m * k), b = rnd(k * n);
  const big = m * k >= k * n ? 'a' : 'b';
  line(`${what}, host operands`, best(() => engine.matmulT(a, ta, b, tb, m, k, n)), 4 * (m * k + k * n + m * n));
  const kept = engine.createArray(big === 'a' ? a.length : b.length);
  kept.write(0, big === 'a' ? a : b);
  line(`${what}, ${big} kept`, best(() => engine.matmulT(big === 'a' ? kept : a, ta, big === 'b' ? kept : b, tb, m, k, n)), 4 * (big === 'a' ? k * n + m * n : m * k + m * n));
  kept.free();
}
await engine.close();
await model.checkpoint.close();
