#!/bin/sh
# Builds libbwq_cuda.so (CUDA kernels, cudart linked statically) into $1 when nvcc is available.
# Never fails the install: without nvcc (or with BWQ_NO_CUDA=1) it only prints a notice.
# Environment: NVCC (compiler path), BWQ_CUDA_ARCHS (default "80 86 89 90a"; 90a = Hopper with wgmma),
# BWQ_CUDA_PTX (PTX for newer GPUs to JIT, default 90), BWQ_NO_CUDA=1 to skip.
set -u
OUT_DIR=${1:-build/Release}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT_DIR"
STAMP="$OUT_DIR/bwq_cuda.stamp"
if [ "${BWQ_NO_CUDA:-}" = "1" ]; then
  echo "bwq: BWQ_NO_CUDA=1, building CPU kernels only" >&2
  : > "$STAMP"; exit 0
fi
NVCC=${NVCC:-}
if [ -z "$NVCC" ]; then
  if command -v nvcc >/dev/null 2>&1; then NVCC=$(command -v nvcc)
  elif [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then NVCC="$CUDA_HOME/bin/nvcc"
  elif [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc
  fi
fi
if [ -z "$NVCC" ]; then
  echo "bwq: nvcc not found, building CPU kernels only" >&2
  : > "$STAMP"; exit 0
fi
ARCHS=${BWQ_CUDA_ARCHS:-"80 86 89 90a"}
PTX=${BWQ_CUDA_PTX:-90}
GENCODE=""
for a in $ARCHS; do GENCODE="$GENCODE -gencode arch=compute_$a,code=sm_$a"; done
# PTX too, so newer GPUs can JIT it (90a code runs on sm_90 only, so the PTX is plain compute_90).
[ -n "$PTX" ] && GENCODE="$GENCODE -gencode arch=compute_$PTX,code=compute_$PTX"
TMP="$OUT_DIR/libbwq_cuda.so.tmp"
# The backend of the compute engine (runtime/) and its ops (ops/<family>/*.cu, among them the packed GEMMs in
# ops/gemm/), one shared library; no device code crosses files, so no relocatable device code.
set -- "$HERE/runtime/cuda_backend.cu"
for f in "$HERE"/ops/*/*.cu; do [ -f "$f" ] && set -- "$@" "$f"; done
# host C++ that the device ops call (the OKT's polar factor; the addon compiles its own copy)
set -- "$@" "$HERE/ops/okt/okt_host.cpp"
# shellcheck disable=SC2086
if "$NVCC" -O3 -std=c++17 -shared -Xcompiler -fPIC,-fvisibility=hidden -cudart static --threads 0 $GENCODE \
    -o "$TMP" "$@"; then
  mv -f "$TMP" "$OUT_DIR/libbwq_cuda.so"
  echo "bwq: built $OUT_DIR/libbwq_cuda.so (sm: $ARCHS)" >&2
else
  rm -f "$TMP"
  echo "bwq: CUDA build failed, continuing with CPU kernels only" >&2
fi
: > "$STAMP"
exit 0
