/**
 * The runtime's up-front memory check: the estimate of the bytes a model takes on the device (residentBytes)
 * against what the CPU backend actually allocates, and the one-line refusal, with nothing left allocated, when
 * the device reports less free memory than the model needs.
 */
import { describe, expect, it } from 'vitest';
import { loadAddon } from '../../src/native/loader.js';
import { openModelDir } from '../../src/model/model-dir.js';
import { loadRuntime } from '../../src/runtime/engine.js';
import { Lookup, loadRuntimeModelFrom, residentBytes, simulatedModelSource, type RuntimeAddon } from '../../src/runtime/load.js';
import { randomModelSource } from '../../src/runtime/random-model.js';
import { loadBenchConfig } from '../../src/bench/e2e.js';

/** The addon with some functions replaced (its exports are not enumerable, so no object spread). */
function withOverrides(overrides: Partial<RuntimeAddon>): RuntimeAddon {
  const descriptors = Object.fromEntries(Object.entries(overrides).map(([k, v]) => [k, { value: v }]));
  return Object.create(loadAddon(), descriptors) as RuntimeAddon;
}

describe('runtime model memory', () => {
  it('estimates at least what the CPU backend allocates, and at most 1.3x', async () => {
    const { config } = loadBenchConfig('test/fixtures/bench/tiny-llama-config.json');
    const addon = loadAddon() as unknown as RuntimeAddon;
    for (const variant of ['fp16', 'bwla', 'bwta'] as const) {
      const source = randomModelSource(config, variant, 'random');
      const loaded = await loadRuntimeModelFrom(addon, source, 'cpu');
      const estimate = residentBytes(source, new Lookup(source.stores), loaded.description);
      expect(estimate).toBeGreaterThanOrEqual(loaded.modelBytes);
      expect(estimate).toBeLessThanOrEqual(1.3 * loaded.modelBytes);
      addon.rtFree(loaded.handle);
    }
  });

  it('refuses a model larger than the free memory in one line and frees what it opened', async () => {
    const addon = loadAddon() as unknown as RuntimeAddon;
    const freed: unknown[] = [];
    const small = withOverrides({
      rtDevice: (h) => ({ device: addon.rtDevice(h).device, freeBytes: 1 << 20 }),
      rtFree: (h) => {
        freed.push(h);
        addon.rtFree(h);
      },
    });
    const model = await openModelDir('models/sotu-llama');
    try {
      await expect(loadRuntimeModelFrom(small, simulatedModelSource(model), 'cpu')).rejects.toThrow(
        /^the model needs 8 MiB on cpu \(.*\), which has 1 MiB free$/);
      expect(freed).toHaveLength(1);
      // the real device has room; sotu-llama ties its embeddings, held once: 4.2 M bf16 parameters + norms
      const rt = await loadRuntime(model, { device: 'cpu' });
      expect(rt.modelBytes).toBeGreaterThan(8.3e6);
      expect(rt.modelBytes).toBeLessThan(8.5e6);
      rt.close();
    } finally {
      await model.checkpoint.close();
    }
  });
});
