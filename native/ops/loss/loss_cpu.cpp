// Next-token negative log-likelihood per row: nll = max + log sum_v exp(l_v - max) - l_target, the exps in
// float32 (exp_f32, within 2 ulp), their sum and the rest in double.
#include <math.h>

#include <vector>

#include "../ops_cpu.h"

namespace bwq {
namespace cpu {

void nll_rows(const float *logits, int rows, int vocab, const int32_t *targets, double *nll) {
  parallel_rows(rows, 4, [&](int r0, int r1) {
    std::vector<float> e;
    for (int r = r0; r < r1; ++r) {
      const float *l = logits + (size_t)r * vocab;
      double max = -INFINITY;
      for (int v = 0; v < vocab; ++v) max = l[v] > max ? l[v] : max;
      e.resize(vocab);
      for (int v = 0; v < vocab; ++v) e[v] = l[v] - (float)max;  // exact: max is one of the l[v]
      exp_f32(e.data(), e.data(), vocab);
      double sum = 0;
      for (int v = 0; v < vocab; ++v) sum += e[v];
      nll[r] = max + log(sum) - (double)l[targets[r]];
    }
  });
}

}  // namespace cpu
}  // namespace bwq
