// Device dispatch of the bit-packing op: the CUDA kernels for CUDA tensors (when built
// with CUDA), the plain-loop reference otherwise.
#include "kernels/pack_bits.h"

#include "kernels/cuda_dispatch.h"

#ifdef CALIBQ_WITH_CUDA
#include "kernels/pack_bits_cuda.h"
#endif

namespace calibq::kernels {

at::Tensor pack_codes(const at::Tensor& codes, int bits) {
  if (!codes.is_cuda()) return pack_codes_cpu(codes, bits);
#ifdef CALIBQ_WITH_CUDA
  TORCH_CHECK(codes.scalar_type() == at::kByte, "pack_codes: codes must be uint8");
  TORCH_CHECK(codes.dim() >= 1, "pack_codes: codes need at least one dimension");
  bits = storage_bits(bits);
  at::Tensor c = codes.contiguous();
  const int64_t n = c.size(-1), m = packed_bytes(n, bits);
  auto sizes = c.sizes().vec();
  sizes.back() = m;
  at::Tensor packed = at::empty(sizes, c.options());
  const int64_t rows = n == 0 ? 0 : c.numel() / n;
  check_cuda(cuda::launch_pack_codes(c.data_ptr<uint8_t>(), packed.data_ptr<uint8_t>(), rows, n, m,
                                     bits, current_stream(c)),
             "pack_codes");
  return packed;
#else
  fail_no_cuda("pack_codes");
#endif
}

at::Tensor unpack_codes(const at::Tensor& packed, int bits, int64_t n) {
  if (!packed.is_cuda()) return unpack_codes_cpu(packed, bits, n);
#ifdef CALIBQ_WITH_CUDA
  TORCH_CHECK(packed.scalar_type() == at::kByte, "unpack_codes: packed codes must be uint8");
  bits = storage_bits(bits);
  at::Tensor p = packed.contiguous();
  const int64_t m = p.size(-1);
  TORCH_CHECK(m == packed_bytes(n, bits), "unpack_codes: ", m, " bytes cannot hold ", n,
              " codes of ", bits, " bits");
  auto sizes = p.sizes().vec();
  sizes.back() = n;
  at::Tensor codes = at::empty(sizes, p.options());
  const int64_t rows = m == 0 ? 0 : p.numel() / m;
  check_cuda(cuda::launch_unpack_codes(p.data_ptr<uint8_t>(), codes.data_ptr<uint8_t>(), rows, n, m,
                                       bits, current_stream(p)),
             "unpack_codes");
  return codes;
#else
  fail_no_cuda("unpack_codes");
#endif
}

}  // namespace calibq::kernels
