// Device dispatch of quantize-and-pack: the CUDA kernels for CUDA tensors, the reference otherwise.
#include "kernels/quantize_pack.h"

#include "kernels/cuda_dispatch.h"
#include "kernels/pack_bits.h"

#ifdef CALIBQ_WITH_CUDA
#include "kernels/quantize_pack_cuda.h"
#endif

namespace calibq::kernels {

PackedKV quantize_pack(const at::Tensor& x, int bits, ScaleAxis axis, double clip) {
  if (!x.is_cuda()) return quantize_pack_cpu(x, bits, axis, clip);
#ifdef CALIBQ_WITH_CUDA
  TORCH_CHECK(x.dim() == 4 && at::isFloatingType(x.scalar_type()), "quantize_pack: x must be a floating [B, H, N, D] tensor, got ",
              x.sizes());
  TORCH_CHECK(bits >= 1 && bits <= 8, "quantize_pack: bits must be 1..8, got ", bits);
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const int64_t B = x.size(0), H = x.size(1), N = x.size(2), D = x.size(3);
  const bool channel = axis == ScaleAxis::Channel;
  PackedKV out;
  out.axis = axis;
  out.bits = storage_bits(bits);
  out.scale = channel ? at::empty({B, H, 1, D}, xf.options()) : at::empty({B, H, N, 1}, xf.options());
  out.zero = at::empty_like(out.scale);
  at::Tensor flat = at::empty(out.scale.sizes(), xf.options().dtype(at::kByte));
  out.packed = at::empty({B, H, N, packed_bytes(D, out.bits)}, xf.options().dtype(at::kByte));
  check_cuda(cuda::launch_quantize_pack(xf.data_ptr<float>(), B * H, N, static_cast<int>(D), bits, out.bits, !channel,
                                        static_cast<float>(clip), out.scale.data_ptr<float>(), out.zero.data_ptr<float>(),
                                        flat.data_ptr<uint8_t>(), out.packed.data_ptr<uint8_t>(), current_stream(xf)),
             "quantize_pack");
  return out;
#else
  fail_no_cuda("quantize_pack");
#endif
}

}  // namespace calibq::kernels
