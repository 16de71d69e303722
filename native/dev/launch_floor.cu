// Per-launch floor of back-to-back kernel launches on one stream, timed exactly like bwq_cuda_bench
// (10 warm-up launches, then 200 launches between two cudaEvents; mean per launch), and of the same 200
// launches captured into one CUDA graph (the bench's graph timing). Each grid is measured as a normal launch
// and (sm_90) as a programmatic dependent launch whose kernel lets the next one launch at once and then
// waits for its predecessor (griddepcontrol), as tb_gemv_pdl does. Context for the M = 1 GEMV numbers in
// docs/PERFORMANCE.md.  Built and run by native/test/gpu-run.sh.
#include <cuda_runtime.h>
#include <stdio.h>

__global__ void empty_kernel(const unsigned *a, const unsigned *b, const unsigned *c, int d, int e, int *o) {
  if (d == -12345 && threadIdx.x == 0) o[0] = a[0] + b[0] + c[0] + e;
}

__global__ void empty_pdl_kernel(const unsigned *a, const unsigned *b, const unsigned *c, int d, int e, int *o) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
  if (d == -12345 && threadIdx.x == 0) o[0] = a[0] + b[0] + c[0] + e;
}

template <class F>
void measure(cudaStream_t st, cudaEvent_t e0, cudaEvent_t e1, const char *what, F &&launch) {
  for (int i = 0; i < 10; ++i) launch();
  cudaEventRecord(e0, st);
  for (int i = 0; i < 200; ++i) launch();
  cudaEventRecord(e1, st);
  cudaEventSynchronize(e1);
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  printf("launch floor: %s: %.2f us per launch\n", what, ms * 1000 / 200);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal);
  for (int i = 0; i < 200; ++i) launch();
  cudaStreamEndCapture(st, &graph);
  cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphLaunch(exec, st);
  cudaEventRecord(e0, st);
  cudaGraphLaunch(exec, st);
  cudaEventRecord(e1, st);
  cudaEventSynchronize(e1);
  cudaEventElapsedTime(&ms, e0, e1);
  printf("launch floor: %s, CUDA graph: %.2f us per launch\n", what, ms * 1000 / 200);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

int main() {
  cudaStream_t st;
  cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
  int *o;
  cudaMalloc(&o, 4);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  const int grids[] = {1, 132, 512, 1376};
  for (int gi = 0; gi < 4; ++gi) {
    const int g = grids[gi];
    char what[96];
    snprintf(what, sizeof what, "empty kernel, %4d blocks x 256 threads", g);
    measure(st, e0, e1, what, [&] { empty_kernel<<<g, 256, 0, st>>>(nullptr, nullptr, nullptr, 0, 0, o); });
    if (major < 9) continue;
    snprintf(what, sizeof what, "empty kernel, %4d blocks x 256 threads, PDL", g);
    measure(st, e0, e1, what, [&] {
      cudaLaunchAttribute attr[1];
      attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attr[0].val.programmaticStreamSerializationAllowed = 1;
      cudaLaunchConfig_t cfg = {};
      cfg.gridDim = dim3(g);
      cfg.blockDim = dim3(256);
      cfg.stream = st;
      cfg.attrs = attr;
      cfg.numAttrs = 1;
      cudaLaunchKernelEx(&cfg, empty_pdl_kernel, (const unsigned *)nullptr, (const unsigned *)nullptr,
                         (const unsigned *)nullptr, 0, 0, o);
    });
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    printf("launch floor: %s\n", cudaGetErrorString(err));
    return 1;
  }
  return 0;
}
