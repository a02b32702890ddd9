// Device dispatch of the token append: the CUDA kernel for CUDA tensors (when built with CUDA),
// the plain-loop reference otherwise.
#include "kernels/kv_append.h"

#include "kernels/cuda_dispatch.h"

#ifdef CALIBQ_WITH_CUDA
#include "kernels/kv_append_cuda.h"
#endif

namespace calibq::kernels {

void append_token(at::Tensor& k_store, at::Tensor& v_store, const at::Tensor& k, const at::Tensor& v, at::Tensor& length,
                  at::Tensor& done) {
  if (!k_store.is_cuda()) return append_token_cpu(k_store, v_store, k, v, length);
#ifdef CALIBQ_WITH_CUDA
  check_append_token_inputs(k_store, v_store, k, v, length);
  TORCH_CHECK(done.numel() == 1 && done.scalar_type() == at::kInt && done.device() == k_store.device(),
              "append_token: the block counter must be one int32 on the buffers' device");
  TORCH_CHECK(k_store.element_size() == 2 || k_store.element_size() == 4, "append_token: 16- or 32-bit elements, got ",
              k_store.scalar_type());
  cuda::AppendTokenArgs a;
  a.k_store = k_store.data_ptr();
  a.v_store = v_store.data_ptr();
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  for (int i = 0; i < 4; ++i) {
    a.k_stride[i] = k.stride(i);
    a.v_stride[i] = v.stride(i);
  }
  a.B = k_store.size(0);
  a.H = k_store.size(1);
  a.capacity = k_store.size(2);
  a.D = k_store.size(3);
  a.element_bytes = static_cast<int>(k_store.element_size());
  a.length = length.data_ptr<int32_t>();
  a.done = done.data_ptr<int32_t>();
  check_cuda(cuda::launch_append_token(a, current_stream(k_store)), "append_token");
#else
  (void)done;
  fail_no_cuda("append_token");
#endif
}

}  // namespace calibq::kernels
