// The OKT of BWLA on the CPU backend (docs/ALGORITHMS.md §OKT): src/quant/okt.ts learnOkt step for step, as
// okt.cu does on CUDA, with the stacked weights D [n, a, b] and the activation rows X [T, a, b] in host memory.
//
// Every row's a x b matrix stays in its natural layout. A step on factor f keeps P_n = D_n R2 (f = 0, the R1
// step) or P_n = R1^T D_n (f = 1, the R2 step) for all rows, then
//   M  = sum_n P_n C_n^T (f = 0) or P_n^T C_n (f = 1)   (C = the targets T, or the activation pieces LY and G)
//   Y' = Q^T P_n (f = 0) or P_n Q (f = 1)               (the candidate for the new factor Q = polar(M))
// Per row these are small products of the float GEMM's one-thread kernels (linear_cpu.cpp panel_gemm*); rows go
// to the CPU kernels' thread pool in chunks whose size depends only on the row count, so the result does not
// depend on the number of threads.
//
// Precision (as okt.cu): data and products float32; each row's M_n in float32, summed over rows in double; the
// targets' alpha, row sums (|y| or its smoothed form, y^4, max y^2), the objective, the token weights and M in
// double; the polar factor in double (okt_host.cpp). The objective's sums over rows run in row order as okt.ts.
#include <math.h>
#include <stdlib.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../ops_cpu.h"
#include "okt.h"
#include "okt_em.h"

namespace bwq {
namespace cpu {

namespace {

constexpr int kMaxChunks = 64;  // row chunks of a pass (each has its own double M)

// s log cosh(y/s) (|y| for s = 0) without overflow (okt.ts smoothAbs)
inline double smooth_abs(double y, double s) {
  const double v = fabs(y);
  if (s <= 0) return v;
  return v + s * (log1p(exp(-2 * v / s)) - 0.69314718055994530942);
}

// dst [q, p] = src [p, q]^T
inline void transpose(const float *src, int p, int q, float *dst) {
  for (int i = 0; i < p; ++i)
    for (int j = 0; j < q; ++j) dst[(size_t)j * p + i] = src[(size_t)i * q + j];
}

// One stack of rows (weights or activations).
struct Stack {
  int n = 0;
  // [n, a, b]: the data, the step's P, the current and the candidate rotated rows (CpuOkt owns them)
  float *d = nullptr, *p = nullptr, *y = nullptr, *yc = nullptr;
  std::vector<double> ra, rb, rac, rbc;  // row sums of y and of yc (weights: h; activations: sum y^4, max y^2)
};

class CpuOkt {
 public:
  explicit CpuOkt(const bwq_okt_problem &p) : p_(p), K_(p.k), a_(p.a), b_(p.b) {}
  ~CpuOkt() {
    for (float *q : owned_) free(q);
  }

  // "" on success, else why not (host memory)
  std::string run(bwq_okt_result &r) {
    lambda_ = p_.tokens > 0 && p_.activations ? p_.activation_weight : 0;
    if (!setup()) {
      const size_t rows = (size_t)w_.n + (lambda_ > 0 ? p_.tokens : 0);
      return "OKT: out of host memory for " + std::to_string(rows) + " rows of " + std::to_string(K_) +
             " values (about " + std::to_string(rows * (size_t)K_ * 16 / 1048576) + " MiB)";
    }
    r1_.assign(p_.r1_init, p_.r1_init + (size_t)a_ * a_);
    r2_.assign(p_.r2_init, p_.r2_init + (size_t)b_ * b_);
    initial_rotation(w_);
    if (act_) initial_rotation(x_);

    const double weight_before = weight_objective(0, false);
    const double tail_before = act_ ? tail(false) : NAN;
    std::vector<double> history;
    const auto exact = bwq_okt::run_stages(p_, beta_, history, [this](double sigma) { return objective(sigma, false); },
                                           [this](int f, double sigma, double j) { return factor_step(f, sigma, j); });
    std::copy(r1_.begin(), r1_.end(), r.r1);
    std::copy(r2_.begin(), r2_.end(), r.r2);
    r.history_len = (int)history.size();
    std::copy(history.begin(), history.end(), r.history);
    r.iterations = exact.first;
    r.converged = exact.second ? 1 : 0;
    r.weight_error_before = weight_before;
    r.weight_error_after = weight_objective(0, false);
    r.tail_before = tail_before;
    r.tail_after = act_ ? tail(false) : NAN;
    return "";
  }

