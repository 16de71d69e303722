/**
 * Block-wise reconstruction inside `bwq quantize` (docs/ALGORITHMS.md §Block-wise reconstruction):
 * after the block's linears and activation quantizers are calibrated as usual, the student block
 * (src/quant/reconstruct/) starts from that result and learns latent weights, weight scales, low-rank
 * factors and thresholds / clip ratios by minimising the block output MSE against the teacher; the
 * frozen result replaces the calibrated one in place (same tensors, same recipe fields).
 *
 * Teacher and student follow OmniQuant / AutoRound: the teacher is the float block on the float
 * model's hidden states (a second, float stream of the calibration windows kept here, advanced by one
 * float block per layer), the student runs on the quantized stream (the pipeline's hidden states,
 * which went through the quantized blocks 0 … i−1), so each block also learns to undo the error of
 * the blocks before it.
 */
import { nativeActQuant } from '../native/act-quant.js';
import { BwqError } from '../errors.js';
import type { ModelDir } from '../model/model-dir.js';
import { linearByRole } from '../model/weights.js';
import type { BlockWeights } from '../onnx/block-runner.js';
import type { BlockEngine } from '../runtime/block-runner.js';
import { ropeTables, type RopeTables } from '../native/rope.js';
import { inverseFrequencies } from '../onnx/rope.js';
import type { Progress } from '../progress.js';
import { ATTENTION_OPERANDS, type ActivationQuantizer, type AttentionRecipe, type LinearInputRecipe, type LinearRole } from '../quant/recipe.js';
import { packSignRows, unpackSignRows } from '../quant/pack.js';
import { describeQuantizer } from '../quant/quantizers.js';
import type { SiteName } from '../quant/reconstruct/block.js';
import { rotationForward, type Rotation } from '../quant/reconstruct/rotation.js';
import { BLOCK_LINEAR_ROLES, createStudent, freezeStudent, type StudentLinear } from '../quant/reconstruct/student.js';
import { hostStepper, reconstructBlock, type StepperFactory } from '../quant/reconstruct/train.js';
import type { QuantizedLinearArrays } from './layer-spill.js';
import { createDeviceGemm, createOrtGemm, type ClosableGemm } from './reconstruct-gemm.js';

export interface ReconstructOptions {
  /** Adam steps per block */
  iterations: number;
  /** calibration windows per step */
  batch: number;
  /** learning rates, relative to each tensor's initial mean magnitude */
  lrWeight: number;
  lrScale: number;
  lrAct: number;
  /** levels of the intermediate stages of ternary sites (BWTA); empty = ternary from the start */
  levels: number[];
  /** fraction of the iterations at the final quantizers */
  finalFraction: number;
  /** fraction of each stage spent handing over from the previous stage */
  handover: number;
  /** magnitude-alignment projection factors */
  align: boolean;
  /** windows on which the loss before / after is measured (and a worse result refused) */
  evalWindows: number;
}

export const DEFAULT_RECONSTRUCT: Readonly<ReconstructOptions> = {
  iterations: 200, batch: 1, lrWeight: 1e-1, lrScale: 1e-2, lrAct: 1e-2,
  levels: [9, 7, 5], finalFraction: 0.5, handover: 0.5, align: false, evalWindows: 2,
};

export interface ReconstructionReport {
  /** block output MSE of the calibrated (no-reconstruction) block and of the reconstructed one, on the eval windows */
  lossBefore: number;
  lossAfter: number;
  /** false: the reconstruction did not lower the loss and the calibrated block was kept */
  kept: boolean;
  /** mean training loss over each tenth of the iterations */
  history: number[];
  stageLengths: number[];
  seconds: number;
  /** the frozen activation quantizers, by site (linear groups, then attention operands) */
  quantizers: Record<string, string>;
}

/** What the pipeline holds for one block while it quantizes it (src/pipeline/quantize.ts). */
export interface BlockState {
  /** the float block weights (teacher) */
  weights: BlockWeights;
  /** role → simulated weight the pipeline propagates with */
  newLinears: Record<LinearRole, Float32Array | undefined>;
  recipeLinears: Partial<Record<LinearRole, LinearInputRecipe>>;
  /** rotation tensors by name (BWLA) */
  extra: ReadonlyMap<string, { readonly data: Float32Array; readonly shape: readonly number[] }>;
  /** HF weight name → the quantized linear as it will be written */
  layerLinears: Map<string, { q: QuantizedLinearArrays; prefix: string; bias: string | undefined }>;
  /** HF weight names of the block */
  names: Parameters<typeof linearByRole>[0];
}

const SITE_OF_ROLE: Record<LinearRole, SiteName> = {
  q_proj: 'attn_in', k_proj: 'attn_in', v_proj: 'attn_in', o_proj: 'attn_out',
  gate_proj: 'mlp_in', up_proj: 'mlp_in', down_proj: 'mlp_out',
};

export class BlockReconstruction {
  private readonly ropes = new Map<number, RopeTables>();
  private layer: number;
  /** the activation quantizers on the CPU kernels' threads (src/native/act-quant.ts) */
  private readonly actQuant = nativeActQuant();

