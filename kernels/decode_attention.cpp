// Input checks and device dispatch of decode attention: the CUDA kernels for CUDA tensors
// (sequence splits chosen from the shapes and the SM count), the reference otherwise.
#include "kernels/decode_attention.h"

#include <algorithm>
#include <cstdlib>
#include <functional>

#include "kernels/cuda_dispatch.h"
#include "kernels/pack_bits.h"

#ifdef CALIBQ_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "kernels/decode_attention_cuda.h"
#endif

namespace calibq::kernels {

bool decode_attention_cuda_supports(int64_t query_heads, int64_t kv_heads, int64_t head_dim) {
  return kv_heads > 0 && query_heads % kv_heads == 0 && query_heads / kv_heads <= 8 && head_dim > 0 && head_dim <= 256;
}

void check_decode_attention_inputs(const DecodeAttentionInputs& in) {
  TORCH_CHECK(in.q.defined() && in.q.dim() == 3, "decode_attention: q must be [batch, query_heads, head_dim]");
  TORCH_CHECK(in.q.scalar_type() == at::kFloat || in.q.scalar_type() == at::kHalf || in.q.scalar_type() == at::kBFloat16,
              "decode_attention: q must be float32, float16 or bfloat16, got ", in.q.scalar_type());
  TORCH_CHECK(in.has_packed || !in.full.empty(), "decode_attention: no segment to attend over");
  const int64_t B = in.q.size(0), Hq = in.q.size(1), D = in.q.size(2);
  int64_t H = -1;
  auto check_heads = [&](int64_t h, const char* what) {
    if (H < 0) H = h;
    TORCH_CHECK(h == H, "decode_attention: ", what, " has ", h, " heads, another segment ", H);
    TORCH_CHECK(H > 0 && Hq % H == 0, "decode_attention: ", Hq, " query heads are not a multiple of ", H, " KV heads");
  };
  for (size_t i = 0; i < in.full.size(); ++i) {
    const auto& f = in.full[i];
    TORCH_CHECK(f.k.dim() == 4 && f.k.sizes() == f.v.sizes(), "decode_attention: full segment ", i,
                ": k and v must be [batch, heads, tokens, head_dim] of one shape, got ", f.k.sizes(), " and ", f.v.sizes());
    TORCH_CHECK(f.k.size(0) == B && f.k.size(3) == D, "decode_attention: full segment ", i, " is ", f.k.sizes(),
                " for q ", in.q.sizes());
    TORCH_CHECK(f.k.scalar_type() == in.q.scalar_type() && f.v.scalar_type() == in.q.scalar_type(),
                "decode_attention: full segment ", i, " must be in q's dtype ", in.q.scalar_type());
    TORCH_CHECK(f.k.device() == in.q.device() && f.v.device() == in.q.device(), "decode_attention: full segment ", i,
                " is on another device than q");
    if (f.length.defined())
      TORCH_CHECK(f.length.numel() == 1 && f.length.scalar_type() == at::kInt && f.length.device() == in.q.device(),
                  "decode_attention: full segment ", i, "'s length must be one int32 on q's device");
    if (f.mask.defined())
      TORCH_CHECK(f.mask.dim() == 2 && f.mask.size(0) == B && f.mask.size(1) == f.k.size(2) &&
                      f.mask.scalar_type() == at::kFloat && f.mask.device() == in.q.device(),
                  "decode_attention: full segment ", i, ": mask must be float32 [batch, tokens] on q's device, got ",
                  f.mask.sizes());
    check_heads(f.k.size(1), "a full segment");
  }
  if (in.has_packed) {
    int64_t N = -1;
    for (const PackedKV* p : {&in.key, &in.value}) {
      const char* who = p == &in.key ? "packed keys" : "packed values";
      TORCH_CHECK(p->bits == 1 || p->bits == 2 || p->bits == 4 || p->bits == 8, "decode_attention: ", who,
                  ": storage bits must be 1, 2, 4 or 8, got ", p->bits);
      TORCH_CHECK(p->packed.dim() == 4 && p->packed.scalar_type() == at::kByte && p->packed.size(0) == B &&
                      p->packed.size(3) == packed_bytes(D, p->bits),
                  "decode_attention: ", who, " must be uint8 [batch, heads, tokens, ", packed_bytes(D, p->bits),
                  "], got ", p->packed.sizes());
      TORCH_CHECK(p->packed.device() == in.q.device(), "decode_attention: ", who, " are on another device than q");
      check_heads(p->packed.size(1), who);
      if (N < 0) N = p->packed.size(2);
      TORCH_CHECK(p->packed.size(2) == N, "decode_attention: packed keys and values differ in tokens");
      const std::vector<int64_t> want = p->axis == ScaleAxis::Channel ? std::vector<int64_t>{B, H, 1, D}
                                                                        : std::vector<int64_t>{B, H, N, 1};
      for (const at::Tensor* t : {&p->scale, &p->zero})
        TORCH_CHECK(t->defined() && t->sizes() == at::IntArrayRef(want) && t->scalar_type() == at::kFloat &&
                        t->device() == in.q.device(),
                    "decode_attention: ", who, ": scale and zero must be float32 ", at::IntArrayRef(want), " on q's device, got ",
                    t->defined() ? t->sizes() : at::IntArrayRef{});
    }
    TORCH_CHECK(in.key.bits == in.value.bits, "decode_attention: packed keys and values must share the bit-width");
  }
}

at::Tensor token_words(const at::Tensor& packed, int64_t tokens) {
  if (!packed.is_cuda()) return token_words_cpu(packed, tokens);
#ifdef CALIBQ_WITH_CUDA
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.dim() >= 2 && packed.size(-2) == tokens,
              "token_words: packed codes must be uint8 [..., ", tokens, ", D/8], got ", packed.sizes());
  const at::Tensor p = packed.contiguous();
  const int64_t d = p.size(-1) * 8, words = (tokens + 31) / 32;
  const int64_t rows = tokens == 0 ? 0 : p.numel() / (tokens * p.size(-1));
  auto sizes = p.sizes().vec();
  sizes[sizes.size() - 2] = words;
  sizes.back() = d;
  at::Tensor out = at::empty(sizes, p.options().dtype(at::kInt));
  check_cuda(cuda::launch_token_words(p.data_ptr<uint8_t>(), reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>()), rows,
                                      tokens, static_cast<int>(d), current_stream(p)),
             "token_words");
  return out;
