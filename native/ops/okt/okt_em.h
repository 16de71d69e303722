// The control flow of BWLA's OKT EM (src/quant/okt.ts learnOkt), written once for the CPU (okt_cpu.cpp) and CUDA
// (okt.cu) backends; each backend supplies the objective, the factor step's products and its candidate / accept.
//  - run_stages: the smoothing stages σ of the problem (≤ anneal_iterations each), then the exact stage (σ = 0,
//    ≤ iterations, relative tolerance); returns the exact stage's {iterations, converged} (okt.ts runStage).
//  - backoff: the activation term's majorised step (okt.ts): β halved from the last accepted one (≥ 1/64), then
//    doubled until the objective does not rise (≤ 24 tries); no decreasing step keeps the current factor.
#ifndef BWQ_OPS_OKT_OKT_EM_H
#define BWQ_OPS_OKT_OKT_EM_H

#include <algorithm>
#include <utility>
#include <vector>

#include "../../include/bwq.h"
#include "okt.h"

namespace bwq_okt {

// objective(sigma) → J before a stage; step(f, sigma, J) → J after factor f's step. beta: the two factors' β.
template <class Objective, class Step>
std::pair<int, bool> run_stage(double beta[2], double tolerance, double sigma, int iterations, std::vector<double> &record,
                               Objective &objective, Step &step) {
  beta[0] = beta[1] = 1;
  double j = objective(sigma);
  record.push_back(j);
  for (int it = 0; it < iterations; ++it) {
    const double prev = j;
    j = step(0, sigma, j);
    j = step(1, sigma, j);
    record.push_back(j);
    if (prev - j <= tolerance * prev) return {it + 1, true};
  }
  return {iterations, false};
}

template <class Objective, class Step>
std::pair<int, bool> run_stages(const bwq_okt_problem &p, double beta[2], std::vector<double> &history, Objective objective, Step step) {
  for (int i = 0; i < p.n_anneal; ++i) {
    std::vector<double> stage;
    run_stage(beta, p.tolerance, p.anneal[i], p.anneal_iterations, stage, objective, step);
  }
  return run_stage(beta, p.tolerance, 0, p.iterations, history, objective, step);
}

// M = scale_w·M_w + λ(β·M_LY − M_G), q = polar(M); evaluate(q) → the candidate's objective, accept(q) keeps it.
template <class Evaluate, class Accept>
double backoff(double &beta, int size, const std::vector<double> &mw, const std::vector<double> &mly, const std::vector<double> &mg,
               double scale_w, double lambda, double current, Evaluate evaluate, Accept accept) {
  std::vector<double> m(mw.size()), q(mw.size());
  double bt = std::max(beta / 2, 1.0 / 64);
  for (int attempt = 0; attempt < 24; ++attempt, bt *= 2) {
    for (size_t i = 0; i < m.size(); ++i) m[i] = scale_w * mw[i] + lambda * (bt * mly[i] - mg[i]);
    polar(m.data(), size, q.data());
    const double value = evaluate(q);
    if (value <= current) {
      accept(q);
      beta = bt;
      return value;
    }
  }
  return current;  // no decreasing step found: stay
}

}  // namespace bwq_okt

#endif
