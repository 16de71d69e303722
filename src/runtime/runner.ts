/**
 * `bwq eval --backend native`: the eval ModelRunner (src/onnx/model-runner.ts) over the native runtime.
 * One model load; a session (KV cache + scratch) per batch size and window length, reopened only when
 * those change (the warm-up call and a last, smaller batch).
 */
import type { ModelDir } from '../model/model-dir.js';
import type { ModelRunner } from '../onnx/model-runner.js';
import { loadRuntime } from './engine.js';
import type { RuntimeDevice, RuntimeSession } from './session.js';

export interface RuntimeRunner extends ModelRunner {
  readonly backend: string;
  readonly notice: string | undefined;
  readonly packedLinears: number;
}

export async function createRuntimeRunner(model: ModelDir, options: { device?: RuntimeDevice; threads?: number } = {}):
  Promise<RuntimeRunner> {
  const rt = await loadRuntime(model, options);
  if (rt.notice !== undefined) process.stderr.write(`bwq: notice: ${rt.notice}\n`);
  let session: RuntimeSession | undefined;
  const sessionFor = (batch: number, seq: number): RuntimeSession => {
    if (session === undefined || session.batch !== batch || session.maxSeq < seq) {
      session?.close();
      session = undefined;
      session = rt.openSession(batch, seq);
    }
    return session;
  };
  return {
    config: model.config,
    get backend() {
      return session?.device ?? rt.device;
    },
    notice: rt.notice,
    packedLinears: rt.packedLinears,
    async logits(ids, batch, seq) {
      const s = sessionFor(batch, seq);
      s.reset();
      return s.forward(ids, seq, 'all');
    },
    async nll(ids, batch, seq) {
      return sessionFor(batch, seq).nll(ids, seq);
    },
    async close() {
      session?.close();
      rt.close();
    },
  };
}
