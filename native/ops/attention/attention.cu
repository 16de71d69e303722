// Attention over the KV cache (src/native/attention.ts; backend.h AttentionShape / KvLayer):
//   kv_store:  per (token, kv head) row of head_dim: k_hat = fl(s*code) with the key quantizer (k_codes int8 and
//              k_scales when it has integer codes), v_hat likewise with the value quantizer; NONE copies.
//   attention: per (sequence b, head h, query i), i_pos = pos0 + i, kv head g = h / (n_heads / n_kv), keys
//              j in [lo, i_pos], lo = max(0, i_pos - window + 1) with a sliding window, else 0:
//     q: the query quantizer on the row q[b*t+i, h*hd .. +hd]
//     score_j = fl((s_q*scaling) * s_k[j] * (code_q . code_k[j]))   in double, when q and k have int codes
//             = fl(fl(q_hat . k_hat[j]) * scaling)                  else (float32 dot, FMA chain per lane;
//                                                                          the product with scaling in double)
//     P_j     = fl(exp(score_j - max) * (1 / sum_j exp(score_j - max)))   (exp, sum, 1/sum in double)
//     P_hat   = the probs quantizer over the query's unmasked keys [lo, i_pos] (probs_unmasked), else over the
//               whole row of length L = max(probs_len, pos0 + t) (masked entries and positions >= pos0 + t are
//               zeros; recipes before issue #16)
//     ctx[d]  = sum_j P_hat_j v_hat[j, d]                           (float32; zero P_hat skipped)
// Float prefill (float query, probabilities neither quantized nor returned, t >= 16) runs the tiled kernel below
// (flash_prefill_kernel: online softmax, float exp); integer-score prefill (query and key with integer codes,
// probabilities unquantized or int / ternary over the unmasked keys, t >= 16) the tiled quant_prefill_kernel (row
// statistics in passes over the key tiles). Everything else, decoding among it, runs the row kernel: one
// block per query row (grid-stride; 1024 threads when there are few rows, as in decoding, else 256); the row's
// scores sit in dynamic shared memory, or in a global scratch [gridDim.x, S] (S = pos0 + t) when S floats
// exceed the shared-memory limit. Each warp scores 4 keys at a time; the P.V pass splits the keys over
// blockDim / (head_dim / 4) groups of threads (one thread per 4 consecutive d, float4 loads; one thread per d
// when head_dim is not a multiple of 4) and adds the groups' partial sums in order.
#include "../ops_cuda.cuh"

