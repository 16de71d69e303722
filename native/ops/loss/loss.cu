// Negative log-likelihood per row (src/native/transformer-ops.ts negativeLogLikelihood), in double:
//   mx = max_v logits[r, v],  nll[r] = (mx + log(sum_v exp(logits[r, v] - mx))) - logits[r, target[r]]
// One block per row; the sum's order differs from the CPU's (double rounding only).
#include "../ops_cuda.cuh"

namespace bwq_ops {
namespace {

__global__ void __launch_bounds__(256) nll_kernel(const float *__restrict__ logits, int vocab,
                                                  const int32_t *__restrict__ targets, double *__restrict__ nll) {
  const float *l = logits + (size_t)blockIdx.x * vocab;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) mx = fmaxf(mx, l[j]);
  mx = block_max(mx);
  double sum = 0;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) sum += exp((double)l[j] - (double)mx);
  sum = block_sum(sum);
  if (threadIdx.x == 0) nll[blockIdx.x] = ((double)mx + log(sum)) - (double)l[targets[blockIdx.x]];
}

}  // namespace

cudaError_t nll_rows(const float *logits, int rows, int vocab, const int32_t *targets, double *nll,
                     cudaStream_t st) {
  nll_kernel<<<rows, 256, 0, st>>>(logits, vocab, targets, nll);
  return cudaGetLastError();
}

}  // namespace bwq_ops
