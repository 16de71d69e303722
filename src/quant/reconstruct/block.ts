/**
 * One Llama-style decoder block for the reconstruction, forward and backward, composed of the ops
 * of this folder:
 *
 *   x₁ = RMSNorm(h; w_in),  a = q_attn_in(R_attn_in(x₁))
 *   q, k, v = a Ŵ_qᵀ, a Ŵ_kᵀ, a Ŵ_vᵀ (+ fixed biases),  [q, k = headNorm(q; w_q), headNorm(k; w_k)],  RoPE(q), RoPE(k)
 *   c = attention(q, k, v) with the operand sites,  o = q_attn_out(R_attn_out(c)) Ŵ_oᵀ
 *   h₂ = h + o,  x₂ = RMSNorm(h₂; w_post),  m = q_mlp_in(R_mlp_in(x₂))
 *   u = silu(m Ŵ_gateᵀ) ⊙ (m Ŵ_upᵀ),  out = h₂ + q_mlp_out(R_mlp_out(u)) Ŵ_downᵀ
 *
 * (R_·: BWLA's fixed online rotations, absent for BWTA / RTN; q_·: the activation sites; headNorm: Qwen3's
 * q_norm / k_norm, per-head RMSNorm with fixed weights, present when the block has them.)
 */
import type { RopeTables } from '../../native/rope.js';
import type { LinearRole } from '../recipe.js';
import { attentionBackward, attentionForward, type AttentionCache, type AttentionSites } from './attention.js';
import type { BinaryLinear } from './binary-linear.js';
import { addInto, type Arr, type Gemm } from './gemm.js';
import { headNormBackward, headNormForward, type HeadNormCache } from './head-norm.js';
import type { QuantSite, SiteCache } from './quant-site.js';
import { rmsNormBackward, rmsNormForward } from './rmsnorm.js';
import { ropeBackward, ropeForward } from './rope.js';
import { rotationBackward, rotationForward, type Rotation } from './rotation.js';
import type { StagePoint } from './schedule.js';
import { swigluBackward, swigluForward } from './swiglu.js';

export type SiteName = 'attn_in' | 'attn_out' | 'mlp_in' | 'mlp_out';

export const SITE_ROLES: Readonly<Record<SiteName, readonly LinearRole[]>> = {
  attn_in: ['q_proj', 'k_proj', 'v_proj'],
  attn_out: ['o_proj'],
  mlp_in: ['gate_proj', 'up_proj'],
  mlp_out: ['down_proj'],
};

export interface BlockDims {
  hidden: number;
  intermediate: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  normEps: number;
  slidingWindow: number | undefined;
}

export interface BlockParams<T extends Arr> {
  linears: Record<LinearRole, BinaryLinear<T>>;
  inputNorm: Arr;
  postNorm: Arr;
  /** Qwen3's q_norm / k_norm weights [headDim] (fixed); both or neither */
  qNorm?: Arr | undefined;
  kNorm?: Arr | undefined;
  sites: Record<SiteName, QuantSite>;
  attention: AttentionSites | undefined;
  rotations: Partial<Record<SiteName, Rotation>>;
}

interface SiteStep<T extends Arr> {
  /** site input (after the rotation) */
  x: T;
  out: T;
  cache: SiteCache;
}

export interface BlockCache<T extends Arr> {
  batch: number;
  seq: number;
  h: T;
  x1inv: Float64Array;
  attnIn: SiteStep<T>;
  q: T;
  k: T;
  v: T;
  /** q / k norm caches (qk-norm blocks only) */
  qn: HeadNormCache<T> | undefined;
  kn: HeadNormCache<T> | undefined;
  att: AttentionCache<T>;
  attnOut: SiteStep<T>;
  h2: T;
  x2inv: Float64Array;
  mlpIn: SiteStep<T>;
  gate: T;
  up: T;
  mlpOut: SiteStep<T>;
}

export class ReconBlock<T extends Arr> {
  constructor(readonly dims: BlockDims, readonly params: BlockParams<T>, readonly ropeFor: (seq: number) => RopeTables | undefined) {}

  private async siteForward(name: SiteName, x: T, rows: number, cols: number, at: StagePoint, gemm: Gemm): Promise<SiteStep<T>> {
    const rot = this.params.rotations[name];
    const xr = rot === undefined ? x : await rotationForward(x, rows, rot, gemm);
    const r = this.params.sites[name].forward(xr, rows, cols, at);
    return { x: xr, out: r.out, cache: r.cache };
  }

  private async siteBackward(name: SiteName, step: SiteStep<T>, g: T, gemm: Gemm): Promise<T> {
    const dxr = this.params.sites[name].backward(step.x, g, step.cache);
    const rot = this.params.rotations[name];
    return rot === undefined ? dxr : rotationBackward(dxr, step.cache.rows, rot, gemm);
  }