  private constructor(
    private readonly model: ModelDir,
    private readonly runner: BlockEngine,
    private readonly floatHidden: Float32Array,
    private readonly ns: number,
    private readonly seqlen: number,
    private readonly bs: number,
    startLayer: number,
    readonly options: ReconstructOptions,
    private readonly seed: number,
    private readonly gemm: ClosableGemm,
  ) {
    this.layer = startLayer;
  }

  /** The float stream at block `startLayer` (embeddings, then the float blocks before it: a resumed run recomputes them). */
  static async create(model: ModelDir, runner: BlockEngine, ids: Int32Array, ns: number, seqlen: number, bs: number, startLayer: number,
    options: ReconstructOptions, seed: number, threads: number | undefined, progress: Progress): Promise<BlockReconstruction> {
    const c = model.config;
    if (c.hiddenAct !== 'silu') throw new BwqError(`--reconstruct needs a SiLU-gated MLP (hidden_act ${c.hiddenAct})`, { file: model.dir, exitCode: 2 });
    const h = c.hiddenSize;
    const hidden = new Float32Array(ns * seqlen * h);
    for (let b = 0; b * bs < ns; b++) {
      const n = Math.min(bs, ns - b * bs);
      hidden.set(await runner.embed(ids.subarray(b * bs * seqlen, (b * bs + n) * seqlen), n, seqlen), b * bs * seqlen * h);
    }
    // on a GPU the large products go to the block engine's device (cuBLAS with transposition flags)
    const host = createOrtGemm(threads);
    const gemm = runner.matmulT !== undefined && runner.device.startsWith('cuda') ? createDeviceGemm(runner.matmulT, host) : host;
    const r = new BlockReconstruction(model, runner, hidden, ns, seqlen, bs, 0, options, seed, gemm);
    if (startLayer > 0) progress.start(`reconstruction: float stream through blocks 1–${startLayer}`);
    for (let layer = 0; layer < startLayer; layer++) {
      await r.advance(layer, await runner.loadBlockWeights(layer));
      progress.update(layer + 1, startLayer);
    }
    if (startLayer > 0) progress.succeed(`reconstruction: float stream at block ${startLayer + 1}`);
    return r;
  }

  /**
   * Runs the float block `layer` on the float stream, in place (each batch's outputs replace its inputs once the
   * block has run on them: one stream of nsamples·seqlen·H floats, docs/ALGORITHMS.md); returns the stream.
   */
  private async advance(layer: number, weights: BlockWeights): Promise<Float32Array> {
    if (layer !== this.layer) throw new Error(`reconstruction float stream is at block ${this.layer}, asked for ${layer}`);
    const { ns, seqlen, bs } = this;
    const h = this.model.config.hiddenSize;
    for (let b = 0; b * bs < ns; b++) {
      const n = Math.min(bs, ns - b * bs);
      const lo = b * bs * seqlen * h;
      const out = await this.runner.run(layer, this.floatHidden.subarray(lo, lo + n * seqlen * h), n, seqlen, { weights, recipe: { linears: {} } });
      this.floatHidden.set(out.output, lo);
    }
    this.layer = layer + 1;
    return this.floatHidden;
  }

  private ropeFor = (seq: number): RopeTables | undefined => {
    if (this.model.config.rope === undefined) return undefined;
    let t = this.ropes.get(seq);
    if (t === undefined) {
      t = ropeTables(inverseFrequencies(this.model.config), seq);
      this.ropes.set(seq, t);
    }
    return t;
  };