namespace bwq_ops {
namespace {

constexpr int ATT_MAX_THREADS = 1024, ATT_UNROLL = 4;

__global__ void __launch_bounds__(128) kv_store_kernel(const float *__restrict__ k, const float *__restrict__ v,
                                                       int t, int pos0_host, const int32_t *pos0_dev, int n_kv, int hd, int max_t, Quantizer key,
                                                       Quantizer value, bool key_codes, float *__restrict__ k_hat,
                                                       float *__restrict__ v_hat, int8_t *__restrict__ k_codes,
                                                       float *__restrict__ k_scales) {
  const int row = blockIdx.x;  // (b * t + i) * n_kv + g
  const int g = row % n_kv, bi = row / n_kv, i = bi % t, b = bi / t;
  const int pos0 = pos0_dev ? *pos0_dev : pos0_host;
  const size_t src = (size_t)row * hd;
  const size_t cell = ((size_t)b * max_t + pos0 + i) * n_kv + g;
  const float *kr = k + src, *vr = v + src;
  const RowQuant rk = block_row_quant(key, hd, 0, hd, [&](int d) { return kr[d]; });
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    const int c = quant_code(key, rk, kr[d]);
    k_hat[cell * hd + d] = quant_hat(key, rk, kr[d], c);
    if (key_codes) k_codes[cell * hd + d] = (int8_t)c;
  }
  if (key_codes && threadIdx.x == 0) k_scales[cell] = rk.s;
  const RowQuant rv = block_row_quant(value, hd, 0, hd, [&](int d) { return vr[d]; });
  for (int d = threadIdx.x; d < hd; d += blockDim.x)
    v_hat[cell * hd + d] = quant_hat(value, rv, vr[d], quant_code(value, rv, vr[d]));
}

struct AttnArgs {
  const float *q;
  float *ctx;
  const float *k_hat, *v_hat;
  const int8_t *k_codes;
  const float *k_scales;
  int t, pos0, n_heads, n_kv, hd, window, max_t, S, L, rows;  // S keys (the layout's capacity), L probs row length
  const int32_t *pos0_dev;  // when set: pos0 read here, S and L = pos0 + t (a replayable step)
  float *probs_out;         // when set: P before the probs quantizer, [batch, heads, t, L]
  double scaling;
  Quantizer qq, pq;
  bool pq_unmasked;  // the probs quantizer's statistics over [lo, hi) only
  bool int_scores;
  float *gscores;  // [gridDim.x, S] or null (scores in shared memory)
};

// Dynamic shared memory: [scores S floats, unless global] [q_hat hd floats] [q codes hd bytes, padded to 16]
// [partial sums blockDim float4].
__global__ void __launch_bounds__(ATT_MAX_THREADS) attention_kernel(AttnArgs A) {
  extern __shared__ float4 dyn4[];
  float *dyn = reinterpret_cast<float *>(dyn4);
  const int hd = A.hd, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
  float *sc = A.gscores ? A.gscores + (size_t)blockIdx.x * A.S : dyn;
  float *q_hat = A.gscores ? dyn : dyn + (A.S + 3) / 4 * 4;
  int8_t *q_code = reinterpret_cast<int8_t *>(q_hat + (hd + 3) / 4 * 4);
  float *part = reinterpret_cast<float *>(q_code + (hd + 15) / 16 * 16);
  const int group = A.n_heads / A.n_kv;
  const int pos0 = A.pos0_dev ? *A.pos0_dev : A.pos0, L = A.pos0_dev ? pos0 + A.t : A.L;
  for (int row = blockIdx.x; row < A.rows; row += gridDim.x) {
    const int i = row % A.t, bh = row / A.t, h = bh % A.n_heads, b = bh / A.n_heads, g = h / group;
    const int ipos = pos0 + i, hi = ipos + 1;
    const int lo = A.window > 0 && ipos - A.window + 1 > 0 ? ipos - A.window + 1 : 0;
    const size_t qoff = ((size_t)(b * A.t + i) * A.n_heads + h) * hd;
    const size_t kv0 = (size_t)b * A.max_t * A.n_kv + g;  // cell of key j: kv0 + j * n_kv
    // query row: quantizer, codes and q_hat
    const float *qr = A.q + qoff;
    const RowQuant rq = block_row_quant(A.qq, hd, 0, hd, [&](int d) { return qr[d]; });
    for (int d = tid; d < hd; d += blockDim.x) {
      const int c = quant_code(A.qq, rq, qr[d]);
      q_hat[d] = quant_hat(A.qq, rq, qr[d], c);
      q_code[d] = (int8_t)c;
    }
    __syncthreads();
    // scores: each warp ATT_UNROLL keys at a time (lanes over d, then a butterfly sum per key)
    const double sqs = __dmul_rn((double)rq.s, A.scaling);
    const size_t kstride = (size_t)A.n_kv * hd;  // elements from key j to key j + 1
    for (int j0 = lo + warp * ATT_UNROLL; j0 < hi; j0 += nwarps * ATT_UNROLL) {
      const int nu = hi - j0 < ATT_UNROLL ? hi - j0 : ATT_UNROLL;
      if (A.int_scores) {
        const int8_t *kc = A.k_codes + (kv0 + (size_t)j0 * A.n_kv) * hd;
        int acc[ATT_UNROLL] = {};
        if ((hd & 3) == 0) {
          const int *qw = reinterpret_cast<const int *>(q_code);
          for (int w = lane; w < hd / 4; w += 32) {
#pragma unroll
            for (int u = 0; u < ATT_UNROLL; ++u)
              if (u < nu) acc[u] = __dp4a(reinterpret_cast<const int *>(kc + u * kstride)[w], qw[w], acc[u]);
          }
        } else {
          for (int d = lane; d < hd; d += 32) {
#pragma unroll
            for (int u = 0; u < ATT_UNROLL; ++u)
              if (u < nu) acc[u] += (int)kc[u * kstride + d] * (int)q_code[d];
          }
        }
#pragma unroll
        for (int u = 0; u < ATT_UNROLL; ++u) {
          const int dot = warp_sum(acc[u]);
          if (lane == 0 && u < nu)
            sc[j0 + u] = __double2float_rn(
                __dmul_rn(__dmul_rn(sqs, (double)A.k_scales[kv0 + (size_t)(j0 + u) * A.n_kv]), (double)dot));
        }
      } else {
        const float *kh = A.k_hat + (kv0 + (size_t)j0 * A.n_kv) * hd;
        float acc[ATT_UNROLL] = {};
        for (int d = lane; d < hd; d += 32) {
          const float qv = q_hat[d];
#pragma unroll
          for (int u = 0; u < ATT_UNROLL; ++u)
            if (u < nu) acc[u] = fmaf(qv, kh[u * kstride + d], acc[u]);
        }
#pragma unroll
        for (int u = 0; u < ATT_UNROLL; ++u) {
          const float dot = warp_sum(acc[u]);
          if (lane == 0 && u < nu) sc[j0 + u] = __double2float_rn(__dmul_rn((double)dot, A.scaling));
        }
      }
    }
    __syncthreads();
    // softmax over [lo, hi) in double
    float mx = -INFINITY;
    for (int j = lo + tid; j < hi; j += blockDim.x) mx = fmaxf(mx, sc[j]);
    mx = block_max(mx);
    double sum = 0;
    for (int j = lo + tid; j < hi; j += blockDim.x) sum += exp((double)sc[j] - (double)mx);
    sum = block_sum(sum);
    const double inv = __ddiv_rn(1.0, sum);
    for (int j = lo + tid; j < hi; j += blockDim.x)
      sc[j] = __double2float_rn(__dmul_rn(exp((double)sc[j] - (double)mx), inv));
    __syncthreads();
    if (A.probs_out) {  // P before the probs quantizer, zeros outside [lo, hi)
      float *pr = A.probs_out + ((size_t)bh * A.t + i) * L;
      for (int j = tid; j < L; j += blockDim.x) pr[j] = j >= lo && j < hi ? sc[j] : 0.0f;
    }
    // probs quantizer over the unmasked keys [lo, hi), or over the row of length L (zeros outside [lo, hi))
    const RowQuant rp = block_row_quant(A.pq, A.pq_unmasked ? hi - lo : L, lo, hi, [&](int j) { return sc[j]; });
    if (A.pq.kind != QKind::NONE) {
      for (int j = lo + tid; j < hi; j += blockDim.x) sc[j] = quant_hat(A.pq, rp, sc[j], quant_code(A.pq, rp, sc[j]));
      __syncthreads();
    }
    // ctx = P_hat V_hat: G groups of threads over keys, threads of a group over d
    float *out = A.ctx + qoff;
    if ((hd & 3) == 0 && hd / 4 <= (int)blockDim.x) {  // float4 over d: 4x the loads in flight of the scalar form
      const int h4 = hd / 4, G = blockDim.x / h4, gi = tid / h4, d4 = tid - gi * h4;
      float4 *part4 = reinterpret_cast<float4 *>(part);
      if (gi < G) {
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        const float4 *vh = reinterpret_cast<const float4 *>(A.v_hat + kv0 * hd) + d4;
        const size_t ks4 = kstride / 4;
#pragma unroll 4
        for (int j = lo + gi; j < hi; j += G) {
          const float p = sc[j];
          const float4 v = vh[(size_t)j * ks4];
          if (p != 0.0f) {
            acc.x = fmaf(p, v.x, acc.x);
            acc.y = fmaf(p, v.y, acc.y);
            acc.z = fmaf(p, v.z, acc.z);
            acc.w = fmaf(p, v.w, acc.w);
          }
        }
        part4[tid] = acc;
      }
      __syncthreads();
      if (tid < h4) {
        float4 s = part4[tid];
        for (int k = 1; k < G; ++k) {
          const float4 o = part4[k * h4 + tid];
          s.x = __fadd_rn(s.x, o.x), s.y = __fadd_rn(s.y, o.y), s.z = __fadd_rn(s.z, o.z), s.w = __fadd_rn(s.w, o.w);
        }
        reinterpret_cast<float4 *>(out)[tid] = s;
      }
    } else if (hd <= (int)blockDim.x) {
      const int G = blockDim.x / hd, gi = tid / hd, d = tid - gi * hd;
      if (gi < G) {
        float acc = 0.0f;
        const float *vh = A.v_hat + kv0 * hd + d;
#pragma unroll 8
        for (int j = lo + gi; j < hi; j += G) {
          const float p = sc[j], v = vh[(size_t)j * kstride];  // loads independent of acc: in flight together
          acc = p != 0.0f ? fmaf(p, v, acc) : acc;
        }
        part[tid] = acc;
      }
      __syncthreads();
      if (tid < hd) {
        float s = part[tid];
        for (int k = 1; k < G; ++k) s = __fadd_rn(s, part[k * hd + tid]);
        out[tid] = s;
      }
    } else {
      for (int d = tid; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        const float *vh = A.v_hat + kv0 * hd + d;
        for (int j = lo; j < hi; ++j) {
          const float p = sc[j];
          if (p != 0.0f) acc = fmaf(p, vh[(size_t)j * kstride], acc);
        }
        out[d] = acc;
      }
    }
    __syncthreads();  // shared memory is reused by the next row
  }
}

// ---- float prefill: query tiles against key tiles (the llm.c / flash-attention layout, on the FP32 cores)
// For rows whose operands are float (query quantizer NONE, no integer scores), probabilities not quantized and not
// returned: a block takes FA_BQ = 64 queries of one (b, h) and walks the key tiles [lo of its first query, its
// last query], FA_BK = 64 keys at a time, K and V staged in shared memory once per tile for all 64 queries (the
// row kernel above reads each key once per query). Per tile: S = (Q K^T) * scaling (FMA chain over d per score),
// masked to [lo, i_pos]; the online softmax m' = max(m, max_j S), l' = l e^(m - m') + sum_j e^(S_j - m'),
// O' = O e^(m - m') + e^(S - m') V; ctx = O / l at the end. The same sums as the row kernel, in another order and
// with float exp (within the ops check's 3e-5). 256 threads as 16 x 16: thread (ty, tx) owns query rows
// ty + 16 r (r < 4), the scores of keys tx + 16 c (c < 4), and the context columns 4 (tx + 16 u) .. + 3.
constexpr int FA_BQ = 64, FA_BK = 64, FA_THREADS = 256, FA_PAD = 4;

struct FlashArgs {
  const float *q;
  float *ctx;
  const float *k_hat, *v_hat;
  int t, pos0, n_heads, n_kv, max_t, window, q_tiles, bh;  // bh = batch * n_heads
  double scaling;
};

template <int HD>
size_t flash_smem() {  // Q [BQ][HD + PAD], K [BK][HD + PAD], V [BK][HD], P [BQ][BK + PAD]
  return sizeof(float) * ((size_t)FA_BQ * (HD + FA_PAD) + (size_t)FA_BK * (HD + FA_PAD) + (size_t)FA_BK * HD +
                          (size_t)FA_BQ * (FA_BK + FA_PAD));
}

// o[r][u] += P[row ty + 16r, keys of the tile] V[those keys, float4 column tx + 16u] over the tile's FA_BK keys, in
// ascending key order (P in shared memory with row stride FA_BK + FA_PAD, V [FA_BK][HD]); SKIP_ZERO skips the zero
// probabilities (a quantized P row is mostly zeros). Shared by both tiled prefill kernels.
template <int HD, bool SKIP_ZERO>
__device__ __forceinline__ void tile_pv(const float *Ps, const float *Vs, int tx, int ty, float4 (&o)[4][HD / 64]) {
  constexpr int PS = FA_BK + FA_PAD, U = HD / 64;
#pragma unroll 2
  for (int k = 0; k < FA_BK; k += 4) {
    float4 pr[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) pr[r] = *reinterpret_cast<const float4 *>(Ps + (ty + 16 * r) * PS + k);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const float4 v = *reinterpret_cast<const float4 *>(Vs + (k + kk) * HD + 4 * (tx + 16 * u));
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const float pv = kk == 0 ? pr[r].x : kk == 1 ? pr[r].y : kk == 2 ? pr[r].z : pr[r].w;
          if (SKIP_ZERO && pv == 0.0f) continue;
          o[r][u].x = fmaf(pv, v.x, o[r][u].x);
          o[r][u].y = fmaf(pv, v.y, o[r][u].y);
          o[r][u].z = fmaf(pv, v.z, o[r][u].z);
          o[r][u].w = fmaf(pv, v.w, o[r][u].w);
        }
      }
  }
}

