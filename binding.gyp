{
  # Native kernels for bwq (see docs/KERNELS.md). `npm install` / `npm ci` runs `node-gyp rebuild`.
  # - bwq.node: N-API addon + CPU kernels (scalar, AVX2, AVX-512 objects; runtime dispatch by cpuid;
  #   on non-x86 machines the SIMD objects are empty and the scalar path is used).
  # - libbwq_cuda.so: CUDA kernels, built by native/build-cuda.sh only when nvcc is found
  #   (BWQ_NO_CUDA=1 skips it); opened lazily by the addon with dlopen.
  "targets": [
    {
      "target_name": "bwq_kernels_avx2",
      "type": "static_library",
      "sources": ["native/src/kernels_avx2.cpp"],
      "cflags_cc": ["-O3", "-fPIC"],
      "conditions": [["target_arch=='x64' or target_arch=='ia32'", { "cflags_cc": ["-mavx2", "-mpopcnt"] }]]
    },
    {
      "target_name": "bwq_kernels_avx512",
      "type": "static_library",
      "sources": ["native/src/kernels_avx512.cpp"],
      "cflags_cc": ["-O3", "-fPIC", "-Wno-uninitialized", "-Wno-maybe-uninitialized"],
      "conditions": [["target_arch=='x64' or target_arch=='ia32'", {
        "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vpopcntdq", "-mavx512vnni", "-mpopcnt"]
      }]]
    },
    {
      "target_name": "bwq",
      "sources": ["native/src/addon.cpp", "native/src/addon_runtime.cpp", "native/src/addon_recon.cpp", "native/src/addon_weight_passes.cpp", "native/src/cpu.cpp",
                  "native/src/kernels_scalar.cpp", "native/runtime/cpu_backend.cpp", "native/runtime/model.cpp",
                  "native/runtime/forward.cpp", "native/ops/embed/embed_cpu.cpp", "native/ops/norm/norm_cpu.cpp",
                  "native/ops/rope/rope_cpu.cpp", "native/ops/rotate/rotate_cpu.cpp",
                  "native/ops/quantize/quantize_cpu.cpp", "native/ops/linear/linear_cpu.cpp",
                  "native/ops/attention/attention_cpu.cpp", "native/ops/elementwise/elementwise_cpu.cpp",
                  "native/ops/loss/loss_cpu.cpp", "native/ops/okt/okt_host.cpp",
                  "native/ops/okt/okt_cpu.cpp", "native/ops/binarize/binarize_cpu.cpp",
                  "native/ops/actquant/actquant_cpu.cpp", "native/ops/linalg/qr_cpu.cpp"],
      "dependencies": ["bwq_kernels_avx2", "bwq_kernels_avx512"],
      "cflags_cc": ["-O3", "-fPIC"],
      "libraries": ["-ldl", "-lpthread"]
    },
    {
      "target_name": "bwq_cuda",
      "type": "none",
      "actions": [
        {
          "action_name": "build_cuda",
          "inputs": [
            "native/include/bwq.h", "native/build-cuda.sh", "native/ops/gemm/common.cuh",
            "native/ops/gemm/packed_gemm.cuh", "native/ops/gemm/gemv.cu", "native/ops/gemm/gemm_mma.cu",
            "native/ops/gemm/gemm_wgmma.cu", "native/ops/gemm/dispatch.cu", "native/ops/gemm/host.cu",
            "native/ops/gemm/bench.cu",
            "native/runtime/backend.h", "native/runtime/cuda_backend.cu", "native/ops/ops_cuda.cuh",
            "native/ops/embed/embed.cu", "native/ops/norm/norm.cu", "native/ops/rope/rope.cu",
            "native/ops/rotate/rotate.cu", "native/ops/quantize/quantize.cu", "native/ops/linear/linear.cu",
            "native/ops/attention/attention.cu", "native/ops/elementwise/elementwise.cu", "native/ops/loss/loss.cu",
            "native/ops/okt/okt.h", "native/ops/okt/okt_em.h", "native/ops/okt/okt.cu", "native/ops/okt/okt_host.cpp"
          ],
          "outputs": ["<(PRODUCT_DIR)/bwq_cuda.stamp"],
          "action": ["sh", "native/build-cuda.sh", "<(PRODUCT_DIR)"]
        }
      ]
    }
  ]
}
