// Throughput of the tensor-core mma.sync shapes the kernels use, on whatever GPU runs it: each
// warp runs four independent accumulator chains of one shape, 4096 rounds; reported as cycles
// per mma per SM sub-partition (wall time at the GPU's rated clock). It answers whether the
// 1-bit kernel could be bound by its binary mmas: on the H100 mma.m16n8k256.b1 issues at the
// rate of bf16 m16n8k16 and s8 m16n8k32 (~6.7 cycles per SM sub-partition), m16n8k128.b1 at
// ~4.5 (results/kernels/h100_mma_rate.txt). Not part of the CMake build; on the GPU machine:
//   nvcc -O3 -arch=sm_90 benchmarks/mma_rate.cu -o mma_rate && ./mma_rate
#include <cstdio>
#include <cstdint>
#include <cuda_runtime.h>
constexpr int kIters = 4096, kChains = 4;
template <int Kind>
__global__ void bench(int* out, uint32_t seed) {
  int c[kChains][4] = {};
  uint32_t a0 = seed ^ threadIdx.x, a1 = a0 * 3u, a2 = a0 * 5u, a3 = a0 * 7u, b0 = a0 * 11u, b1 = a0 * 13u;
  for (int i = 0; i < kIters; ++i) {
#pragma unroll
    for (int k = 0; k < kChains; ++k) {
      if (Kind == 0)
        asm volatile("mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+r"(c[k][0]), "+r"(c[k][1]), "+r"(c[k][2]), "+r"(c[k][3]) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
      else if (Kind == 1)
        asm volatile("mma.sync.aligned.m16n8k128.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
                     : "+r"(c[k][0]), "+r"(c[k][1]), "+r"(c[k][2]), "+r"(c[k][3]) : "r"(a0), "r"(a1), "r"(b0));
      else if (Kind == 2)
        asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+r"(c[k][0]), "+r"(c[k][1]), "+r"(c[k][2]), "+r"(c[k][3]) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
      else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+r"(c[k][0]), "+r"(c[k][1]), "+r"(c[k][2]), "+r"(c[k][3]) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
  }
  int s = 0;
  for (int k = 0; k < kChains; ++k) s += c[k][0] + c[k][1] + c[k][2] + c[k][3];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
template <int Kind>
void run(const char* name, int sms, int warps_per_sm) {
  int* out;
  cudaMalloc(&out, sizeof(int) * sms * warps_per_sm * 32);
  bench<Kind><<<sms, warps_per_sm * 32>>>(out, 1);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0); cudaEventCreate(&e1);
  cudaEventRecord(e0);
  bench<Kind><<<sms, warps_per_sm * 32>>>(out, 2);
  cudaEventRecord(e1);
  cudaEventSynchronize(e1);
  float ms; cudaEventElapsedTime(&ms, e0, e1);
  int clk_khz; cudaDeviceGetAttribute(&clk_khz, cudaDevAttrClockRate, 0);
  const double mmas_per_smsp = double(kIters) * kChains * warps_per_sm / 4;
  const double cycles = ms * 1e-3 * clk_khz * 1e3;
  std::printf("%-22s warps/SM %2d: %.3f ms, %.2f cycles per mma per SM sub-partition (at %d MHz), %s\n", name, warps_per_sm, ms,
              cycles / mmas_per_smsp, clk_khz / 1000, cudaGetErrorString(cudaGetLastError()));
  cudaFree(out);
}
int main() {
  int sms; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  for (int w : {4, 8, 16}) {
    run<0>("b1 m16n8k256", sms, w);
    run<1>("b1 m16n8k128", sms, w);
    run<2>("s8 m16n8k32", sms, w);
    run<3>("bf16 m16n8k16", sms, w);
  }
}
