// Side-by-side timing of two versions of the decode-attention kernels without the LibTorch
// build: this file includes one version of kernels/decode_attention_cuda.cu (KERNEL_CU, set by
// scripts/device/kernel-ab.sh, which compiles it here with nvcc for two revisions) and runs the
// throughput benchmark's attention shape on random inputs: B sequences x 8 KV heads x GQA 4,
// head_dim 128, 3328 1-bit visual tokens (per-channel scales, calibration) and 41 + 135 bf16
// tokens, one step as a decode step runs it (flash kernel, 1-bit kernel, merge unless folded).
// A GPU session then spends no device time on a build. Not part of the CMake build (it would
// recompile the whole kernel file); revisions from 5c39f5b on (PackedSegmentArgs::out).
//   decode_attention_ab B [OUT.bin]     time 3 x 100 steps and the 1-bit kernel alone; the output
//   decode_attention_ab compare A.bin B.bin   largest difference of two outputs (bf16)
#include KERNEL_CU
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <cmath>
#include <cstdlib>
#include <vector>
using namespace calibq::kernels::cuda;
// Revisions with per-batch strides of the 16-bit segments get them set; older ones have none.
template <typename A, typename = void>
struct HasBatchStride : std::false_type {};
template <typename A>
struct HasBatchStride<A, std::void_t<decltype(A::k_batch_stride)>> : std::true_type {};
template <typename A>
void set_batch_stride(A& a, int64_t stride) {
  if constexpr (HasBatchStride<A>::value) a.k_batch_stride = a.v_batch_stride = stride;
}
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { std::printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)
static uint16_t bf16(float f) { uint32_t u; std::memcpy(&u, &f, 4); return static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16); }
template <typename T> T* upload(const std::vector<T>& h) { T* d; cudaMalloc(&d, h.size() * sizeof(T)); cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice); return d; }
static float from_bf16(uint16_t x) {
  const uint32_t u = uint32_t(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static std::vector<uint16_t> read_all(const char* path) {
  std::vector<uint16_t> v;
  if (FILE* fp = std::fopen(path, "rb")) {
    uint16_t x;
    while (std::fread(&x, 2, 1, fp) == 1) v.push_back(x);
    std::fclose(fp);
  }
  return v;
}
int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "compare") == 0) {
    const std::vector<uint16_t> x = read_all(argv[2]), y = read_all(argv[3]);
    if (x.empty() || x.size() != y.size()) { std::printf("compare: %s and %s differ in size or are unreadable\n", argv[2], argv[3]); return 1; }
    double worst = 0, scale = 0;
    size_t differ = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double d = std::fabs(double(from_bf16(x[i])) - from_bf16(y[i]));
      worst = std::max(worst, d);
      scale = std::max(scale, std::fabs(double(from_bf16(x[i]))));
      differ += x[i] != y[i];
    }
    std::printf("outputs: %zu of %zu elements differ, largest difference %.3g (largest value %.3g)\n", differ, x.size(), worst, scale);
    return 0;
  }
  const int B = argc > 1 ? std::atoi(argv[1]) : 630, H = 8, G = 4, D = 128, N = 3328, SYS = 41, TXT = 135;
  if (B <= 0) { std::printf("usage: %s B [OUT.bin] | compare A.bin B.bin\n", argv[0]); return 2; }
  const char* out_path = argc > 2 ? argv[2] : nullptr;
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto ud = [&]() { state = state * 6364136223846793005ull + 1442695040888963407ull; return static_cast<uint32_t>(state >> 32); };
  auto nd = [&]() { return (ud() >> 8) * (2.f / 16777216.f) - 1.f; };  // uniform in [-1, 1)
  std::vector<uint16_t> q(size_t(B) * H * G * D);
  for (auto& x : q) x = bf16(nd());
  auto full = [&](int L) { std::vector<uint16_t> v(size_t(B) * H * L * D); for (auto& x : v) x = bf16(0.5f * nd()); return v; };
  std::vector<uint16_t> sk = full(SYS), sv = full(SYS), tk = full(TXT), tv = full(TXT);
  std::vector<uint8_t> kp(size_t(B) * H * N * D / 8), vp(kp.size());
  for (auto& x : kp) x = ud() & 0xff;
  for (auto& x : vp) x = ud() & 0xff;
  const int W = (N + 31) / 32;
  std::vector<uint32_t> vw(size_t(B) * H * W * D);
  for (auto& x : vw) x = ud();
  std::vector<float> ks(size_t(B) * H * D), kz(ks.size()), vs(ks.size()), vz(ks.size());
  for (size_t i = 0; i < ks.size(); ++i) { ks[i] = 0.5f + 0.01f * (ud() % 100); kz[i] = 0.5f; vs[i] = 0.3f + 0.01f * (ud() % 50); vz[i] = 0.5f; }
  DecodeShape s;
  s.batch = B; s.kv_heads = H; s.groups = G; s.head_dim = D;
  s.q = upload(q); s.q_type = KVType::BF16; s.q_scale = 1.f / std::sqrt(float(D));
  FullSegmentArgs f[2];
  const std::vector<uint16_t>* fk[2] = {&sk, &tk}; const std::vector<uint16_t>* fv[2] = {&sv, &tv}; const int fl[2] = {SYS, TXT};
  for (int i = 0; i < 2; ++i) {
    f[i].k = upload(*fk[i]); f[i].v = upload(*fv[i]); f[i].k_head_stride = f[i].v_head_stride = int64_t(fl[i]) * D;
    f[i].type = KVType::BF16; f[i].length = fl[i];
    set_batch_stride(f[i], int64_t(H) * fl[i] * D);
  }
  PackedSegmentArgs p;
  p.k_packed = upload(kp); p.v_packed = upload(vp); p.k_scale = upload(ks); p.k_zero = upload(kz); p.v_scale = upload(vs); p.v_zero = upload(vz);
  p.bits = 1; p.length = N; p.row_bytes = D / 8; p.splits = 1; p.split_offset = 1; p.calibrate = true; p.calib_a = -0.2f; p.calib_b = 0.3f;
  p.v_token_words = upload(vw);
  s.total_splits = 2;
  float *po, *pml; CK(cudaMalloc(&po, sizeof(float) * B * H * G * 2 * D)); CK(cudaMalloc(&pml, sizeof(float) * B * H * G * 2 * 2));
  s.part_o = po; s.part_ml = pml;
  uint16_t* out; CK(cudaMalloc(&out, sizeof(uint16_t) * B * H * G * D));
  if (!full_segments_flash(s, f, 2)) { std::printf("flash not taken\n"); return 1; }
  const bool fused = packed_segment_writes_output(s, p);
  if (fused) p.out = out;
  cudaStream_t st; cudaStreamCreate(&st);
  auto step = [&]() -> cudaError_t {
    cudaError_t e = launch_full_segments_flash(s, f, 2, 1, 0, st); if (e) return e;
    e = launch_packed_segment(s, p, st); if (e) return e;
    return fused ? cudaSuccess : launch_merge(s, out, st);
  };
  CK(step()); CK(cudaStreamSynchronize(st));
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  for (int rep = 0; rep < 3; ++rep) {
    cudaEventRecord(a, st); for (int i = 0; i < 100; ++i) step(); cudaEventRecord(b, st); CK(cudaEventSynchronize(b));
    float ms; cudaEventElapsedTime(&ms, a, b);
    cudaEventRecord(a, st); for (int i = 0; i < 100; ++i) launch_packed_segment(s, p, st); cudaEventRecord(b, st); CK(cudaEventSynchronize(b));
    float ms2; cudaEventElapsedTime(&ms2, a, b);
    std::printf("B=%d fused=%d whole %.4f ms  packed kernel %.4f ms\n", B, int(fused), ms / 100, ms2 / 100);
  }
  CK(step()); CK(cudaStreamSynchronize(st));
  std::vector<uint16_t> h(size_t(B) * H * G * D);
  CK(cudaMemcpy(h.data(), out, h.size() * 2, cudaMemcpyDeviceToHost));
  double sum = 0;
  for (auto x : h) sum += from_bf16(x);
  std::printf("checksum %.6f\n", sum);
  if (out_path) { FILE* fp = std::fopen(out_path, "wb"); std::fwrite(h.data(), 2, h.size(), fp); std::fclose(fp); }
  return 0;
}
