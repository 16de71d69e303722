// The OKT of BWLA on the device (docs/ALGORITHMS.md §OKT): the EM of src/quant/okt.ts learnOkt in one call.
//  - okt_host.cpp (the addon and libbwq_cuda.so): the problem's checks and the Procrustes step's polar factor
//    R = U V^T of an n x n matrix by one-sided Jacobi in double (the port of src/linalg/svd.ts + procrustes.ts).
//  - okt.cu (libbwq_cuda.so): the loop with the stacked weights and activation rows resident on the device.
// C ABI: bwq.h (bwq_okt_problem, bwq_okt_result, bwq_okt_polar, bwq_cuda_okt). The runtime reaches it through
// Backend::learn_okt (native/runtime/model.h okt_on_device).
#ifndef BWQ_OPS_OKT_OKT_H
#define BWQ_OPS_OKT_OKT_H

#include <string>

#include "../../include/bwq.h"

namespace bwq_cuda {
struct CublasApi;
}

namespace bwq_okt {

// r [n, n] = U V^T for m [n, n] = U S V^T (row-major): svd.ts's sweeps, ordering and zero-column completion.
void polar(const double *m, int n, double *r);

// "" when the problem is well formed, else a one-line description of what is not.
std::string check(const bwq_okt_problem &p);

// okt.cu: runs the OKT on `stream` (a cudaStream_t) with cuBLAS `blas` whose `handle` is bound to that stream.
// Device memory lives for the call. "" on success, else a one-line message (result then undefined).
std::string run_on_stream(const bwq_okt_problem &p, bwq_okt_result &r, void *stream, const bwq_cuda::CublasApi &blas,
                          void *handle);

}  // namespace bwq_okt

#endif
