// The runtime block engine (the quantize pipeline's) on CUDA against the CPU: block outputs and every tap, per layer.
// Run on a GPU machine from the repo root after the builds: node native/test/runtime-block-check.mjs MODEL_DIR...
import { openModelDir } from '../../dist/model/model-dir.js';
import { createRuntimeBlockEngine } from '../../dist/runtime/block-runner.js';
const taps = ['attn_input', 'attn_context', 'mlp_input', 'mlp_hidden', 'query', 'key', 'value', 'probs'];
let bad = 0;
for (const dir of process.argv.slice(2)) {
  const m = await openModelDir(dir);
  const g = await createRuntimeBlockEngine(m, { device: 'cuda' });
  const c = await createRuntimeBlockEngine(m, { device: 'cpu' });
  const ids = Int32Array.from({ length: 2 * 24 }, (_, i) => (i * 37 + 11) % m.config.vocabSize);
  const hidden = await c.embed(ids, 2, 24);
  for (let layer = 0; layer < m.config.numLayers; layer++) {
    const a = await g.run(layer, hidden, 2, 24, { taps });
    const b = await c.run(layer, hidden, 2, 24, { taps });
    const rel = (x, y) => { let d = 0, mx = 0; for (let i = 0; i < x.length; i++) { d = Math.max(d, Math.abs(x[i] - y[i])); mx = Math.max(mx, Math.abs(y[i])); } return d / Math.max(mx, 1e-30); };
    const parts = [['output', rel(a.output, b.output)], ...taps.map((t) => [t, rel(a.taps.get(t), b.taps.get(t))])];
    const worst = Math.max(...parts.map((p) => p[1]));
    if (!(worst < 5e-3)) bad++;
    console.log(`${worst < 5e-3 ? 'ok  ' : 'FAIL'} ${dir} layer ${layer} on ${g.device}: ${parts.map(([n, v]) => `${n} ${v.toExponential(1)}`).join(', ')}`);
  }
  await g.close(); await c.close(); await m.checkpoint.close();
}
console.log(bad === 0 ? 'block engine cuda = cpu' : `${bad} layers differ`);