#else
  fail_no_cuda("token_words");
#endif
}

at::Tensor decode_attention(const DecodeAttentionInputs& in) {
  if (!in.q.is_cuda()) return decode_attention_cpu(in);
#ifdef CALIBQ_WITH_CUDA
  check_decode_attention_inputs(in);
  const int64_t B = in.q.size(0), Hq = in.q.size(1), D = in.q.size(2);
  const int64_t H = in.has_packed ? in.key.packed.size(1) : in.full.front().k.size(1);
  TORCH_CHECK(decode_attention_cuda_supports(Hq, H, D), "decode_attention (CUDA): GQA groups up to 8 and head_dim up to 256, got ",
              Hq, " query heads over ", H, " KV heads, head_dim ", D);
  // The kernels read q in its own dtype and apply the softmax scale themselves, and the merge
  // writes the output in that dtype: no conversion kernels around the attention (at batch 1
  // each one is a few microseconds of a ~9 ms step, 32 layers over).
  const at::Tensor q = in.q.contiguous();
  const cuda::KVType q_type = element_type(q, "decode_attention");
  const at::TensorOptions f32 = q.options().dtype(at::kFloat);
  cuda::DecodeShape s;
  s.batch = static_cast<int>(B);
  s.kv_heads = static_cast<int>(H);
  s.groups = static_cast<int>(Hq / H);
  s.head_dim = static_cast<int>(D);
  s.q = q.data_ptr();
  s.q_type = q_type;
  s.q_scale = static_cast<float>(in.scale);

  // Splits: enough blocks to fill the GPU twice over, chunks no shorter than 64 tokens, and
  // shared memory within 100 KiB so that two blocks fit an SM. The CUDA-core kernel for
  // full-precision segments (float32, or head dims the tensor-core kernel does not take) keeps
  // a block's scores in shared memory: within 24 KiB (about 900 tokens at GQA 4) so that eight
  // blocks fit an SM; a large batch of long sequences otherwise ran one split of 3.5k tokens per
  // block, three blocks per SM, too few loads in flight for the bandwidth. Measured on the H100
  // side by side (B = 125, H = 8, G = 4, 41 + 3486 tokens): 100 KiB 1.86 ms, 24 KiB 1.40 ms,
  // 12 KiB 1.73 ms (the merge of more splits); G = 1 shapes unchanged. (The tensor-core kernel
  // takes 0.62 ms there.) CALIBQ_FULL_SEGMENT_SMEM_KIB overrides it for side-by-side measurements.
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t rows = B * H;
  const size_t smem_limit = 100 * 1024;
  static const size_t full_smem_limit = [] {
    const char* env = std::getenv("CALIBQ_FULL_SEGMENT_SMEM_KIB");
    return static_cast<size_t>(env && *env ? std::max(4L, std::atol(env)) : 24L) * 1024;
  }();
  auto choose = [&](int64_t length, const std::function<size_t(int64_t)>& shared, size_t limit) {
    if (in.splits > 0) return std::min<int64_t>(in.splits, std::max<int64_t>(length, 1));
    int64_t splits = std::clamp<int64_t>((2 * sms + rows - 1) / rows, 1, std::max<int64_t>(1, length / 64));
    while (splits < length && shared((length + splits - 1) / splits) > limit) ++splits;
    return splits;
  };
  std::vector<cuda::FullSegmentArgs> fulls;
  std::vector<at::Tensor> keep;  // contiguous copies live until the launches are queued
  int total = 0;
  for (const auto& f : in.full) {
    cuda::FullSegmentArgs a;
    a.length = f.k.size(2);
    if (a.length == 0) continue;
    // Token rows contiguous: read in place whatever the batch and head strides (a cache's text
    // buffer is a view of a longer one; a shared system prompt has batch stride 0); anything
    // else is made contiguous first.
    auto in_place = [&](const at::Tensor& t) { return t.stride(3) == 1 && t.stride(2) == D ? t : t.contiguous(); };
    keep.push_back(in_place(f.k));
    a.k = keep.back().data_ptr();
    a.k_head_stride = keep.back().stride(1);
    a.k_batch_stride = keep.back().stride(0);
    keep.push_back(in_place(f.v));
    a.v = keep.back().data_ptr();
    a.v_head_stride = keep.back().stride(1);
    a.v_batch_stride = keep.back().stride(0);
    if (f.mask.defined()) {
      keep.push_back(f.mask.contiguous());
      a.mask = keep.back().data_ptr<float>();
    }
    if (f.length.defined()) a.length_dev = f.length.data_ptr<int>();
    a.type = q_type;
    fulls.push_back(a);
  }
  // 16-bit segments: one launch of the tensor-core kernel over all of them, split so that
  // its resident blocks (two per SM at head_dim 128) are filled, with at least 8 tiles (128
  // tokens, two per warp) per split. Otherwise (float32, other head dims) the CUDA-core
  // kernel, one launch per segment, its scores in shared memory.
  const int full_count = static_cast<int>(fulls.size());
  const bool flash = cuda::full_segments_flash(s, fulls.data(), full_count);
  int flash_splits = 0, flash_offset = 0;
  if (flash) {
    const int tiles = cuda::full_segments_flash_tiles(fulls.data(), full_count);
    const int64_t resident = sms * cuda::full_segments_flash_blocks_per_sm(static_cast<int>(D));
    flash_splits = static_cast<int>(in.splits > 0 ? std::min<int64_t>(in.splits, tiles)
                                                  : std::clamp<int64_t>((resident + rows - 1) / rows, 1, std::max(1, tiles / 8)));
    flash_offset = total;
    total += flash_splits;
  } else {
    for (auto& a : fulls) {
      a.splits = static_cast<int>(
          choose(a.length, [&](int64_t c) { return cuda::full_segment_shared_bytes(s, c); }, full_smem_limit));
      a.split_offset = total;
      total += a.splits;
    }
  }
  cuda::PackedSegmentArgs p;
  at::Tensor minmax;
  if (in.has_packed && in.key.packed.size(2) > 0) {
    p.length = in.key.packed.size(2);
    p.bits = in.key.bits;
    p.row_bytes = static_cast<int>(in.key.packed.size(3));
    for (const at::Tensor& t : {in.key.packed, in.key.scale, in.key.zero, in.value.packed, in.value.scale, in.value.zero})
      keep.push_back(t.contiguous());
    const size_t k0 = keep.size() - 6;
    p.k_packed = keep[k0].data_ptr<uint8_t>();
    p.k_scale = keep[k0 + 1].data_ptr<float>();
    p.k_zero = keep[k0 + 2].data_ptr<float>();
    p.v_packed = keep[k0 + 3].data_ptr<uint8_t>();
    p.v_scale = keep[k0 + 4].data_ptr<float>();
    p.v_zero = keep[k0 + 5].data_ptr<float>();
    p.k_token_axis = in.key.axis == ScaleAxis::Token;
    p.v_token_axis = in.value.axis == ScaleAxis::Token;
    // 1-bit with head_dim a multiple of 32: the tensor-core path, which reads values as token-major words.
    if (p.bits == 1 && D % 32 == 0) {
      keep.push_back(in.value.token_words.defined() ? in.value.token_words.contiguous() : token_words(in.value.packed, p.length));
      p.v_token_words = reinterpret_cast<const uint32_t*>(keep.back().data_ptr<int32_t>());
    }
    p.calibrate = in.calibrate;
    p.calib_a = static_cast<float>(in.calib_a);
    p.calib_b = static_cast<float>(in.calib_b);
    // The 1-bit GQA kernel (head_dim 32/64/128) keeps a whole long segment in one split
    // (~56 KB of shared memory at 3.3k tokens, four blocks per SM): more splits would not add
    // blocks at large batches, and with calibration each extra split costs a score pass for the
    // row's range.
    const bool whole = p.bits == 1 && Hq > H && (D == 32 || D == 64 || D == 128);
    p.splits = static_cast<int>(
        choose(p.length, [&](int64_t c) { return cuda::packed_segment_shared_bytes(s, p.bits, p.row_bytes, c); },
               whole ? 200 * 1024 : smem_limit));
    TORCH_CHECK(cuda::packed_segment_shared_bytes(s, p.bits, p.row_bytes, (p.length + p.splits - 1) / p.splits) <= 227 * 1024,
                "decode_attention (CUDA): the packed segment's tables do not fit shared memory (", s.groups, " query heads per KV head, ",
                p.bits, " bits, head_dim ", D, ")");
    p.split_offset = total;
    total += p.splits;
    if (p.calibrate && p.splits > 1) {
      minmax = at::empty({B, Hq, p.splits, 2}, f32);
      p.minmax = minmax.data_ptr<float>();
    }
  }
  s.total_splits = total;
  at::Tensor part_o = at::empty({B, Hq, std::max(total, 1), D}, f32);
  at::Tensor part_ml = at::empty({B, Hq, std::max(total, 1), 2}, f32);
  s.part_o = part_o.data_ptr<float>();
  s.part_ml = part_ml.data_ptr<float>();
  at::Tensor out = at::empty({B, Hq, D}, q.options());
  cudaStream_t stream = current_stream(q);
  if (flash)
    check_cuda(cuda::launch_full_segments_flash(s, fulls.data(), full_count, flash_splits, flash_offset, stream),
               "decode_attention (16-bit segments)");
  else
    for (const auto& a : fulls) check_cuda(cuda::launch_full_segment(s, a, stream), "decode_attention (full segment)");
  // The GQA kernel, last, ends the step where it takes the segment whole; else the merge does.
  const bool packed_writes = cuda::packed_segment_writes_output(s, p);
  if (packed_writes) p.out = out.data_ptr();
  if (p.length > 0) check_cuda(cuda::launch_packed_segment(s, p, stream), "decode_attention (packed segment)");
  if (!packed_writes) check_cuda(cuda::launch_merge(s, out.data_ptr(), stream), "decode_attention (merge)");
  return out;
#else
  fail_no_cuda("decode_attention");
#endif
}

}  // namespace calibq::kernels