template <int HD>
__global__ void __launch_bounds__(FA_THREADS) flash_prefill_kernel(FlashArgs A) {
  constexpr int QS = HD + FA_PAD, PS = FA_BK + FA_PAD, D4 = HD / 4, U = HD / 64;  // U float4 columns per thread
  extern __shared__ float4 dyn4[];
  float *Qs = reinterpret_cast<float *>(dyn4), *Ks = Qs + FA_BQ * QS, *Vs = Ks + FA_BK * QS, *Ps = Vs + FA_BK * HD;
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  // the longest query tiles first (causal work grows with the tile's position)
  const int bh = blockIdx.x % A.bh, qt = A.q_tiles - 1 - blockIdx.x / A.bh;
  const int h = bh % A.n_heads, b = bh / A.n_heads, g = h / (A.n_heads / A.n_kv);
  const int i0 = qt * FA_BQ, S = A.pos0 + A.t;
  const size_t kstride = (size_t)A.n_kv * HD, kv0 = ((size_t)b * A.max_t * A.n_kv + g) * HD;
  // Q tile (rows past t are zeros; their outputs are not written)
  for (int e = tid; e < FA_BQ * D4; e += FA_THREADS) {
    const int r = e / D4, d4 = e - r * D4, i = i0 + r;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (i < A.t) v = reinterpret_cast<const float4 *>(A.q + ((size_t)(b * A.t + i) * A.n_heads + h) * HD)[d4];
    *reinterpret_cast<float4 *>(Qs + r * QS + 4 * d4) = v;
  }
  int ipos[4], lo[4];
  float m[4], l[4];
  float4 o[4][U];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    ipos[r] = A.pos0 + i0 + ty + 16 * r;
    lo[r] = A.window > 0 && ipos[r] - A.window + 1 > 0 ? ipos[r] - A.window + 1 : 0;
    m[r] = -INFINITY, l[r] = 0.f;
#pragma unroll
    for (int u = 0; u < U; ++u) o[r][u] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
  const int first = A.pos0 + i0, last = min(A.pos0 + i0 + FA_BQ - 1, S - 1);
  const int k_begin = (A.window > 0 && first - A.window + 1 > 0 ? first - A.window + 1 : 0) / FA_BK * FA_BK;
  for (int j0 = k_begin; j0 <= last; j0 += FA_BK) {
    __syncthreads();  // the previous tile's K, V, P are consumed (and the Q tile is stored, first time round)
    for (int e = tid; e < FA_BK * D4; e += FA_THREADS) {
      const int r = e / D4, d4 = e - r * D4, j = j0 + r;
      float4 kv = make_float4(0.f, 0.f, 0.f, 0.f), vv = kv;
      if (j < S) {
        kv = reinterpret_cast<const float4 *>(A.k_hat + kv0 + (size_t)j * kstride)[d4];
        vv = reinterpret_cast<const float4 *>(A.v_hat + kv0 + (size_t)j * kstride)[d4];
      }
      *reinterpret_cast<float4 *>(Ks + r * QS + 4 * d4) = kv;
      *reinterpret_cast<float4 *>(Vs + r * HD + 4 * d4) = vv;
    }
    __syncthreads();
    float s[4][4] = {};
#pragma unroll 4
    for (int d = 0; d < HD; d += 4) {
      float4 qv[4], kk[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) qv[r] = *reinterpret_cast<const float4 *>(Qs + (ty + 16 * r) * QS + d);
#pragma unroll
      for (int c = 0; c < 4; ++c) kk[c] = *reinterpret_cast<const float4 *>(Ks + (tx + 16 * c) * QS + d);
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          float a = s[r][c];
          a = fmaf(qv[r].x, kk[c].x, a);
          a = fmaf(qv[r].y, kk[c].y, a);
          a = fmaf(qv[r].z, kk[c].z, a);
          s[r][c] = fmaf(qv[r].w, kk[c].w, a);
        }
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int j = j0 + tx + 16 * c;
        s[r][c] = j >= lo[r] && j <= ipos[r] && j < S ? __double2float_rn(__dmul_rn((double)s[r][c], A.scaling)) : -INFINITY;
        mx = fmaxf(mx, s[r][c]);
      }
#pragma unroll
      for (int w = 1; w < 16; w <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, w));
      const float mn = fmaxf(m[r], mx);
      // a row with no key yet (sliding window, or a row past t) keeps m = -inf, l = 0 and O = 0
      const float corr = mn == -INFINITY ? 1.f : expf(m[r] - mn);
      float sum = 0.f, p[4];
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        p[c] = s[r][c] == -INFINITY ? 0.f : expf(s[r][c] - mn);
        sum += p[c];
      }