 private:
  // ---- setup: stack (each matrix times 1/rms), energy, row rms, token weights
  bool setup() {
    int n = 0;
    for (int i = 0; i < p_.n_weights; ++i) n += p_.rows[i];
    w_.n = n;
    act_ = lambda_ > 0;
    if (!alloc_stack(w_, n) || (act_ && !alloc_stack(x_, p_.tokens))) return false;
    size_t off = 0;
    for (int i = 0; i < p_.n_weights; ++i) {
      const size_t count = (size_t)p_.rows[i] * K_;
      const float *src = p_.weights[i];
      double ss = 0;
      for (size_t e = 0; e < count; ++e) ss += (double)src[e] * src[e];
      const double s = ss > 0 ? 1 / sqrt(ss / (double)count) : 1;
      for (size_t e = 0; e < count; ++e) w_.d[off + e] = (float)(src[e] * s);
      off += count;
    }
    energy_ = 0;
    row_rms_.assign(n, 0.0);
    for (int r = 0; r < n; ++r) {
      double ss = 0;
      const float *row = &w_.d[(size_t)r * K_];
      for (int k = 0; k < K_; ++k) ss += (double)row[k] * row[k];
      energy_ += ss;
      row_rms_[r] = sqrt(ss / K_);
    }
    if (act_) {
      std::copy(p_.activations, p_.activations + (size_t)p_.tokens * K_, x_.d);
      // c_t = K / (3 T' ||x_t||^4), T' = rows with ||x_t|| > 0
      token_weight_.assign(p_.tokens, 0.0);
      int counted = 0;
      for (int t = 0; t < p_.tokens; ++t) {
        double ss = 0;
        const float *row = &x_.d[(size_t)t * K_];
        for (int k = 0; k < K_; ++k) ss += (double)row[k] * row[k];
        if (ss > 0) {
          token_weight_[t] = 1 / (ss * ss);
          counted++;
        }
      }
      for (int t = 0; t < p_.tokens; ++t) token_weight_[t] = token_weight_[t] * K_ / (3.0 * std::max(counted, 1));
    }
    return true;
  }

  float *take(size_t count) {
    float *q = (float *)malloc(count * sizeof(float));
    if (q) owned_.push_back(q);
    return q;
  }
  // the four row arrays (every element is written before it is read)
  bool alloc_stack(Stack &s, int n) {
    const size_t count = (size_t)n * K_;
    s.n = n;
    if (!(s.d = take(count)) || !(s.p = take(count)) || !(s.y = take(count)) || !(s.yc = take(count))) return false;
    s.ra.assign(n, 0.0);
    s.rb.assign(n, 0.0);
    s.rac.assign(n, 0.0);
    s.rbc.assign(n, 0.0);
    return true;
  }

  // ---- chunks of rows on the thread pool
  static int chunk_rows(int n) { return std::max(1, (n + kMaxChunks - 1) / kMaxChunks); }
  static int chunks(int n) { return (n + chunk_rows(n) - 1) / chunk_rows(n); }
  template <class F>
  static void over_rows(int n, F fn) {  // fn(chunk, r0, r1)
    const int step = chunk_rows(n), count = chunks(n);
    parallel_for(count, [&](int c) { fn(c, c * step, std::min(n, (c + 1) * step)); });
  }

