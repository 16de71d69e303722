import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/linalg/random.js';
import { openModelDir, type ModelDir } from '../../src/model/model-dir.js';
import { DEFAULT_MODEL_DIR } from '../../src/package-paths.js';
import { createRuntimeBlockEngine, type BlockEngine } from '../../src/runtime/block-runner.js';
import { runtimeAvailable } from '../../src/eval/backend.js';

describe.runIf(runtimeAvailable())('calibration hidden states in the engine\'s memory (CPU backend)', () => {
  let model: ModelDir;
  let engine: BlockEngine;
  const seq = 16;
  const windows = 3;
  let h: number;
  let hidden: Float32Array;

  beforeAll(async () => {
    model = await openModelDir(DEFAULT_MODEL_DIR);
    engine = await createRuntimeBlockEngine(model, { device: 'cpu' });
    h = model.config.hiddenSize;
    const rng = new Rng(5);
    hidden = Float32Array.from({ length: windows * seq * h }, () => rng.normal());
  });
  afterAll(async () => {
    await engine.close();
    await model.checkpoint.close();
  });

  it('a block run from the state equals the run from host rows (output returned, dropped or in place, where it replaces the rows and nothing else)', async () => {
    expect(engine.createArray).toBeDefined();
    const state = engine.createArray!(hidden.length);
    state.write(0, hidden);
    expect(Array.from(state.read(0, hidden.length))).toEqual(Array.from(hidden));
    const weights = await engine.loadBlockWeights(0);
    const options = { weights, recipe: { linears: {} }, taps: ['mlp_hidden' as const] };
    // windows 1..2 as one batch of 2 (the offset is in floats)
    const lo = seq * h;
    const host = await engine.run(0, hidden.subarray(lo), 2, seq, options);
    const fromState = await engine.run(0, new Float32Array(0), 2, seq, { ...options, fromState: { state, offset: lo, output: 'return' } });
    expect(Array.from(fromState.output)).toEqual(Array.from(host.output));
    expect(Array.from(fromState.taps.get('mlp_hidden')!)).toEqual(Array.from(host.taps.get('mlp_hidden')!));
    expect(Array.from(state.read(0, hidden.length))).toEqual(Array.from(hidden)); // not in place: unchanged
    const discarded = await engine.run(0, new Float32Array(0), 2, seq, { ...options, fromState: { state, offset: lo, output: 'discard' } });
    expect(discarded.output.length).toBe(0);
    expect(Array.from(discarded.taps.get('mlp_hidden')!)).toEqual(Array.from(host.taps.get('mlp_hidden')!));
    expect(Array.from(state.read(0, hidden.length))).toEqual(Array.from(hidden));
    const inPlace = await engine.run(0, new Float32Array(0), 2, seq, { ...options, fromState: { state, offset: lo, output: 'replace' } });
    expect(inPlace.output.length).toBe(0);
    expect(Array.from(state.read(lo, 2 * seq * h))).toEqual(Array.from(host.output));
    expect(Array.from(state.read(0, lo))).toEqual(Array.from(hidden.subarray(0, lo))); // window 0 untouched
    state.free();
    state.free(); // twice is harmless
    await expect(engine.run(0, new Float32Array(0), 1, seq, { ...options, fromState: { state, offset: 0, output: 'replace' } }))
      .rejects.toThrow(/not one of this engine's live states/);
  });

  it('refuses rows outside the state and a size the device has not, in one line', async () => {
    const state = engine.createArray!(seq * h);
    const weights = await engine.loadBlockWeights(0);
    await expect(engine.run(0, new Float32Array(0), 1, seq, { weights, recipe: { linears: {} }, fromState: { state, offset: 1, output: 'replace' } }))
      .rejects.toThrow(/outside the calibration state/);
    expect(() => state.write(seq * h - 1, new Float32Array(2))).toThrow(/outside the calibration state/);
    expect(() => state.read(0, seq * h + 1)).toThrow(/outside the calibration state/);
    state.free();
    expect(() => engine.createArray!(1e14)).toThrow(/^not enough memory on cpu.*for the calibration states: \d+ MiB needed, \d+ MiB free$/);
  });
});