#pragma unroll
      for (int w = 1; w < 16; w <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, w);
      m[r] = mn;
      l[r] = fmaf(l[r], corr, sum);
#pragma unroll
      for (int u = 0; u < U; ++u) o[r][u].x *= corr, o[r][u].y *= corr, o[r][u].z *= corr, o[r][u].w *= corr;
#pragma unroll
      for (int c = 0; c < 4; ++c) Ps[(ty + 16 * r) * PS + tx + 16 * c] = p[c];
    }
    __syncthreads();
    tile_pv<HD, false>(Ps, Vs, tx, ty, o);
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int i = i0 + ty + 16 * r;
    if (i >= A.t) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
    float4 *out = reinterpret_cast<float4 *>(A.ctx + ((size_t)(b * A.t + i) * A.n_heads + h) * HD);
#pragma unroll
    for (int u = 0; u < U; ++u)
      out[tx + 16 * u] = make_float4(o[r][u].x * inv, o[r][u].y * inv, o[r][u].z * inv, o[r][u].w * inv);
  }
}

// The prefill kernel takes the call: float operands, probabilities neither quantized nor returned, positions on
// the host, head_dim 64 or 128, and enough query rows to fill a tile's worth of work (decoding stays on the row
// kernel).
bool flash_prefill_fits(const bwq::rt::KvLayer &kv, const bwq::rt::AttentionShape &s, const bwq::rt::AttentionRecipe &r) {
  return s.t >= 16 && !kv.device_pos0 && !s.probs_out && r.query.kind == QKind::NONE && r.probs.kind == QKind::NONE &&
         (s.head_dim == 64 || s.head_dim == 128) && s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0;
}