  /**
   * Reconstructs block `layer` from the pipeline's calibrated state, whose entries are replaced in place;
   * returns the block's (new) attention recipe.
   */
  async reconstruct(layer: number, hidden: Float32Array, state: BlockState, attention: AttentionRecipe | undefined,
    progress: Progress, tag: string): Promise<{ attention: AttentionRecipe | undefined; report: ReconstructionReport }> {
    const t0 = performance.now();
    const c = this.model.config;
    const teacher = await this.advance(layer, state.weights);
    const linears = {} as Record<LinearRole, StudentLinear>;
    const names = new Map<LinearRole, string>();
    const rotations: Partial<Record<SiteName, Rotation>> = {};
    const quantizers = {} as Record<SiteName, ActivationQuantizer>;
    for (const role of BLOCK_LINEAR_ROLES) {
      const ln = linearByRole(state.names, role);
      const stored = ln === undefined ? undefined : state.layerLinears.get(ln.weight);
      const recipe = state.recipeLinears[role];
      const float = state.weights.linears[role];
      if (ln === undefined || stored === undefined || recipe === undefined || float === undefined) {
        throw new BwqError(`layer ${layer}: ${role} was not quantized, nothing to reconstruct`, { file: this.model.dir });
      }
      names.set(role, ln.weight);
      const q = stored.q;
      const site = SITE_OF_ROLE[role];
      quantizers[site] = recipe.quantizer;
      let target = float;
      if (recipe.rotation !== undefined) {
        const r1 = state.extra.get(recipe.rotation.r1);
        const r2 = state.extra.get(recipe.rotation.r2);
        if (r1 === undefined || r2 === undefined) throw new Error(`layer ${layer}: rotation tensors of ${role} missing`);
        const r3 = recipe.rotation.r3 === undefined ? undefined : state.extra.get(recipe.rotation.r3);
        if (recipe.rotation.r3 !== undefined && r3 === undefined) throw new Error(`layer ${layer}: rotation tensor ${recipe.rotation.r3} of ${role} missing`);
        const rot: Rotation = { r1: r1.data, a: r1.shape[0]!, r2: r2.data, b: r2.shape[0]!, ...(r3 === undefined ? {} : { r3: r3.data, r: r3.shape[0]! }) };
        rotations[site] = rot;
        target = await rotationForward(float, q.rows, rot, this.gemm);
      }
      linears[role] = {
        rows: q.rows, cols: q.cols, target, signs: unpackSignRows(q.qweight, q.rows, q.cols), scales: q.scales,
        rank: q.rank, lrA: q.lrA, lrB: q.lrB, bias: state.weights.biases[role],
      };
    }
    const student = createStudent({
      dims: {
        hidden: c.hiddenSize, intermediate: c.intermediateSize, numHeads: c.numHeads, numKvHeads: c.numKvHeads,
        headDim: c.headDim, normEps: c.normEps, slidingWindow: c.slidingWindow,
      },
      ropeFor: this.ropeFor, inputNorm: state.weights.inputNorm.weight, postNorm: state.weights.postAttentionNorm.weight,
      qNorm: state.weights.qNorm, kNorm: state.weights.kNorm,
      linears, quantizers, attention, rotations,
    }, { levels: this.options.levels, align: this.options.align, ...(this.actQuant === undefined ? {} : { actQuant: this.actQuant }) });
    const o = this.options;
    progress.start(`${tag}: reconstructing (${o.iterations} steps)`);
    const every = Math.max(1, Math.floor(o.iterations / 50));
    const report = await reconstructBlock(student, {
      inputs: hidden, targets: teacher, windows: this.ns, seq: this.seqlen, hidden: c.hiddenSize,
    }, {
      iterations: o.iterations, batch: Math.min(o.batch, this.ns), lrWeight: o.lrWeight, lrScale: o.lrScale, lrAct: o.lrAct,
      finalFraction: o.finalFraction, handover: o.handover, evalWindows: o.evalWindows, seed: this.seed + 7919 * layer,
    }, this.gemm, (step, loss) => {
      if ((step + 1) % every === 0) progress.update(step + 1, o.iterations, `loss ${loss.toExponential(3)}`);
    }, this.deviceSteps(progress, tag));
    // write the frozen block back into the pipeline's state
    const frozen = freezeStudent(student);
    for (const role of BLOCK_LINEAR_ROLES) {
      const f = frozen.linears[role];
      const name = names.get(role)!;
      const entry = state.layerLinears.get(name)!;
      entry.q = { ...entry.q, simulated: f.simulated, qweight: packSignRows(f.signs, entry.q.rows, entry.q.cols), scales: f.scales, lrA: f.lrA, lrB: f.lrB, rank: f.rank };
      state.newLinears[role] = f.simulated;
      const prev = state.recipeLinears[role]!;
      state.recipeLinears[role] = prev.rotation === undefined
        ? { quantizer: frozen.quantizers[SITE_OF_ROLE[role]] }
        : { rotation: prev.rotation, quantizer: frozen.quantizers[SITE_OF_ROLE[role]] };
    }
    const seconds = (performance.now() - t0) / 1000;
    progress.succeed(`${tag}: reconstruction MSE ${report.lossBefore.toExponential(3)} → ${report.lossAfter.toExponential(3)}${report.kept ? '' : ' (kept the calibrated block)'} in ${seconds.toFixed(1)} s`);
    const described: Record<string, string> = {};
    for (const [site, q] of Object.entries(frozen.quantizers)) described[site] = describeQuantizer(q);
    if (frozen.attention !== undefined) for (const operand of ATTENTION_OPERANDS) described[operand] = describeQuantizer(frozen.attention[operand]);
    return { attention: frozen.attention, report: { ...report, seconds, quantizers: described } };
  }

  /**
   * The engine's device stepper (src/runtime/device-recon.ts), falling back to the host stepper with a notice when
   * the device cannot hold the block's student (its memory) — slower, same result within float32 rounding.
   */
  private deviceSteps(progress: Progress, tag: string): StepperFactory | undefined {
    const device = this.runner.reconstructionSteps;
    if (device === undefined) return undefined;
    return async (block, rates, batch, seq) => {
      try {
        return await device(block, rates, batch, seq);
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        if (!/out of device memory/.test(message)) throw error;
        progress.info(`${tag}: ${message}; the reconstruction steps run on the host`);
        return hostStepper(block, rates, this.gemm);
      }
    };
  }

  async close(): Promise<void> {
    await this.gemm.close();
  }
}

