// One decode token appended to a KV buffer at a position that lives on the device, and the
// position advanced: the KV cache's append in a captured CUDA graph, where the host does not
// know the position when the graph replays. On CUDA one launch where a copy of the strided
// values, index_copy_ of keys and of values and two counter increments took five (a few
// microseconds each, 32 layers a step).
#pragma once

#include <ATen/ATen.h>

namespace calibq::kernels {

// k_store, v_store: [B, H, capacity, D] contiguous, one dtype; k, v: [B, H, 1, D] in that dtype,
// any strides. length: int32 [1] on the buffers' device. Row `length` of every (b, h) gets the
// token, then length += 1; a full buffer (length == capacity) is left as it is, length too
// (the cache checks capacity on the host). done: int32 [1] on that device, zero before and
// after (the CUDA kernel's count of finished blocks).
void append_token(at::Tensor& k_store, at::Tensor& v_store, const at::Tensor& k, const at::Tensor& v, at::Tensor& length,
                  at::Tensor& done);

// The plain-loop reference (the specification), CPU tensors.
void append_token_cpu(at::Tensor& k_store, at::Tensor& v_store, const at::Tensor& k, const at::Tensor& v, at::Tensor& length);

// The checks both paths make (one clear error naming the tensor and its sizes).
void check_append_token_inputs(const at::Tensor& k_store, const at::Tensor& v_store, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& length);

}  // namespace calibq::kernels