template <int HD>
cudaError_t flash_prefill(const float *q, const bwq::rt::KvLayer &kv, const bwq::rt::AttentionShape &s, float *ctx,
                          int max_smem, cudaStream_t st) {
  const size_t smem = flash_smem<HD>();
  if (smem > (size_t)max_smem) return cudaErrorInvalidConfiguration;
  const cudaError_t e = cudaFuncSetAttribute(flash_prefill_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e != cudaSuccess) return e;
  FlashArgs A;
  A.q = q, A.ctx = ctx, A.k_hat = kv.k_hat, A.v_hat = kv.v_hat;
  A.t = s.t, A.pos0 = s.pos0, A.n_heads = s.n_heads, A.n_kv = s.n_kv_heads, A.max_t = kv.max_t;
  A.window = s.sliding_window;
  A.q_tiles = (s.t + FA_BQ - 1) / FA_BQ;
  A.bh = s.batch * s.n_heads;
  A.scaling = s.scaling;
  flash_prefill_kernel<HD><<<(unsigned)A.q_tiles * A.bh, FA_THREADS, smem, st>>>(A);
  return cudaGetLastError();
}

// ---- integer-score prefill: query tiles against key tiles for integer codes (BWTA's ternary / int8 Q and K), the
// probabilities unquantized or quantized over each query's unmasked keys (probs_unmasked), none returned. The row
// kernel's arithmetic per score and probability, the row statistics in passes over the key tiles (scores recomputed
// from the staged codes each time, dp4a): 1. the row max; 2. sum_j exp(score_j - max) in double, inv = 1 / sum;
// 3. (quantized probabilities) P_j = fl(exp(score_j - max) * inv) again and the quantizer's statistic: sum |P| for
// ternary (delta = fl(param * fl(fl(sum) / n)), n = the unmasked keys), max P for int (s); 4. the codes, P_hat V
// (int: fl(code * s) V; ternary: code V, times s = fl(fl(kept) / count) at the end). The sums run in another order
// than the row kernel's (a probability may differ in its last bit and, rarely, flip a code: the ops check's 1 % of
// rows). Query rows are quantized by one warp each (the row kernel's formulas with warp reductions).
constexpr int QP_WORDS_PAD = 1;  // int32 words of padding per staged code row (odd row stride: no bank conflicts)

struct QuantPrefillArgs {
  const float *q;
  float *ctx;
  const float *v_hat;
  const int8_t *k_codes;
  const float *k_scales;
  int t, pos0, n_heads, n_kv, max_t, window, q_tiles, bh;
  double scaling;
  Quantizer qq, pq;
};

template <int HD>
size_t quant_prefill_smem() {  // Q codes, K codes [64][HD/4 + pad] int32; V [64][HD]; P [64][68]; sqs [64] double, k scales [64]
  constexpr int W = HD / 4 + QP_WORDS_PAD;
  return 4 * (2 * (size_t)FA_BQ * W + (size_t)FA_BK * HD + (size_t)FA_BQ * (FA_BK + FA_PAD)) + 8 * FA_BQ + 4 * FA_BK;
}

// RowQuant of a row held by one warp (x[j] = get(j), j < n, lane-strided): block_row_quant's formulas.
template <class Get>
__device__ RowQuant warp_row_quant(const Quantizer &q, int n, Get get) {
  RowQuant r{1.0f, 0.0f};
  const int lane = threadIdx.x & 31;
  if (q.kind == QKind::INT) {
    float m = 0.0f;
    for (int j = lane; j < n; j += 32) m = fmaxf(m, fabsf(get(j)));
    r.s = int_row_scale(q, warp_max(m));
  } else if (q.kind == QKind::TERNARY || q.kind == QKind::BINARY) {
    double sum = 0;
    for (int j = lane; j < n; j += 32) sum += (double)fabsf(get(j));
    const float mean = mean_abs(warp_sum(sum), n);
    if (q.kind == QKind::BINARY) {
      r.s = mean;
    } else {
      r.delta = __fmul_rn(q.param, mean);
      double kept = 0;
      int count = 0;
      for (int j = lane; j < n; j += 32) {
        const float a = fabsf(get(j));
        if (a > r.delta) kept += (double)a, ++count;
      }
      r.s = kept_scale(warp_sum(kept), warp_sum(count));
    }
  }
  return r;
}

