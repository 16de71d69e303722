/**
 * Streams a model directory into a native runtime model, one tensor at a time (the host never holds a
 * float32 copy of the whole model): float weights keep their checkpoint dtype (f32, bf16, f16), small
 * tensors (norms, scales, low-rank factors, rotations, biases) go as float32, packed linears as their
 * 32-bit words. For a quantized OUT_DIR, tensors are looked up in the packed file first, then in the
 * simulated checkpoint; a linear with `<prefix>.qweight` in the packed file runs packed.
 */
import { join } from 'node:path';
import { BwqError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import type { ModelDir } from '../model/model-dir.js';
import type { ModelWeightNames } from '../model/weights.js';
import { linearByRole } from '../model/weights.js';
import { inverseFrequencies } from '../onnx/rope.js';
import { openPackedFile } from '../model/packed-file.js';
import type { ActivationQuantizer, KroneckerRotation, LinearRole } from '../quant/recipe.js';
import { rotationTensorNamesOf } from '../quant/recipe.js';
import { ROLES, encodeDescription, type InputPrepDescription, type ModelDescription, type RotationDescription } from './descriptor.js';

/** The addon's runtime functions (native/src/addon_runtime.cpp). */
export interface RuntimeAddon {
  rtOpen(device: 'cpu' | 'cuda', descriptor: Float64Array): RuntimeModelHandle;
  rtSetTensor(model: RuntimeModelHandle, slot: string, dtype: number, shape: number[], data: ArrayBufferView): void;
  rtMissing(model: RuntimeModelHandle): string;
  rtSession(model: RuntimeModelHandle, batch: number, maxT: number, maxChunk: number): RuntimeSessionHandle;
  rtForward(session: RuntimeSessionHandle, ids: Int32Array, t: number, mode: number, out: Float32Array | null): void;
  rtNll(session: RuntimeSessionHandle, ids: Int32Array, t: number): number;
  rtReset(session: RuntimeSessionHandle): void;
  rtInfo(session: RuntimeSessionHandle): { position: number; device: string; sessionBytes: number; modelBytes: number;
    replaying: boolean };
  rtFree(handle: RuntimeModelHandle | RuntimeSessionHandle | RuntimeStateHandle): void;
  rtModelBytes(model: RuntimeModelHandle): number;
  rtDevice(model: RuntimeModelHandle): { device: string; freeBytes: number };
}
export interface RuntimeModelHandle { readonly __runtimeModel: unique symbol }
export interface RuntimeSessionHandle { readonly __runtimeSession: unique symbol }
/** Opaque N-API external: float32 values in a model's backend memory (rtStateAlloc; a DeviceArray's handle). */
export interface RuntimeStateHandle { readonly __runtimeState: unique symbol }

/** A read-only tensor store (a safetensors file, a checkpoint, or synthetic tensors). */
export interface TensorStore {
  readonly label: string;
  has(name: string): boolean;
  info(name: string): { shape: readonly number[]; dtype: string };
  readFloat32(name: string): Promise<Float32Array>;
  readBytes(name: string): Promise<Uint8Array>;
}

/** A safetensors file or checkpoint as a TensorStore labelled for error messages. */
export function storeOf(f: Omit<TensorStore, 'label'>, label: string): TensorStore {
  return { label, has: (n) => f.has(n), info: (n) => f.info(n), readFloat32: (n) => f.readFloat32(n), readBytes: (n) => f.readBytes(n) };
}

/** Tensors looked up in the packed file first, then in the checkpoint. */
export class Lookup {
  constructor(readonly stores: TensorStore[]) {}
  find(name: string): TensorStore | undefined {
    return this.stores.find((s) => s.has(name));
  }
  require(name: string): TensorStore {
    const s = this.find(name);
    if (s === undefined) {
      throw new BwqError(`tensor '${name}' is missing (looked in ${this.stores.map((x) => x.label).join(' and ')})`,
        { file: this.stores[0]!.label });
    }
    return s;
  }
}

const KEPT_DTYPES: Record<string, number> = { F32: 0, BF16: 1, F16: 2 };

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export interface LoadedModel {
  handle: RuntimeModelHandle;
  /** bytes of the weights on the device */
  modelBytes: number;
  description: ModelDescription;
  packedLinears: number;
}

/** Opens `device` and streams every tensor of the model directory into it. */
export async function loadRuntimeModel(addon: RuntimeAddon, model: ModelDir, device: 'cpu' | 'cuda'): Promise<LoadedModel> {
  const c = model.config;
  const where = model.checkpoint.indexFile ?? model.checkpoint.files[0] ?? model.dir;
  const q = c.quantization;
  const packed = await openPackedFile(model);
  const packedFile = packed?.file;
  const stores: TensorStore[] = [];
  if (packed !== undefined) {
    stores.push(storeOf(packed.file, packed.path));
  }
  stores.push(storeOf(model.checkpoint, where));
  try {
    return await loadRuntimeModelFrom(addon, { config: c, weightNames: model.weightNames, stores, quantized: q !== undefined },
      device);
  } finally {
    await packedFile?.close();
  }
}

/**
 * The simulated model of a directory with quantization_config (an OUT_DIR): the checkpoint's float weights
 * with the recipe's online rotations and activation quantizers on every linear and attention operand, every
 * linear as a float GEMM — what the ONNX graph of `bwq eval --backend onnx` computes, in the runtime.
 */
export function simulatedModelSource(model: ModelDir): ModelSource {
  const ck = model.checkpoint;
  const label = ck.indexFile ?? ck.files[0] ?? model.dir;
  return {
    config: model.config,
    weightNames: model.weightNames,
    stores: [storeOf(ck, label)],
    quantized: false,
  };
}

/**
 * What a model is loaded from: its config, resolved weight names, and tensor stores searched in order (for a
 * quantized model the packed file first). Stores may also be synthetic (random weights for benchmarks).
 */
export interface ModelSource {
  config: ModelConfig;
  weightNames: ModelWeightNames;
  stores: TensorStore[];
  /** true: the first store is the packed file (linears with `<prefix>.qweight` there run packed) */
  quantized: boolean;
}

export async function loadRuntimeModelFrom(addon: RuntimeAddon, src: ModelSource, device: 'cpu' | 'cuda'):
  Promise<LoadedModel> {
  const c = src.config;
  const where = src.stores[src.stores.length - 1]!.label;
  if (c.architecture === 'gpt2' || c.normKind !== 'rms') {
    throw new BwqError(`architecture ${c.architecture} is not supported by the native runtime (llama, mistral, qwen2, qwen3)`,
      { file: where });
  }
  const q = c.quantization;
  if (q !== undefined && q.layers.length !== c.numLayers) {
    throw new BwqError(`quantization_config has ${q.layers.length} layers, the model ${c.numLayers}`, { file: where });
  }
  const lookup = new Lookup(src.stores);
  const description = describe(src, lookup);
  const handle = addon.rtOpen(device, encodeDescription(description, where));
  try {
    const need = residentBytes(src, lookup, description);
    const { device: name, freeBytes } = addon.rtDevice(handle);
    if (need > freeBytes) {
      throw new BwqError(`the model needs ${mib(need)} MiB on ${name}, which has ${mib(freeBytes)} MiB free`, { file: where });
    }
    await sendTensors(addon, handle, src, lookup, description);
    const missing = addon.rtMissing(handle);
    if (missing !== '') throw new BwqError(`runtime model is incomplete: ${missing} was not loaded`, { file: where });
  } catch (error) {
    addon.rtFree(handle);
    throw error;
  }
  const packedLinears = description.layers.reduce((n, l) => n + l.linears.filter((x) => x.packed).length, 0);
  return { handle, description, packedLinears, modelBytes: addon.rtModelBytes(handle) };
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(0);
}

/** Bytes the weights will take on the device: every tensor sendTensors sends, in the dtype it is sent in. */
export function residentBytes(src: ModelSource, lookup: Lookup, d: ModelDescription): number {
  const c = src.config;
  const size = (name: string, kept: boolean): number => {
    const s = lookup.find(name);
    if (s === undefined) return 0;
    const info = s.info(name);
    const elems = info.shape.reduce((a, b) => a * b, 1);
    return elems * (kept && (info.dtype === 'BF16' || info.dtype === 'F16') ? 2 : 4);
  };
  const names = src.weightNames;
  let bytes = size(names.embedTokens, true) + (names.lmHead === names.embedTokens ? 0 : size(names.lmHead, true));
  bytes += 4 * c.hiddenSize * (1 + 2 * c.numLayers) + 4 * 2 * c.headDim * c.numLayers;  // norms
  for (const r of d.rotations) bytes += 4 * (r.a * r.a + r.b * r.b + r.r * r.r);
  const dims = linearDims(c);
  for (const [i, ln] of names.layers.entries()) {
    for (const [r, role] of ROLES.entries()) {
      const lin = d.layers[i]!.linears[r]!;
      const [n, k] = dims[role];
      const prefix = prefixOf(linearByRole(ln, role)!.weight);
      if (lin.packed) {
        // CUDA pads rows to 128 and the row stride to 32 words; count that (an upper bound for the CPU)
        bytes += Math.ceil(n / 128) * 128 * Math.ceil(Math.ceil(k / 32) / 32) * 32 * 4 + 4 * n + 4 * lin.rank * (n + k);
      } else {
        bytes += size(`${prefix}.weight`, true) || 2 * n * k;
      }
      if (lin.bias) bytes += 4 * n;
    }
  }
  return bytes;
}

function prefixOf(weight: string): string {
  return weight.replace(/\.weight$/, '');
}

/** Which linears are packed, their shared input preparations and rotations, from the recipe and the files. */
function describe(src: ModelSource, lookup: Lookup): ModelDescription {
  const c = src.config;
  const quantized = src.quantized;
  const recipe = c.quantization;
  const inputs: InputPrepDescription[] = [];
  const inputKeys = new Map<string, number>();
  const rotations: RotationDescription[] = [];
  const rotationKeys = new Map<string, number>();
  const inputOf = (rot: KroneckerRotation | undefined, quantizer: ActivationQuantizer, k: number): number => {
    let rotation = -1;
    if (rot !== undefined) {
      const rk = rotationTensorNamesOf(rot).join('\u0000');
      let idx = rotationKeys.get(rk);
      if (idx === undefined) {
        const dim = (name: string): number => {
          const shape = lookup.require(name).info(name).shape;
          if (shape.length !== 2 || shape[0] !== shape[1]) {
            throw new BwqError(`rotation tensor '${name}' must be square, has shape [${shape.join(', ')}]`,
              { file: lookup.require(name).label });
          }
          return shape[0]!;
        };
        const a = dim(rot.r1);
        const b = dim(rot.r2);
        const r = rot.r3 === undefined ? 0 : dim(rot.r3);
        if (a * b + r !== k) {
          const what = rot.r3 === undefined ? `${rot.r1} ⊗ ${rot.r2} is ${a}x${b} = ${a * b}` : `diag(${rot.r1} ⊗ ${rot.r2}, ${rot.r3}) is ${a}x${b} + ${r} = ${a * b + r}`;
          throw new BwqError(`rotation ${what}, but the linear has ${k} inputs`, { file: lookup.require(rot.r1).label });
        }
        idx = rotations.length;
        rotations.push({ a, b, r, r1: rot.r1, r2: rot.r2, r3: rot.r3 });
        rotationKeys.set(rk, idx);
      }
      rotation = idx;
    }
    const key = JSON.stringify([rotation, quantizer]);
    let idx = inputKeys.get(key);
    if (idx === undefined) {
      idx = inputs.length;
      inputs.push({ rotation, quantizer });
      inputKeys.set(key, idx);
    }
    return idx;
  };
  const dims = linearDims(c);
  const layers = src.weightNames.layers.map((names, i) => {
    const lr = recipe?.layers[i];
    const linears = ROLES.map((role) => {
      const wn = linearByRole(names, role);
      if (wn === undefined || wn.transposed || wn.fusedIndex !== undefined) {
        throw new BwqError(`layer ${i} ${role}: not supported by the native runtime`, { file: lookup.stores[0]!.label });
      }
      const [n, k] = dims[role];
      const r = lr?.linears[role];
      const input = inputOf(r?.rotation, r?.quantizer ?? { kind: 'none' }, k);
      const prefix = prefixOf(wn.weight);
      const packedStore = quantized ? lookup.stores[0]! : undefined;
      const packed = packedStore?.has(`${prefix}.qweight`) ?? false;
      let rank = 0;
      if (packed) {
        const a = packedStore!.has(`${prefix}.lr_a`);
        if (a !== packedStore!.has(`${prefix}.lr_b`)) {
          throw new BwqError(`${prefix}: lr_a and lr_b must both be present or both absent`, { file: packedStore!.label });
        }
        if (a) {
          const shape = packedStore!.info(`${prefix}.lr_a`).shape;
          if (shape.length !== 2 || shape[0] !== n) {
            throw new BwqError(`tensor '${prefix}.lr_a' must be [${n}, r], has [${shape.join(', ')}]`, { file: packedStore!.label });
          }
          rank = shape[1]!;
        }
      }
      const bias = lookup.find(`${prefix}.bias`) !== undefined || (wn.bias !== undefined && lookup.find(wn.bias) !== undefined);
      return { packed, input, rank, bias };
    });
    return { linears, attention: lr?.attention };
  });
  const ropeHalf = c.rope === undefined ? 0 : inverseFrequencies(c).length;
  return { config: c, ropeHalf, inputs, rotations, layers };
}

export function linearDims(c: ModelConfig): Record<LinearRole, [number, number]> {
  const h = c.hiddenSize;
  const qw = c.numHeads * c.headDim;
  const kvw = c.numKvHeads * c.headDim;
  return { q_proj: [qw, h], k_proj: [kvw, h], v_proj: [kvw, h], o_proj: [h, qw], gate_proj: [c.intermediateSize, h],
    up_proj: [c.intermediateSize, h], down_proj: [h, c.intermediateSize] };
}

async function sendTensors(addon: RuntimeAddon, handle: RuntimeModelHandle, model: ModelSource, lookup: Lookup,
  d: ModelDescription): Promise<void> {
  const send = (slot: string, dtype: number, shape: readonly number[], data: ArrayBufferView): void => {
    addon.rtSetTensor(handle, slot, dtype, [...shape], data);
  };
  const checked = (name: string, shape: readonly number[] | undefined): TensorStore => {
    const s = lookup.require(name);
    const actual = s.info(name).shape;
    if (shape !== undefined && !sameShape(actual, shape)) {
      throw new BwqError(`tensor '${name}' has shape [${actual.join(', ')}], expected [${shape.join(', ')}]`, { file: s.label });
    }
    return s;
  };
  const float32 = async (slot: string, name: string, shape?: readonly number[]): Promise<void> => {
    const s = checked(name, shape);
    send(slot, 0, s.info(name).shape, await s.readFloat32(name));
  };
  // Kept in the checkpoint dtype when it is f32 / bf16 / f16, else converted to float32.
  const matrix = async (slot: string, name: string, shape: readonly number[]): Promise<void> => {
    const s = checked(name, shape);
    const dtype = KEPT_DTYPES[s.info(name).dtype];
    if (dtype === undefined) send(slot, 0, shape, await s.readFloat32(name));
    else send(slot, dtype, shape, await s.readBytes(name));
  };
  const c = model.config;
  const names = model.weightNames;
  await matrix('embed', names.embedTokens, [c.vocabSize, c.hiddenSize]);
  if (names.lmHead === names.embedTokens) send('tie_lm_head', 0, [0], new Float32Array(0));
  else await matrix('lm_head', names.lmHead, [c.vocabSize, c.hiddenSize]);
  await float32('final_norm', names.finalNorm.weight, [c.hiddenSize]);
  if (d.ropeHalf > 0) send('inv_freq', 0, [d.ropeHalf], inverseFrequencies(c));
  for (const [j, r] of d.rotations.entries()) {
    await float32(`rotations.${j}.r1`, r.r1, [r.a, r.a]);
    await float32(`rotations.${j}.r2`, r.r2, [r.b, r.b]);
    if (r.r3 !== undefined) await float32(`rotations.${j}.r3`, r.r3, [r.r, r.r]);
  }
  const dims = linearDims(c);
  for (const [i, ln] of names.layers.entries()) {
    const p = `layers.${i}`;
    await float32(`${p}.input_norm`, ln.inputNorm.weight, [c.hiddenSize]);
    await float32(`${p}.post_norm`, ln.postAttentionNorm.weight, [c.hiddenSize]);
    if (ln.qNorm !== undefined) await float32(`${p}.q_norm`, ln.qNorm.weight, [c.headDim]);
    if (ln.kNorm !== undefined) await float32(`${p}.k_norm`, ln.kNorm.weight, [c.headDim]);
    for (const [r, role] of ROLES.entries()) {
      const wn = linearByRole(ln, role)!;
      const lin = d.layers[i]!.linears[r]!;
      const [n, k] = dims[role];
      const prefix = prefixOf(wn.weight);
      const slot = `${p}.${role}`;
      if (lin.packed) {
        const s = checked(`${prefix}.qweight`, [n, Math.ceil(k / 32)]);
        const dtype = s.info(`${prefix}.qweight`).dtype;
        if (dtype !== 'U32' && dtype !== 'I32') {
          throw new BwqError(`tensor '${prefix}.qweight' has dtype ${dtype}, expected U32 (packed sign bits)`, { file: s.label });
        }
        send(`${slot}.qweight`, 3, [n, Math.ceil(k / 32)], await s.readBytes(`${prefix}.qweight`));
        await float32(`${slot}.wscale`, `${prefix}.wscale`, [n]);
        if (lin.rank > 0) {
          await float32(`${slot}.lr_a`, `${prefix}.lr_a`, [n, lin.rank]);
          await float32(`${slot}.lr_b`, `${prefix}.lr_b`, [lin.rank, k]);
        }
      } else {
        await matrix(`${slot}.weight`, wn.weight, [n, k]);
      }
      if (lin.bias) {
        const biasName = lookup.find(`${prefix}.bias`) !== undefined ? `${prefix}.bias` : wn.bias!;
        await float32(`${slot}.bias`, biasName, [n]);
      }
    }
  }
}
