// node native/test/block-run-timing.mjs [cuda|cpu] [SEQ]: times one block run of 1 x SEQ tokens (default 2048; Llama-2-7B
// shape, random bf16 weights in a temporary directory, removed at the end) on the block engine: hidden rows from the host
// or from a calibration state, with the 4 linear-input taps' Gram matrices and sampled rows, the output returned, in
// place or dropped (docs/PERFORMANCE.md, the statistics pass).
import { mkdtempSync, writeFileSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBenchConfig } from '../../dist/bench/e2e.js';
import { randomModelSource } from '../../dist/runtime/random-model.js';
import { expectedShapes, modelWeightNames } from '../../dist/model/weights.js';

import { writeSafetensors } from '../../dist/safetensors/writer.js';
import { dtypeByteSize } from '../../dist/safetensors/dtypes.js';
import { DEFAULT_MODEL_DIR } from '../../dist/package-paths.js';
import { openModelDir } from '../../dist/model/model-dir.js';
import { createRuntimeBlockEngine } from '../../dist/runtime/block-runner.js';
const { name, config: base, raw } = loadBenchConfig('llama-2-7b');
const config = { ...base, numLayers: 1 };
const dir = mkdtempSync(join(tmpdir(), 'stats-'));
const store = randomModelSource(config, 'fp16', `random:${name}`).stores[0];
const tensors = [];
for (const [tensor, shape] of expectedShapes(config, modelWeightNames(config))) tensors.push({ name: tensor, dtype: store.info(tensor).dtype, shape, data: () => store.readBytes(tensor) });
await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...raw, num_hidden_layers: 1, dtype: 'bfloat16' }));
for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(DEFAULT_MODEL_DIR, f), join(dir, f));
const model = await openModelDir(dir);
const engine = await createRuntimeBlockEngine(model, { device: process.argv[2] ?? 'cuda' });
console.log(engine.device);
const seq = Number(process.argv[3] ?? 2048), h = config.hiddenSize;
const hidden = Float32Array.from({ length: seq * h }, (_, i) => Math.sin(i * 0.37));
const weights = await engine.loadBlockWeights(0);
const recipe = { linears: {} };
const taps = ['attn_input', 'attn_context', 'mlp_input', 'mlp_hidden'];
const state = engine.createArray(seq * h);
state.write(0, hidden);
const variants = {
  plain: { weights, recipe },
  'plain from state': { weights, recipe, fromState: { state, offset: 0, output: 'return' } },
  'gram 4 taps': { weights, recipe, taps, gramTaps: taps, tapRows: new Int32Array(0) },
  'gram + 4 rows': { weights, recipe, taps, gramTaps: taps, tapRows: Int32Array.from([1, 7, 11, 13].map((x) => x * Math.floor(seq / 16))) },
  'gram + 4 rows from state': { weights, recipe, taps, gramTaps: taps, tapRows: Int32Array.from([1, 7, 11, 13].map((x) => x * Math.floor(seq / 16))), fromState: { state, offset: 0, output: 'return' } },
  'in place from state': { weights, recipe, fromState: { state, offset: 0, output: 'replace' } },
  'gram + 4 rows, output dropped': { weights, recipe, taps, gramTaps: taps, tapRows: Int32Array.from([1, 7, 11, 13].map((x) => x * Math.floor(seq / 16))), fromState: { state, offset: 0, output: 'discard' } },
};
for (const [label, o] of Object.entries(variants)) {
  await engine.run(0, hidden, 1, seq, o);
  const t = performance.now();
  for (let i = 0; i < 5; i++) await engine.run(0, hidden, 1, seq, o);
  console.log(`${label.padEnd(28)} ${((performance.now() - t) / 5).toFixed(1)} ms per ${seq}-token run`);
}
for (const t of taps) engine.readGram(t);
await engine.close();
await model.checkpoint.close();
rmSync(dir, { recursive: true, force: true });
