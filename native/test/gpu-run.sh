#!/bin/sh
# Builds the CUDA library, the CPU kernels and the C++ driver with nvcc/g++ on a GPU machine (no Node.js
# needed), runs the exactness tests and the benchmark.  Usage (repo root):  sh native/test/gpu-run.sh [OUTDIR]
# Writes OUTDIR/gpu-test.log, gpu-bench.txt, gpu-bench.json, machine.txt.
set -u
OUT=${1:-${OUT:-/tmp/bwq-gpu}}
mkdir -p "$OUT"
B=/tmp/bwq-gpu-build
rm -rf "$B"; mkdir -p "$B"
NATIVE=$(cd "$(dirname "$0")/.." && pwd)
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  nvcc --version | tail -2
  grep -m1 'model name' /proc/cpuinfo; nproc
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
# cuBLAS (dlopen'ed by libbwq_cuda.so)
. "$NATIVE/test/find-cublas.sh"
echo "cublas: $BWQ_CUBLAS"
t0=$(date +%s)
sh "$NATIVE/build-cuda.sh" "$B" || exit 1
[ -f "$B/libbwq_cuda.so" ] || { echo "CUDA build failed"; exit 1; }
CXX=${CXX:-g++}
$CXX -O3 -std=c++17 -fPIC -c "$NATIVE/src/kernels_scalar.cpp" -o "$B/ks.o" &&
$CXX -O3 -std=c++17 -fPIC -mavx2 -mpopcnt -c "$NATIVE/src/kernels_avx2.cpp" -o "$B/k2.o" &&
$CXX -O3 -std=c++17 -fPIC -mavx512f -mavx512bw -mavx512vl -mavx512vpopcntdq -mavx512vnni -mpopcnt -c "$NATIVE/src/kernels_avx512.cpp" -o "$B/k5.o" &&
$CXX -O3 -std=c++17 -fPIC -c "$NATIVE/src/cpu.cpp" -o "$B/cpu.o" &&
$CXX -O2 -std=c++17 -DBWQ_DRIVER_CUDA "$NATIVE/test/driver.cpp" "$B"/*.o -L"$B" -lbwq_cuda -Wl,-rpath,"$B" -lpthread -o "$B/driver" || exit 1
echo "build: $(( $(date +%s) - t0 )) s"
"$B/driver" test > "$OUT/gpu-test.log" 2>&1
rc_test=$?
cat "$OUT/gpu-test.log"
# BENCH_ARGS: extra driver arguments, e.g. "--quick --tb-only" for a short run.
# shellcheck disable=SC2086
"$B/driver" bench ${BENCH_ARGS:-} --json "$OUT/gpu-bench.json" > "$OUT/gpu-bench.txt" 2>&1
rc_bench=$?
cat "$OUT/gpu-bench.txt"
# Launch floor of back-to-back launches (same timing as the bench), for the M = 1 numbers.
NVCC_BIN=${NVCC:-nvcc}
command -v "$NVCC_BIN" >/dev/null 2>&1 || NVCC_BIN=/usr/local/cuda/bin/nvcc
"$NVCC_BIN" -O2 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -o "$B/launch_floor" "$NATIVE/dev/launch_floor.cu" && "$B/launch_floor" | tee "$OUT/launch-floor.txt"
echo "test rc=$rc_test bench rc=$rc_bench"
[ $rc_test -eq 0 ] && [ $rc_bench -eq 0 ]
