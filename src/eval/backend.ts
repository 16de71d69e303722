/** The forward-pass backends `bwq eval` can use. */
import { BwqError } from '../errors.js';
import type { ModelDir } from '../model/model-dir.js';
import { createModelRunner, type ModelRunner } from '../onnx/model-runner.js';
import type { NativeDevice } from '../native/kernels.js';
import { runtimeAddon } from '../runtime/engine.js';
import { createRuntimeRunner } from '../runtime/runner.js';

/** True when the native addon loads and carries the runtime. */
export function runtimeAvailable(): boolean {
  try {
    runtimeAddon();
    return true;
  } catch {
    return false;
  }
}

export type EvalBackend = 'onnx' | 'native';
export const EVAL_BACKENDS: readonly EvalBackend[] = ['onnx', 'native'];

export type { NativeDevice };
export const NATIVE_DEVICES: readonly NativeDevice[] = ['auto', 'cpu', 'cuda'];

interface NativeForwardModule {
  createNativeModelRunner(model: ModelDir, options?: { device?: NativeDevice; threads?: number }): Promise<ModelRunner>;
}

/** Loaded through a computed specifier so bwq builds and runs without helper E's module. */
export async function importNativeForward(specifier = '../native/forward.js'): Promise<NativeForwardModule> {
  let mod: Partial<NativeForwardModule>;
  try {
    mod = (await import(specifier)) as Partial<NativeForwardModule>;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') throw new BwqError('native backend not built', { cause: error });
    throw error;
  }
  if (typeof mod.createNativeModelRunner !== 'function') throw new BwqError('native backend not built');
  return mod as NativeForwardModule;
}

export async function createRunner(model: ModelDir, backend: EvalBackend,
  options: { threads?: number; device?: NativeDevice; nativeModule?: string } = {}): Promise<ModelRunner> {
  if (backend === 'native') {
    // The native runtime (one native call per forward, CPU or CUDA); without the addon, the TypeScript
    // reference forward with the JavaScript reference kernels (src/native/forward.ts prints why).
    if (options.nativeModule === undefined && runtimeAvailable()) {
      return createRuntimeRunner(model, {
        ...(options.device === undefined ? {} : { device: options.device }),
        ...(options.threads === undefined ? {} : { threads: options.threads }),
      });
    }
    const native = await importNativeForward(options.nativeModule);
    return native.createNativeModelRunner(model, {
      ...(options.device === undefined ? {} : { device: options.device }),
      ...(options.threads === undefined ? {} : { threads: options.threads }),
    });
  }
  if (model.packedOnly === true) {
    throw new BwqError('has no simulated model (quantized with --no-simulated), which --backend onnx needs; evaluate it with --backend native',
      { file: model.dir, exitCode: 2 });
  }
  return createModelRunner(model, options.threads === undefined ? {} : { threads: options.threads });
}