template <int HD>
__global__ void __launch_bounds__(FA_THREADS) quant_prefill_kernel(QuantPrefillArgs A) {
  constexpr int W = HD / 4 + QP_WORDS_PAD, PS = FA_BK + FA_PAD, U = HD / 64;
  extern __shared__ float4 dyn4[];
  int32_t *Qw = reinterpret_cast<int32_t *>(dyn4), *Kw = Qw + FA_BQ * W;
  float *Vs = reinterpret_cast<float *>(Kw + FA_BK * W), *Ps = Vs + FA_BK * HD;
  double *sqs = reinterpret_cast<double *>(Ps + FA_BQ * PS);
  float *ks = reinterpret_cast<float *>(sqs + FA_BQ);
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4, lane = tid & 31, warp = tid >> 5;
  const int bh = blockIdx.x % A.bh, qt = A.q_tiles - 1 - blockIdx.x / A.bh;
  const int h = bh % A.n_heads, b = bh / A.n_heads, g = h / (A.n_heads / A.n_kv);
  const int i0 = qt * FA_BQ, S = A.pos0 + A.t;
  const size_t cell0 = (size_t)b * A.max_t * A.n_kv + g;  // cell of key j: cell0 + j * n_kv
  // the query tile's codes and sqs = fl64(s_q * scaling), one warp per row (rows past t: zeros)
  for (int r = warp; r < FA_BQ; r += FA_THREADS / 32) {
    const int i = i0 + r;
    int8_t *qc = reinterpret_cast<int8_t *>(Qw + r * W);
    if (i < A.t) {
      const float *qr = A.q + ((size_t)(b * A.t + i) * A.n_heads + h) * HD;
      const RowQuant rq = warp_row_quant(A.qq, HD, [&](int d) { return qr[d]; });
      for (int d = lane; d < HD; d += 32) qc[d] = (int8_t)quant_code(A.qq, rq, qr[d]);
      if (lane == 0) sqs[r] = __dmul_rn((double)rq.s, A.scaling);
    } else {
      for (int d = lane; d < HD; d += 32) qc[d] = 0;
      if (lane == 0) sqs[r] = 0;
    }
  }
  int ipos[4], lo[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    ipos[r] = A.pos0 + i0 + ty + 16 * r;
    lo[r] = A.window > 0 && ipos[r] - A.window + 1 > 0 ? ipos[r] - A.window + 1 : 0;
  }
  const int first = A.pos0 + i0, last = min(A.pos0 + i0 + FA_BQ - 1, S - 1);
  const int k_begin = (A.window > 0 && first - A.window + 1 > 0 ? first - A.window + 1 : 0) / FA_BK * FA_BK;
  const bool quantized = A.pq.kind != QKind::NONE;
  float mx[4], stat_s[4], delta[4];
  double inv[4], stat[4], kept[4];
  int count[4];
  float4 o[4][U];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    mx[r] = -INFINITY, inv[r] = 0, stat[r] = 0, kept[r] = 0, count[r] = 0, stat_s[r] = 1.0f, delta[r] = 0.0f;
#pragma unroll
    for (int u = 0; u < U; ++u) o[r][u] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
  for (int pass = 1; pass <= 4; ++pass) {
    if (pass == 3 && !quantized) continue;
    for (int j0 = k_begin; j0 <= last; j0 += FA_BK) {
      __syncthreads();  // the previous tile is consumed (and the query tile stored, first time round)
      for (int e = tid; e < FA_BK * (HD / 4); e += FA_THREADS) {  // K codes, one int32 word (4 codes) each
        const int r = e / (HD / 4), w = e - r * (HD / 4), j = j0 + r;
        Kw[r * W + w] = j < S ? reinterpret_cast<const int32_t *>(A.k_codes + (cell0 + (size_t)j * A.n_kv) * HD)[w] : 0;
      }
      if (tid < FA_BK) ks[tid] = j0 + tid < S ? A.k_scales[cell0 + (size_t)(j0 + tid) * A.n_kv] : 0.0f;
      if (pass == 4) {
        for (int e = tid; e < FA_BK * (HD / 4); e += FA_THREADS) {
          const int r = e / (HD / 4), d4 = e - r * (HD / 4), j = j0 + r;
          float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
          if (j < S) v = reinterpret_cast<const float4 *>(A.v_hat + (cell0 + (size_t)j * A.n_kv) * HD)[d4];
          *reinterpret_cast<float4 *>(Vs + r * HD + 4 * d4) = v;
        }
      }
      __syncthreads();
      int acc[4][4] = {};
#pragma unroll 4
      for (int w = 0; w < HD / 4; ++w) {
        int qv[4], kv[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) qv[r] = Qw[(ty + 16 * r) * W + w];
#pragma unroll
        for (int c = 0; c < 4; ++c) kv[c] = Kw[(tx + 16 * c) * W + w];
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
          for (int c = 0; c < 4; ++c) acc[r][c] = __dp4a(qv[r], kv[c], acc[r][c]);
      }
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const double sq = sqs[ty + 16 * r];
        float sc[4];
        bool in[4];
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int j = j0 + tx + 16 * c;
          in[c] = j >= lo[r] && j <= ipos[r] && j < S;
          sc[c] = in[c] ? __double2float_rn(__dmul_rn(__dmul_rn(sq, (double)ks[tx + 16 * c]), (double)acc[r][c])) : 0.0f;
        }
        if (pass == 1) {
#pragma unroll
          for (int c = 0; c < 4; ++c)
            if (in[c]) mx[r] = fmaxf(mx[r], sc[c]);
          continue;
        }
        if (pass == 2) {
#pragma unroll
          for (int c = 0; c < 4; ++c)
            if (in[c]) stat[r] += exp((double)sc[c] - (double)mx[r]);
          continue;
        }
        float p[4];
#pragma unroll
        for (int c = 0; c < 4; ++c) p[c] = in[c] ? __double2float_rn(__dmul_rn(exp((double)sc[c] - (double)mx[r]), inv[r])) : 0.0f;
        if (pass == 3) {
#pragma unroll
          for (int c = 0; c < 4; ++c)
            if (in[c]) {
              if (A.pq.kind == QKind::INT) stat_s[r] = fmaxf(stat_s[r], p[c]);
              else stat[r] += (double)p[c];
            }
          continue;
        }
        // pass 4: the codes (ternary: code; int: fl(code * s); none: P) into P's tile
        RowQuant rp{stat_s[r], delta[r]};
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          float val = p[c];
          if (quantized && in[c]) {
            const int code = quant_code(A.pq, rp, p[c]);
            if (A.pq.kind == QKind::TERNARY) {
              if (fabsf(p[c]) > delta[r]) kept[r] += (double)fabsf(p[c]), ++count[r];
              val = (float)code;
            } else {
              val = quant_hat(A.pq, rp, p[c], code);
            }
          }
          Ps[(ty + 16 * r) * PS + tx + 16 * c] = in[c] ? val : 0.0f;
        }
      }
      if (pass == 4) {
        __syncthreads();
        tile_pv<HD, true>(Ps, Vs, tx, ty, o);
      }
    }
    // the row statistics of the pass, reduced over the 16 threads of each row
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      for (int w = 1; w < 16; w <<= 1) {
        if (pass == 1) mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], w));
        if (pass == 2 || (pass == 3 && A.pq.kind != QKind::INT)) stat[r] += __shfl_xor_sync(0xffffffffu, stat[r], w);
        if (pass == 3 && A.pq.kind == QKind::INT) stat_s[r] = fmaxf(stat_s[r], __shfl_xor_sync(0xffffffffu, stat_s[r], w));
        if (pass == 4) {
          kept[r] += __shfl_xor_sync(0xffffffffu, kept[r], w);
          count[r] += __shfl_xor_sync(0xffffffffu, count[r], w);
        }
      }
      if (pass == 2) {
        inv[r] = stat[r] > 0 ? __ddiv_rn(1.0, stat[r]) : 0.0;
        stat[r] = 0;
        stat_s[r] = A.pq.kind == QKind::INT ? 0.0f : 1.0f;  // int: the running max of P starts at 0
      }
      if (pass == 3) {
        const int n = ipos[r] + 1 - lo[r];
        if (A.pq.kind == QKind::INT) stat_s[r] = int_row_scale(A.pq, stat_s[r]);
        else delta[r] = __fmul_rn(A.pq.param, mean_abs(stat[r], n > 0 ? n : 1));
      }
    }
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int i = i0 + ty + 16 * r;
    if (i >= A.t) continue;
    const float scale = A.pq.kind == QKind::TERNARY ? kept_scale(kept[r], count[r]) : 1.0f;
    float4 *out = reinterpret_cast<float4 *>(A.ctx + ((size_t)(b * A.t + i) * A.n_heads + h) * HD);