  // ---- row sums and objectives
  // weights: h_n = sum smooth_abs(y, sigma rms_n) of the current (candidate = false) or candidate rows
  void weight_rows(double sigma, bool candidate) {
    const float *y = candidate ? w_.yc : w_.y;
    std::vector<double> &h = candidate ? w_.rac : w_.ra;
    over_rows(w_.n, [&](int, int r0, int r1) {
      for (int r = r0; r < r1; ++r) {
        const float *row = &y[(size_t)r * K_];
        const double s = sigma * row_rms_[r];
        double acc = 0;
        if (s > 0)
          for (int k = 0; k < K_; ++k) acc += smooth_abs(row[k], s);
        else
          for (int k = 0; k < K_; ++k) acc += fabs((double)row[k]);
        h[r] = acc;
      }
    });
  }
  // activations: sum y^4 and max y^2 of each row
  void activation_rows(bool candidate) {
    const float *y = candidate ? x_.yc : x_.y;
    std::vector<double> &s4 = candidate ? x_.rac : x_.ra, &mx = candidate ? x_.rbc : x_.rb;
    over_rows(x_.n, [&](int, int r0, int r1) {
      for (int r = r0; r < r1; ++r) {
        const float *row = &y[(size_t)r * K_];
        double acc = 0, m = 0;
        for (int k = 0; k < K_; ++k) {
          const double v2 = (double)row[k] * row[k];
          acc += v2 * v2;
          m = std::max(m, v2);
        }
        s4[r] = acc;
        mx[r] = m;
      }
    });
  }
  // ε_w (|y| smoothed with sigma); fills the row sums h
  double weight_objective(double sigma, bool candidate) {
    weight_rows(sigma, candidate);
    const std::vector<double> &h = candidate ? w_.rac : w_.ra;
    double acc = 0;
    for (int r = 0; r < w_.n; ++r) acc += h[r] * h[r];
    return energy_ > 0 ? 1 - acc / (K_ * energy_) : 0;
  }
  // κ_x; fills the activation row sums
  double tail(bool candidate) {
    activation_rows(candidate);
    const std::vector<double> &s4 = candidate ? x_.rac : x_.ra;
    double acc = 0;
    for (int t = 0; t < x_.n; ++t) acc += token_weight_[t] * s4[t];
    return acc;
  }
  double objective(double sigma, bool candidate) {
    const double jw = weight_objective(sigma, candidate);
    return act_ ? jw + lambda_ * tail(candidate) : jw;
  }

  // ---- products
  // s.p = D_n R2 (f = 0) or R1^T D_n (f = 1) with the current factors
  void left_product(Stack &s, int f) {
    std::vector<float> l;
    if (f == 0) {
      l.assign(r2_.begin(), r2_.end());  // R2 [b, b]
    } else {
      l.resize((size_t)a_ * a_);  // R1^T
      for (int i = 0; i < a_; ++i)
        for (int j = 0; j < a_; ++j) l[(size_t)j * a_ + i] = (float)r1_[(size_t)i * a_ + j];
    }
    over_rows(s.n, [&](int, int r0, int r1) {
      for (int r = r0; r < r1; ++r) {
        const float *d = &s.d[(size_t)r * K_];
        float *q = &s.p[(size_t)r * K_];
        if (f == 0) panel_gemm_nn(d, a_, b_, l.data(), b_, b_, b_, q, b_, false);
        else panel_gemm_nn(l.data(), a_, a_, d, b_, b_, a_, q, b_, false);
      }
    });
  }
  // s.yc = Q^T P_n (f = 0) or P_n Q (f = 1) for the factor q (size x size, double)
  void candidate(Stack &s, int f, const std::vector<double> &q) {
    const int size = f == 0 ? a_ : b_;
    std::vector<float> l((size_t)size * size);
    for (int i = 0; i < size; ++i)
      for (int j = 0; j < size; ++j)
        l[f == 0 ? (size_t)j * size + i : (size_t)i * size + j] = (float)q[(size_t)i * size + j];
    over_rows(s.n, [&](int, int r0, int r1) {
      for (int r = r0; r < r1; ++r) {
        const float *pr = &s.p[(size_t)r * K_];
        float *y = &s.yc[(size_t)r * K_];
        if (f == 0) panel_gemm_nn(l.data(), a_, a_, pr, b_, b_, a_, y, b_, false);
        else panel_gemm_nn(pr, a_, b_, l.data(), b_, b_, b_, y, b_, false);
      }
    });
  }

