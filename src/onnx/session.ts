/**
 * onnxruntime-node sessions for bwq graphs (CPU execution provider).
 * External initializers are resolved relative to `externalDataDir` (the model directory) through
 * the session config entry session.model_external_initializers_file_folder_path, so the model
 * bytes can be passed in memory while the weights stay in the safetensors files.
 */
import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import { removeOrtDebugLogAtExit } from './ort-debug-log.js';

export interface SessionOptions {
  threads?: number | undefined;
  externalDataDir?: string | undefined;
}

export function defaultThreads(): number {
  return Math.max(1, availableParallelism());
}

export async function createSession(model: Uint8Array, options: SessionOptions = {}): Promise<ort.InferenceSession> {
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    executionProviders: ['cpu'],
    intraOpNumThreads: options.threads ?? defaultThreads(),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    // Memory patterns reserve one block per run outside ORT's arena (malloc/free of hundreds of MB
    // per call, i.e. page faults every window); the arena alone reuses its chunks: ~30% faster.
    enableMemPattern: false,
    enableCpuMemArena: true,
    logSeverityLevel: 3,
  };
  const session: Record<string, string> = {};
  // Worker threads block instead of spin-waiting between ops: on a shared or oversubscribed CPU
  // spinning halves throughput (measured on the 2-core dev machine); BWQ_ORT_SPIN=1 re-enables it.
  session['intra_op.allow_spinning'] = process.env['BWQ_ORT_SPIN'] === '1' ? '1' : '0';
  if (options.externalDataDir !== undefined) session['model_external_initializers_file_folder_path'] = options.externalDataDir;
  sessionOptions.extra = { session };
  removeOrtDebugLogAtExit();
  return ort.InferenceSession.create(model, sessionOptions);
}

export function floatTensor(data: Float32Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor('float32', data, dims);
}

export function int64Tensor(ids: ArrayLike<number>, dims: readonly number[]): ort.Tensor {
  const data = new BigInt64Array(ids.length);
  for (let i = 0; i < ids.length; i++) data[i] = BigInt(ids[i]!);
  return new ort.Tensor('int64', data, dims);
}

/** The float32 data of an output tensor. */
export function outputData(outputs: ort.InferenceSession.ReturnType, name: string): Float32Array {
  const t = outputs[name];
  if (t === undefined) throw new Error(`session output ${name} missing`);
  return t.data as Float32Array;
}

export type { ort };
