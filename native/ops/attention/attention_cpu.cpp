// Causal grouped-query attention over the KV cache, with the recipe's operand quantizers (backend.h):
//   kv_store:  per (token, kv head) row of head_dim: k_hat = q_key(k) (int8 codes + scale kept when the key
//              quantizer has integer codes), v_hat = q_value(v)
//   attention: per (sequence b, head h, query i at position pos = pos0 + i), kv head g = h / (nH / nKV):
//     q_hat = q_query(q row);  keys j in [lo, pos], lo = max(0, pos - window + 1) with a sliding window
//     score_j = fl((s_q * scaling) * s_k[j] * (code_q . code_k[j]))   both with integer codes (exact dot)
//             = fl(fl(q_hat . k_hat[j]) * scaling)                    otherwise (float32 dot)
//     p_j = e_j * fl(1 / sum e), e_j = exp(score_j - max) in float32 (sum in double); masked p = 0
//     p_hat = q_probs(p) over the unmasked keys [lo, pos] (rc.probs_unmasked), else over the whole row of length
//             L = max(probs_len, pos0 + t), masked zeros included (recipes before issue #16)
//     ctx = sum_j p_hat_j v_hat[j]
// Blocks of 64 query rows of one (b, h) run in parallel; Q.K^T and P.V are GEMMs over the block (linear_cpu.cpp).
#include <math.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "../ops_cpu.h"

