/** Without the addon: the reference kernels with a notice, except when CUDA was asked for. */
import { describe, expect, it, vi } from 'vitest';
import { BwqError } from '../../src/errors.js';

vi.mock('../../src/native/kernels.js', () => ({
  loadNativeKernels: (): never => {
    throw new BwqError('native kernels are not built (run `npm install`)', { file: 'build/Release/bwq.node' });
  },
}));

const { loadForwardKernels, createNativeModelRunner } = await import('../../src/native/forward.js');
const { openModelDir } = await import('../../src/model/model-dir.js');

describe('kernel fallback', () => {
  it('uses the JavaScript reference kernels with a notice naming the missing addon', () => {
    for (const device of ['auto', 'cpu'] as const) {
      const k = loadForwardKernels(device);
      expect(k.cpuFeatures).toBe('js-reference');
      expect(k.notice).toBe('native addon not available (build/Release/bwq.node: native kernels are not built '
        + '(run `npm install`)); using the JavaScript reference kernels (slow)');
      expect([...k.int8BinaryGemm(Int8Array.of(3, -2), Uint32Array.of(0b01), 1, 1, 2)]).toEqual([5]);
    }
  });

  it('is an error for device cuda', () => {
    expect(() => loadForwardKernels('cuda')).toThrow(BwqError);
  });

  it('prints the notice once on stderr and reports the backend', async () => {
    const model = await openModelDir('test/fixtures/models/tiny-qwen3');
    const writes: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      writes.push(String(chunk));
      return true;
    });
    try {
      const runner = await createNativeModelRunner(model);
      expect(runner.backend).toBe('js-reference');
      expect(writes).toEqual([`bwq: notice: ${runner.notice}\n`]);
    } finally {
      spy.mockRestore();
      await model.checkpoint.close();
    }
  });
});