  async forward(h: T, batch: number, seq: number, at: StagePoint, gemm: Gemm): Promise<{ out: T; cache: BlockCache<T> }> {
    const d = this.dims;
    const L = this.params.linears;
    const T = batch * seq;
    const H = d.hidden;
    const x1 = rmsNormForward(h, T, H, this.params.inputNorm, d.normEps);
    const attnIn = await this.siteForward('attn_in', x1.y, T, H, at, gemm);
    let q = await L.q_proj.forward(attnIn.out, T, gemm);
    let k = await L.k_proj.forward(attnIn.out, T, gemm);
    const v = await L.v_proj.forward(attnIn.out, T, gemm);
    let qn: HeadNormCache<T> | undefined;
    let kn: HeadNormCache<T> | undefined;
    const { qNorm, kNorm } = this.params;
    if (qNorm !== undefined) {
      const r = headNormForward(q, T, d.numHeads, d.headDim, qNorm, d.normEps);
      q = r.y;
      qn = r.cache;
    }
    if (kNorm !== undefined) {
      const r = headNormForward(k, T, d.numKvHeads, d.headDim, kNorm, d.normEps);
      k = r.y;
      kn = r.cache;
    }
    const rope = this.ropeFor(seq);
    if (rope !== undefined) {
      ropeForward(q, batch, seq, d.numHeads, d.headDim, rope);
      ropeForward(k, batch, seq, d.numKvHeads, d.headDim, rope);
    }
    const window = d.slidingWindow !== undefined && seq > d.slidingWindow ? d.slidingWindow : undefined;
    const att = await attentionForward(q, k, v, batch, {
      seq, numHeads: d.numHeads, numKvHeads: d.numKvHeads, headDim: d.headDim, slidingWindow: window,
    }, this.params.attention, at, gemm);
    const qd = d.numHeads * d.headDim;
    const attnOut = await this.siteForward('attn_out', att.ctx, T, qd, at, gemm);
    const o = await L.o_proj.forward(attnOut.out, T, gemm);
    const h2 = o;
    addInto(h2, h);
    const x2 = rmsNormForward(h2, T, H, this.params.postNorm, d.normEps);
    const mlpIn = await this.siteForward('mlp_in', x2.y, T, H, at, gemm);
    const gate = await L.gate_proj.forward(mlpIn.out, T, gemm);
    const up = await L.up_proj.forward(mlpIn.out, T, gemm);
    const mid = swigluForward(gate, up);
    const mlpOut = await this.siteForward('mlp_out', mid, T, d.intermediate, at, gemm);
    const out = await L.down_proj.forward(mlpOut.out, T, gemm);
    addInto(out, h2);
    return {
      out,
      cache: { batch, seq, h, x1inv: x1.inv, attnIn, q, k, v, qn, kn, att: att.cache, attnOut, h2, x2inv: x2.inv, mlpIn, gate, up, mlpOut },
    };
  }

  /** Accumulates every parameter gradient for ∂L/∂out; returns ∂L/∂h. */
  async backward(gOut: T, c: BlockCache<T>, gemm: Gemm): Promise<T> {
    const d = this.dims;
    const L = this.params.linears;
    const { batch, seq } = c;
    const T = batch * seq;
    const H = d.hidden;
    // MLP
    const gMlpOut = await L.down_proj.backward(c.mlpOut.out, gOut, T, gemm);
    const gMid = await this.siteBackward('mlp_out', c.mlpOut, gMlpOut, gemm);
    const { dGate, dUp } = swigluBackward(c.gate, c.up, gMid);
    const gm = await L.gate_proj.backward(c.mlpIn.out, dGate, T, gemm);
    addInto(gm, await L.up_proj.backward(c.mlpIn.out, dUp, T, gemm));
    const gx2 = await this.siteBackward('mlp_in', c.mlpIn, gm, gemm);
    const gh2 = rmsNormBackward(c.h2, gx2, T, H, this.params.postNorm, c.x2inv);
    addInto(gh2, gOut);
    // attention
    const gAttnOut = await L.o_proj.backward(c.attnOut.out, gh2, T, gemm);
    const gCtx = await this.siteBackward('attn_out', c.attnOut, gAttnOut, gemm);
    const window = d.slidingWindow !== undefined && seq > d.slidingWindow ? d.slidingWindow : undefined;
    const grads = await attentionBackward(gCtx, batch, {
      seq, numHeads: d.numHeads, numKvHeads: d.numKvHeads, headDim: d.headDim, slidingWindow: window,
    }, this.params.attention, c.att, gemm);
    let { dq, dk } = grads;
    const dv = grads.dv;
    const rope = this.ropeFor(seq);
    if (rope !== undefined) {
      ropeBackward(dq, batch, seq, d.numHeads, d.headDim, rope);
      ropeBackward(dk, batch, seq, d.numKvHeads, d.headDim, rope);
    }
    if (c.qn !== undefined) dq = headNormBackward(dq, T, d.numHeads, d.headDim, this.params.qNorm!, c.qn);
    if (c.kn !== undefined) dk = headNormBackward(dk, T, d.numKvHeads, d.headDim, this.params.kNorm!, c.kn);
    const ga = await L.q_proj.backward(c.attnIn.out, dq, T, gemm);
    addInto(ga, await L.k_proj.backward(c.attnIn.out, dk, T, gemm));
    addInto(ga, await L.v_proj.backward(c.attnIn.out, dv, T, gemm));
    const gx1 = await this.siteBackward('attn_in', c.attnIn, ga, gemm);
    const gh = rmsNormBackward(c.h, gx1, T, H, this.params.inputNorm, c.x1inv);
    addInto(gh, gh2);
    return gh;
  }

  /** Every learnable site (linear-input sites, then attention operands). */
  allSites(): QuantSite[] {
    const s = this.params.sites;
    const out = [s.attn_in, s.attn_out, s.mlp_in, s.mlp_out];
    const a = this.params.attention;
    if (a !== undefined) out.push(a.query, a.key, a.value, a.probs);
    return out;
  }
}
