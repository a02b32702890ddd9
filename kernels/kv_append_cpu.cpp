// Plain-loop reference of the token append (kv_append.h): the specification the CUDA kernel is tested against.
#include <cstring>
#include <utility>

#include "kernels/cuda_dispatch.h"
#include "kernels/kv_append.h"

namespace calibq::kernels {

void check_append_token_inputs(const at::Tensor& k_store, const at::Tensor& v_store, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& length) {
  TORCH_CHECK(k_store.dim() == 4 && k_store.sizes() == v_store.sizes() && k_store.is_contiguous() && v_store.is_contiguous(),
              "append_token: the key and value buffers must be contiguous [batch, heads, capacity, head_dim] of one shape, got ",
              k_store.sizes(), " and ", v_store.sizes());
  for (const at::Tensor* t : {&k, &v})
    TORCH_CHECK(t->dim() == 4 && t->size(0) == k_store.size(0) && t->size(1) == k_store.size(1) && t->size(2) == 1 &&
                    t->size(3) == k_store.size(3),
                "append_token: the ", t == &k ? "keys" : "values", " must be [", k_store.size(0), ", ", k_store.size(1), ", 1, ",
                k_store.size(3), "], got ", t->sizes());
  for (const at::Tensor* t : {&v_store, &k, &v})
    TORCH_CHECK(t->scalar_type() == k_store.scalar_type() && t->device() == k_store.device(),
                "append_token: buffers, keys and values must share dtype and device (", k_store.scalar_type(), ")");
  TORCH_CHECK(length.numel() == 1 && length.scalar_type() == at::kInt && length.device() == k_store.device(),
              "append_token: the length must be one int32 on the buffers' device");
}

void append_token_cpu(at::Tensor& k_store, at::Tensor& v_store, const at::Tensor& k, const at::Tensor& v, at::Tensor& length) {
  check_append_token_inputs(k_store, v_store, k, v, length);
  TORCH_CHECK(!k_store.is_cuda(), "append_token_cpu: CPU tensors only");
  const int32_t pos = length.data_ptr<int32_t>()[0];
  const int64_t B = k_store.size(0), H = k_store.size(1), cap = k_store.size(2), D = k_store.size(3);
  if (pos < 0 || pos >= cap) return;
  const int64_t elem = k_store.element_size();
  for (auto [store, src] : {std::pair<at::Tensor*, const at::Tensor*>{&k_store, &k}, {&v_store, &v}}) {
    char* dst = static_cast<char*>(store->data_ptr());
    const char* s = static_cast<const char*>(src->data_ptr());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d)
          std::memcpy(dst + (((b * H + h) * cap + pos) * D + d) * elem,
                      s + (b * src->stride(0) + h * src->stride(1) + d * src->stride(3)) * elem, elem);
  }
  length.data_ptr<int32_t>()[0] = pos + 1;
}

}  // namespace calibq::kernels