#pragma unroll
    for (int u = 0; u < U; ++u)
      out[tx + 16 * u] = A.pq.kind == QKind::TERNARY
                             ? make_float4(__fmul_rn(scale, o[r][u].x), __fmul_rn(scale, o[r][u].y),
                                           __fmul_rn(scale, o[r][u].z), __fmul_rn(scale, o[r][u].w))
                             : o[r][u];
  }
}

// Integer scores (query and key with integer codes, the codes and scales in the cache), probabilities unquantized
// or int / ternary over the unmasked keys, none returned, positions on the host, head_dim 64 or 128, t >= 16.
bool quant_prefill_fits(const bwq::rt::KvLayer &kv, const bwq::rt::AttentionShape &s, const bwq::rt::AttentionRecipe &r) {
  const bool probs_ok = r.probs.kind == QKind::NONE ||
                        (r.probs_unmasked && (r.probs.kind == QKind::TERNARY || r.probs.kind == QKind::INT));
  return s.t >= 16 && !kv.device_pos0 && !s.probs_out && has_int_codes(r.query) && has_int_codes(r.key) &&
         kv.k_codes && kv.k_scales && probs_ok && (s.head_dim == 64 || s.head_dim == 128) && s.n_kv_heads > 0 &&
         s.n_heads % s.n_kv_heads == 0;
}

template <int HD>
cudaError_t quant_prefill(const float *q, const bwq::rt::KvLayer &kv, const bwq::rt::AttentionShape &s,
                          const bwq::rt::AttentionRecipe &rc, float *ctx, int max_smem, cudaStream_t st) {
  const size_t smem = quant_prefill_smem<HD>();
  if (smem > (size_t)max_smem) return cudaErrorInvalidConfiguration;
  const cudaError_t e = cudaFuncSetAttribute(quant_prefill_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e != cudaSuccess) return e;
  QuantPrefillArgs A;
  A.q = q, A.ctx = ctx, A.v_hat = kv.v_hat, A.k_codes = kv.k_codes, A.k_scales = kv.k_scales;
  A.t = s.t, A.pos0 = s.pos0, A.n_heads = s.n_heads, A.n_kv = s.n_kv_heads, A.max_t = kv.max_t;
  A.window = s.sliding_window;
  A.q_tiles = (s.t + FA_BQ - 1) / FA_BQ;
  A.bh = s.batch * s.n_heads;
  A.scaling = s.scaling;
  A.qq = rc.query, A.pq = rc.probs;
  quant_prefill_kernel<HD><<<(unsigned)A.q_tiles * A.bh, FA_THREADS, smem, st>>>(A);
  return cudaGetLastError();
}