  // The majoriser coefficients of one stack: out[c] = sum_n P_n C_n^T (f = 0) or P_n^T C_n (f = 1) for each piece
  // c of the current rows, the pieces written per row by piece(r, c, dst) ([a, b] natural). Rows' products in
  // float32, summed in double (per chunk, then the chunks in order).
  template <class Piece>
  void coefficients(Stack &s, int f, int npieces, Piece piece, std::vector<double> *out) {
    const int size = f == 0 ? a_ : b_;
    const size_t n2 = (size_t)size * size;
    const int count = chunks(s.n);
    std::vector<double> part((size_t)count * npieces * n2, 0.0);
    over_rows(s.n, [&](int c, int r0, int r1) {
      std::vector<float> ct(K_), pt(K_), tt(K_), prod(n2);
      for (int r = r0; r < r1; ++r) {
        const float *pr = &s.p[(size_t)r * K_];
        if (f == 1) transpose(pr, a_, b_, pt.data());
        for (int k = 0; k < npieces; ++k) {
          piece(r, k, ct.data());
          if (f == 0) {
            panel_gemm(pr, a_, b_, ct.data(), b_, a_, b_, prod.data(), a_, false);
          } else {
            transpose(ct.data(), a_, b_, tt.data());
            panel_gemm(pt.data(), b_, a_, tt.data(), a_, b_, a_, prod.data(), b_, false);
          }
          double *acc = &part[((size_t)c * npieces + k) * n2];
          for (size_t e = 0; e < n2; ++e) acc[e] += prod[e];
        }
      }
    });
    for (int k = 0; k < npieces; ++k) {
      out[k].assign(n2, 0.0);
      for (int c = 0; c < count; ++c) {
        const double *acc = &part[((size_t)c * npieces + k) * n2];
        for (size_t e = 0; e < n2; ++e) out[k][e] += acc[e];
      }
    }
  }
  void initial_rotation(Stack &s) {
    left_product(s, 1);  // R1^T D_n
    candidate(s, 1, r2_);
    accept(s);
  }
  static void accept(Stack &s) {
    std::swap(s.y, s.yc);
    std::swap(s.ra, s.rac);
    std::swap(s.rb, s.rbc);
  }

  // One block step on factor f (0: R1, 1: R2) (okt.ts factorStep); returns the (possibly unchanged) objective.
  // The current rows' sums (w_.ra = h, x_.rb = max y^2) are those of the stage's sigma.
  double factor_step(int f, double sigma, double current) {
    const int size = f == 0 ? a_ : b_;
    std::vector<double> &rf = f == 0 ? r1_ : r2_;
    left_product(w_, f);
    std::vector<double> mw;
    coefficients(w_, f, 1, [&](int r, int, float *t) {
      const float *y = &w_.y[(size_t)r * K_];
      const double alpha = w_.ra[r] / K_, s = sigma * row_rms_[r];
      for (int k = 0; k < K_; ++k) {
        const double v = y[k];
        t[k] = (float)(s > 0 ? alpha * tanh(v / s) : v >= 0 ? alpha : -alpha);
      }
    }, &mw);
    const double scale_w = energy_ > 0 ? 2 / energy_ : 0;
    if (!act_) {
      std::vector<double> m(mw.size()), q(mw.size());
      for (size_t i = 0; i < m.size(); ++i) m[i] = mw[i] * scale_w;
      bwq_okt::polar(m.data(), size, q.data());
      candidate(w_, f, q);
      const double value = objective(sigma, true);
      accept(w_);
      rf = q;
      return value;
    }
    left_product(x_, f);
    std::vector<double> mx[2];  // LY, G
    coefficients(x_, f, 2, [&](int r, int piece, float *out) {
      const float *y = &x_.y[(size_t)r * K_];
      const double c = token_weight_[r], mr = x_.rb[r];
      if (piece == 0)
        for (int k = 0; k < K_; ++k) out[k] = (float)(12 * c * mr * (double)y[k]);
      else
        for (int k = 0; k < K_; ++k) {
          const double v = y[k];
          out[k] = (float)(4 * c * v * v * v);
        }
    }, mx);
    return bwq_okt::backoff(beta_[f], size, mw, mx[0], mx[1], scale_w, lambda_, current, [&](const std::vector<double> &cand) {
      candidate(w_, f, cand);
      candidate(x_, f, cand);
      return objective(sigma, true);
    }, [&](const std::vector<double> &cand) {
      accept(w_);
      accept(x_);
      rf = cand;
    });
  }

  const bwq_okt_problem &p_;
  const int K_, a_, b_;
  double lambda_ = 0, energy_ = 0;
  bool act_ = false;
  double beta_[2] = {1, 1};
  Stack w_, x_;
  std::vector<double> row_rms_, token_weight_, r1_, r2_;
  std::vector<float *> owned_;
};

}  // namespace

std::string learn_okt(const bwq_okt_problem &p, bwq_okt_result &r) {
  const std::string bad = bwq_okt::check(p);
  if (!bad.empty()) return bad;
  if (!r.r1 || !r.r2 || !r.history) return "OKT: no result buffers";
  CpuOkt okt(p);
  return okt.run(r);
}

}  // namespace cpu
}  // namespace bwq
