#!/bin/sh
# Builds libbwq_cuda.so (for this machine's GPU), the CPU backend and native/test/runtime_ops_check.cpp, then
# checks every op of the CUDA backend against the CPU backend. Usage (repo root, on a GPU machine):
#   sh native/test/runtime-ops-check.sh [BUILD_DIR] [--quick]
# BWQ_CUDA_ARCHS overrides the GPU target (default: the first GPU's compute capability, 90a on Hopper);
# BWQ_CUDA_LIB=path uses that libbwq_cuda.so instead of building one.
set -u
B=${1:-/tmp/bwq-runtime-check}
shift 2>/dev/null || true
NATIVE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$B"
if [ -z "${BWQ_CUDA_ARCHS:-}" ]; then
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  [ "$cc" = "90" ] && cc=90a
  BWQ_CUDA_ARCHS=${cc:-90a}
fi
export BWQ_CUDA_ARCHS BWQ_CUDA_PTX=${BWQ_CUDA_PTX:-}
# cuBLAS (dlopen'ed by libbwq_cuda.so)
. "$NATIVE/test/find-cublas.sh"
t0=$(date +%s)
rm -f "$B/libbwq_cuda.so"
if [ -n "${BWQ_CUDA_LIB:-}" ]; then cp "$BWQ_CUDA_LIB" "$B/libbwq_cuda.so"  # a library built elsewhere for this GPU
else sh "$NATIVE/build-cuda.sh" "$B" &
fi
CXX=${CXX:-g++}
F="-O3 -std=gnu++17 -fPIC"
$CXX $F -c "$NATIVE/src/kernels_scalar.cpp" -o "$B/ks.o" &
$CXX $F -mavx2 -mpopcnt -c "$NATIVE/src/kernels_avx2.cpp" -o "$B/k2.o" &
$CXX $F -mavx512f -mavx512bw -mavx512vl -mavx512vpopcntdq -mavx512vnni -mpopcnt -Wno-uninitialized \
  -Wno-maybe-uninitialized -c "$NATIVE/src/kernels_avx512.cpp" -o "$B/k5.o" &
wait
$CXX $F "$NATIVE/test/runtime_ops_check.cpp" "$NATIVE/runtime/cpu_backend.cpp" "$NATIVE"/ops/*/*_cpu.cpp \
  "$NATIVE/ops/okt/okt_host.cpp" "$NATIVE/src/cpu.cpp" "$B/ks.o" "$B/k2.o" "$B/k5.o" -ldl -lpthread -o "$B/runtime_ops_check" || exit 1
[ -f "$B/libbwq_cuda.so" ] || { echo "CUDA build failed"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s (sm: $BWQ_CUDA_ARCHS, cublas: ${BWQ_CUBLAS:-none})"
"$B/runtime_ops_check" "$B/libbwq_cuda.so" "$@"
