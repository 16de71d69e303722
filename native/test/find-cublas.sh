# Sourced by the GPU scripts: exports BWQ_CUBLAS (the libcublas that libbwq_cuda.so dlopens) unless it is set:
# the CUDA toolkit's, else PyTorch's nvidia-cublas wheel's, else the linker cache's.
if [ -z "${BWQ_CUBLAS:-}" ]; then
  for c in /usr/local/cuda/lib64/libcublas.so /usr/local/cuda/lib64/libcublas.so.13 /usr/local/cuda/lib64/libcublas.so.12; do
    [ -e "$c" ] && BWQ_CUBLAS=$c && break
  done
fi
if [ -z "${BWQ_CUBLAS:-}" ]; then
  BWQ_CUBLAS=$(python3 -c "import nvidia.cublas,os,glob;d=os.path.dirname(nvidia.cublas.__file__);print((glob.glob(d+'/lib/libcublas.so*'))[0])" 2>/dev/null || true)
fi
[ -z "$BWQ_CUBLAS" ] && BWQ_CUBLAS=$(ldconfig -p 2>/dev/null | awk '/libcublas\.so/{print $NF; exit}')
export BWQ_CUBLAS
