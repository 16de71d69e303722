/**
 * The calibration hidden states between blocks, [windows, seqlen, hidden] float32 (the only state the quantize
 * pipeline keeps across blocks): on the host, or on a GPU in the block engine's device memory (issue #15: they do
 * not then cross PCIe twice per block nor count against the host's memory). Every consumer goes through this
 * interface: the block runs (statistics with the input rows left in place, propagation in place), host copies of
 * windows (attention calibration, the checkpoint) and writes (embeddings, resume).
 */
import type { BlockEngine, DeviceArray, EngineRunOptions, StateOutput } from '../runtime/block-runner.js';
import type { TapName } from '../onnx/block-runner.js';

export interface CalibrationStream {
  readonly windows: number;
  readonly seqlen: number;
  readonly hidden: number;
  /** where the states live, for the report and the memory bound */
  readonly onDevice: boolean;
  /** windows [w0, w0 + data.length / (seqlen·hidden)) from the host */
  write(w0: number, data: Float32Array): void;
  /** windows [w0, w0 + n) on the host (a view of the host stream: do not modify); a device stream copies them into the
   *  front of `into` when given (a buffer reused across reads: fresh host pages cost more than the copy) */
  read(w0: number, n: number, into?: Float32Array): Float32Array;
  /** runs block `layer` on windows [w0, w0 + n) as one batch: its output replaces them ('replace'), comes back
   *  ('return') or is not wanted ('discard'); `output` is complete only for 'return' (the host stream returns it
   *  always) */
  run(layer: number, w0: number, n: number, options: EngineRunOptions, output: StateOutput):
    Promise<{ output: Float32Array; taps: Map<TapName, Float32Array> }>;
  /** the whole stream as a host array when it lives there (the block-wise reconstruction needs it), else undefined */
  readonly hostArray: Float32Array | undefined;
  free(): void;
}

export function hostStream(runner: BlockEngine, data: Float32Array, windows: number, seqlen: number, hidden: number): CalibrationStream {
  const span = seqlen * hidden;
  if (data.length !== windows * span) throw new Error(`hostStream: ${data.length} values for ${windows} x ${seqlen} x ${hidden}`);
  return {
    windows, seqlen, hidden, onDevice: false, hostArray: data,
    write: (w0, x) => data.set(x, w0 * span),
    read: (w0, n) => data.subarray(w0 * span, (w0 + n) * span),
    async run(layer, w0, n, options, output) {
      const out = await runner.run(layer, data.subarray(w0 * span, (w0 + n) * span), n, seqlen, options);
      if (output === 'replace') data.set(out.output, w0 * span);
      return out;
    },
    free: () => {},
  };
}

export function deviceStream(runner: BlockEngine, state: DeviceArray, windows: number, seqlen: number, hidden: number): CalibrationStream {
  const span = seqlen * hidden;
  if (state.floats !== windows * span) throw new Error(`deviceStream: a state of ${state.floats} values for ${windows} x ${seqlen} x ${hidden}`);
  const none = new Float32Array(0);
  return {
    windows, seqlen, hidden, onDevice: true, hostArray: undefined,
    write: (w0, x) => state.write(w0 * span, x),
    read: (w0, n, into) => state.read(w0 * span, n * span, into),
    run: (layer, w0, n, options, output) => runner.run(layer, none, n, seqlen, { ...options, fromState: { state, offset: w0 * span, output } }),
    free: () => state.free(),
  };
}

/**
 * The stream for a run: on the engine's device when it is a GPU, the engine can hold states, `allowDevice` (the
 * block-wise reconstruction needs host arrays) and the device has the room; else on the host.
 */
export function createCalibrationStream(runner: BlockEngine, windows: number, seqlen: number, hidden: number, allowDevice: boolean,
  info: (line: string) => void): CalibrationStream {
  const floats = windows * seqlen * hidden;
  if (allowDevice && runner.device.startsWith('cuda') && runner.createArray !== undefined) {
    try {
      return deviceStream(runner, runner.createArray(floats), windows, seqlen, hidden);
    } catch (error) {
      info(`calibration hidden states stay on the host: ${(error as Error).message}`);
    }
  }
  return hostStream(runner, new Float32Array(floats), windows, seqlen, hidden);
}