namespace bwq {
namespace cpu {

namespace {
bool int8_codes(const Quantizer &q) {
  return q.kind == QKind::TERNARY || q.kind == QKind::BINARY || (q.kind == QKind::INT && q.bits <= 8);
}

// s * code as float32 into out (NONE: a copy of x); integer codes into codes when asked.
float quantize_head_row(const float *x, int n, const Quantizer &q, int32_t *codes, float *out) {
  if (q.kind == QKind::NONE) {
    memcpy(out, x, sizeof(float) * n);
    return 1.0f;
  }
  const float s = quantize_row(x, n, q, codes);
  for (int j = 0; j < n; ++j) out[j] = (float)codes[j] * s;
  return s;
}

BWQ_CLONES int32_t dot_i8(const int32_t *a, const int8_t *b, int n) {
  int32_t s = 0;
  for (int i = 0; i < n; ++i) s += a[i] * (int32_t)b[i];
  return s;
}

// x = fl(x * scaling) with the product in double (exact before the one rounding, as the reference).
BWQ_CLONES void scale_scores(float *x, size_t n, double scaling) {
  for (size_t i = 0; i < n; ++i) x[i] = (float)((double)x[i] * scaling);
}

// s[lo..hi] = softmax (e_j = exp_f32(s_j - max), p_j = e_j * fl(1 / sum e), sum in double), s = 0 elsewhere
// in [0, width). Lane-parallel max and sum so the loops vectorise (the sum's order is not the reference's).
BWQ_CLONES void softmax_row(float *s, int width, int lo, int hi, float *e) {
  const int n = hi - lo + 1;
  const float *x = s + lo;
  float lane_max[16];
  for (int l = 0; l < 16; ++l) lane_max[l] = -INFINITY;
  int j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; ++l) lane_max[l] = x[j + l] > lane_max[l] ? x[j + l] : lane_max[l];
  float max = -INFINITY;
  for (int l = 0; l < 16; ++l) max = lane_max[l] > max ? lane_max[l] : max;
  for (; j < n; ++j) max = x[j] > max ? x[j] : max;
  for (j = 0; j < n; ++j) e[j] = x[j] - max;
  exp_f32(e, e, n);
  double lane_sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (j = 0; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) lane_sum[l] += e[j + l];
  double sum = ((lane_sum[0] + lane_sum[4]) + (lane_sum[2] + lane_sum[6])) + ((lane_sum[1] + lane_sum[5]) + (lane_sum[3] + lane_sum[7]));
  for (; j < n; ++j) sum += e[j];
  const float inv = (float)(1.0 / sum);
  for (j = 0; j < lo; ++j) s[j] = 0;
  for (j = 0; j < n; ++j) s[lo + j] = e[j] * inv;
  for (j = hi + 1; j < width; ++j) s[j] = 0;
}

constexpr int kQueryBlock = 64;  // query rows per Q.K^T / P.V block
}  // namespace

void kv_store(KvLayer &kv, const float *k, const float *v, int batch, int t, int pos0, const Quantizer &key,
              const Quantizer &value) {
  const int hd = kv.head_dim, nkv = kv.n_kv_heads, width = nkv * hd;
  const bool codes = int8_codes(key);
  parallel_rows(batch * t, 8, [&](int r0, int r1) {
    std::vector<int32_t> c(hd);
    for (int r = r0; r < r1; ++r) {
      const int b = r / t, pos = pos0 + r % t;
      const size_t slot = (size_t)b * kv.max_t + pos;
      for (int g = 0; g < nkv; ++g) {
        const float *kr = k + (size_t)r * width + (size_t)g * hd;
        float *kd = kv.k_hat + slot * width + (size_t)g * hd;
        const float s = quantize_head_row(kr, hd, key, c.data(), kd);
        if (codes) {
          int8_t *kc = kv.k_codes + slot * width + (size_t)g * hd;
          for (int j = 0; j < hd; ++j) kc[j] = (int8_t)c[j];
          kv.k_scales[slot * nkv + g] = s;
        }
        quantize_head_row(v + (size_t)r * width + (size_t)g * hd, hd, value, c.data(),
                          kv.v_hat + slot * width + (size_t)g * hd);
      }
    }
  });
}

void attention(const float *q, const KvLayer &kv, const AttentionShape &sh, const AttentionRecipe &rc, float *ctx) {
  const int hd = sh.head_dim, nh = sh.n_heads, nkv = sh.n_kv_heads, group = nh / nkv;
  const int total = sh.probs_len > sh.pos0 + sh.t ? sh.probs_len : sh.pos0 + sh.t;  // probabilities row length
  const int kwidth = nkv * hd;
  const bool int_scores = int8_codes(rc.query) && int8_codes(rc.key) && kv.k_codes != nullptr;
  const int blocks = (sh.t + kQueryBlock - 1) / kQueryBlock;
  parallel_for(sh.batch * nh * blocks, [&](int task) {
    const int blk = task % blocks, bh = task / blocks, b = bh / nh, h = bh % nh, g = h / group;
    const int i0 = blk * kQueryBlock, qb = std::min(kQueryBlock, sh.t - i0);
    // keys any row of the block sees: [klo, khi]
    const int pos_first = sh.pos0 + i0, khi = pos_first + qb - 1;
    const int klo = sh.sliding_window > 0 ? std::max(0, pos_first - sh.sliding_window + 1) : 0;
    const int width = khi - klo + 1;
    thread_local std::vector<int32_t> qc, pc;
    thread_local std::vector<float> qh, scores, row, full;
    qc.resize(hd);
    pc.resize(total);
    qh.resize((size_t)qb * hd);
    scores.resize((size_t)qb * width);
    row.resize(width);
    const size_t seq_base = (size_t)b * kv.max_t;
    const float *kbase = kv.k_hat + (seq_base + klo) * kwidth + (size_t)g * hd;
    const float *vbase = kv.v_hat + (seq_base + klo) * kwidth + (size_t)g * hd;
    std::vector<float> sq(qb);
    for (int r = 0; r < qb; ++r) {
      const size_t qrow = ((size_t)b * sh.t + i0 + r) * nh + h;
      sq[r] = quantize_head_row(q + qrow * hd, hd, rc.query, qc.data(), qh.data() + (size_t)r * hd);
      if (int_scores) {
        const double sqs = (double)sq[r] * sh.scaling;
        const int8_t *kc = kv.k_codes + (seq_base + klo) * kwidth + (size_t)g * hd;
        const float *ks = kv.k_scales + (seq_base + klo) * nkv + g;
        const int last = pos_first + r - klo;
        for (int j = 0; j <= last; ++j)
          scores[(size_t)r * width + j] =
              (float)(sqs * (double)ks[(size_t)j * nkv] * (double)dot_i8(qc.data(), kc + (size_t)j * kwidth, hd));
      }
    }
    if (!int_scores) {  // scores = fl(fl(q_hat . k_hat) * scaling)
      panel_gemm(qh.data(), qb, hd, kbase, kwidth, width, hd, scores.data(), width, false);
      scale_scores(scores.data(), scores.size(), sh.scaling);
    }
    for (int r = 0; r < qb; ++r) {
      const int pos = pos_first + r;
      const int lo = (sh.sliding_window > 0 ? std::max(0, pos - sh.sliding_window + 1) : 0) - klo, hi = pos - klo;
      float *s = scores.data() + (size_t)r * width;
      softmax_row(s, width, lo, hi, row.data());
      if (sh.probs_out) {  // [batch, heads, t, total]: the probabilities before the probs quantizer
        float *pr = sh.probs_out + (((size_t)b * nh + h) * sh.t + i0 + r) * total;
        std::fill(pr, pr + total, 0.0f);
        memcpy(pr + klo, s, sizeof(float) * width);
      }
      if (rc.probs.kind != QKind::NONE && rc.probs_unmasked) {  // over the unmasked keys [lo, hi] alone
        const int n = hi - lo + 1;
        const float ps = quantize_row(s + lo, n, rc.probs, pc.data());
        for (int j = 0; j < n; ++j) s[lo + j] = (float)pc[j] * ps;
      } else if (rc.probs.kind != QKind::NONE) {  // over the whole row of length `total`, masked zeros included
        full.assign(total, 0.0f);
        memcpy(full.data() + klo, s, sizeof(float) * width);
        const float ps = quantize_row(full.data(), total, rc.probs, pc.data());
        for (int j = 0; j < width; ++j) s[j] = (float)pc[klo + j] * ps;
      }
    }
    float *out = ctx + (((size_t)b * sh.t + i0) * nh + h) * hd;
    panel_gemm_nn(scores.data(), qb, width, vbase, kwidth, hd, width, out, nh * hd, false);
  });
}

}  // namespace cpu
}  // namespace bwq
