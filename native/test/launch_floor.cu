// Per-launch floor of back-to-back kernel launches on one stream, timed exactly like bwq_cuda_bench
// (10 warm-up launches, then 200 launches between two cudaEvents; mean per launch), and of the same 200
// launches captured into one CUDA graph (the bench's graph timing). Context for the M = 1 GEMV numbers in
// docs/PERFORMANCE.md.  Built and run by native/test/gpu-run.sh.
#include <cuda_runtime.h>
#include <stdio.h>

__global__ void empty_kernel(const unsigned *a, const unsigned *b, const unsigned *c, int d, int e, int *o) {
  if (d == -12345 && threadIdx.x == 0) o[0] = a[0] + b[0] + c[0] + e;
}

int main() {
  cudaStream_t st;
  cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
  int *o;
  cudaMalloc(&o, 4);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  const int grids[] = {1, 132, 512, 1376};
  for (int gi = 0; gi < 4; ++gi) {
    const int g = grids[gi];
    for (int i = 0; i < 10; ++i) empty_kernel<<<g, 256, 0, st>>>(nullptr, nullptr, nullptr, 0, 0, o);
    cudaEventRecord(e0, st);
    for (int i = 0; i < 200; ++i) empty_kernel<<<g, 256, 0, st>>>(nullptr, nullptr, nullptr, 0, 0, o);
    cudaEventRecord(e1, st);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    printf("launch floor: empty kernel, %4d blocks x 256 threads: %.2f us per launch\n", g, ms * 1000 / 200);
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal);
    for (int i = 0; i < 200; ++i) empty_kernel<<<g, 256, 0, st>>>(nullptr, nullptr, nullptr, 0, 0, o);
    cudaStreamEndCapture(st, &graph);
    cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphLaunch(exec, st);
    cudaEventRecord(e0, st);
    cudaGraphLaunch(exec, st);
    cudaEventRecord(e1, st);
    cudaEventSynchronize(e1);
    cudaEventElapsedTime(&ms, e0, e1);
    printf("launch floor: empty kernel, %4d blocks x 256 threads, CUDA graph: %.2f us per launch\n", g,
           ms * 1000 / 200);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    printf("launch floor: %s\n", cudaGetErrorString(err));
    return 1;
  }
  return 0;
}