size_t fixed_smem(int hd, int threads) { return (size_t)(hd + 3) / 4 * 16 + (hd + 15) / 16 * 16 + threads * 16; }
// 1024 threads per row when the rows are too few to fill the device twice over (decoding), else 256.
int att_threads(const bwq::rt::AttentionShape &s, int num_sms) {
  return (size_t)s.batch * s.n_heads * s.t < 2 * (size_t)num_sms ? ATT_MAX_THREADS : 256;
}

}  // namespace

cudaError_t kv_store(const bwq::rt::KvLayer &kv, const float *k, const float *v, int batch, int t, int pos0,
                     const Quantizer &key, const Quantizer &value, cudaStream_t st) {
  const int rows = batch * t * kv.n_kv_heads;
  const bool key_codes = has_int_codes(key) && kv.k_codes && kv.k_scales;
  kv_store_kernel<<<rows, kv.head_dim >= 128 ? 128 : 64, 0, st>>>(k, v, t, pos0, kv.device_pos0, kv.n_kv_heads,
                                                                  kv.head_dim,
                                                                  kv.max_t, key, value, key_codes, kv.k_hat,
                                                                  kv.v_hat, kv.k_codes, kv.k_scales);
  return cudaGetLastError();
}

// Keys the launch is laid out for: pos0 + t, or the cache's max_t for a replayable step (position on the device).
size_t layout_keys(const bwq::rt::AttentionShape &shape, const bwq::rt::KvLayer &kv) {
  return kv.device_pos0 ? (size_t)kv.max_t : (size_t)shape.pos0 + shape.t;
}

size_t attention_scratch_floats(const bwq::rt::AttentionShape &shape, const bwq::rt::KvLayer &kv, int max_smem,
                                int num_sms) {
  const size_t S = layout_keys(shape, kv);
  // (1 KiB left for the static shared memory of the block reductions)
  if (S * 4 + 16 + fixed_smem(shape.head_dim, att_threads(shape, num_sms)) + 1024 <= (size_t)max_smem) return 0;
  const size_t rows = (size_t)shape.batch * shape.n_heads * shape.t;
  const size_t blocks = rows < (size_t)num_sms * 4 ? rows : (size_t)num_sms * 4;
  return blocks * S;
}

cudaError_t attention(const float *q, const bwq::rt::KvLayer &kv, const bwq::rt::AttentionShape &shape,
                      const bwq::rt::AttentionRecipe &r, float *ctx, float *scratch, int max_smem, int num_sms,
                      cudaStream_t st) {
  if (flash_prefill_fits(kv, shape, r) && flash_smem<128>() <= (size_t)max_smem)
    return shape.head_dim == 128 ? flash_prefill<128>(q, kv, shape, ctx, max_smem, st)
                                 : flash_prefill<64>(q, kv, shape, ctx, max_smem, st);
  if (quant_prefill_fits(kv, shape, r) && quant_prefill_smem<128>() <= (size_t)max_smem)
    return shape.head_dim == 128 ? quant_prefill<128>(q, kv, shape, r, ctx, max_smem, st)
                                 : quant_prefill<64>(q, kv, shape, r, ctx, max_smem, st);
  AttnArgs A;
  A.q = q;
  A.ctx = ctx;
  A.k_hat = kv.k_hat;
  A.v_hat = kv.v_hat;
  A.k_codes = kv.k_codes;
  A.k_scales = kv.k_scales;
  A.t = shape.t;
  A.pos0 = shape.pos0;
  A.n_heads = shape.n_heads;
  A.n_kv = shape.n_kv_heads;
  A.hd = shape.head_dim;
  A.window = shape.sliding_window;
  A.max_t = kv.max_t;
  A.S = (int)layout_keys(shape, kv);
  A.L = shape.probs_len > shape.pos0 + shape.t ? shape.probs_len : shape.pos0 + shape.t;
  A.pos0_dev = kv.device_pos0;
  A.probs_out = shape.probs_out;
  A.rows = shape.batch * shape.n_heads * shape.t;
  A.scaling = shape.scaling;
  A.qq = r.query;
  A.pq = r.probs;
  A.pq_unmasked = r.probs_unmasked;
  A.int_scores = has_int_codes(r.query) && has_int_codes(r.key) && kv.k_codes && kv.k_scales;
  const size_t scratch_floats = attention_scratch_floats(shape, kv, max_smem, num_sms);
  const int threads = att_threads(shape, num_sms);
  size_t smem = fixed_smem(A.hd, threads);
  int blocks = A.rows;
  if (scratch_floats) {
    A.gscores = scratch;
    blocks = (int)(scratch_floats / A.S);
  } else {
    A.gscores = nullptr;
    smem += (size_t)(A.S + 3) / 4 * 16;
  }
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  attention_kernel<<<blocks, threads, smem, st>>>(A);
  return cudaGetLastError();
}

}  // namespace bwq_ops
