// A multimodal model as the harness drives it: prefill logits, and greedy generation
// with the KV quantizers of the quantization library in every layer. One implementation
// per model family (llava.cpp, ...); load_model picks it from config.json.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/config/hf_config.h"
#include "core/kv/kv_cache.h"
#include "core/models/llama_decoder.h"

namespace calibq {

// The tensors transformers' forward takes.
struct ModelInputs {
  at::Tensor input_ids;       // [B, T] int64
  at::Tensor attention_mask;  // [B, T]; undefined: all ones
  at::Tensor pixel_values;    // family-specific layout; undefined: text only
  at::Tensor image_grid_thw;  // Qwen2-VL
};

// How generate() picks and stops: greedy when temperature is 0, else sampling from
// softmax(logits / temperature) restricted to the top-p nucleus, seeded (the same tokens
// for the same seed on every device and LibTorch version: the draw is calibq's own).
struct GenerationConfig {
  int64_t max_new_tokens = 32;
  double temperature = 0.0;
  double top_p = 1.0;
  uint64_t seed = 0;
  std::vector<int64_t> stop_ids;  // a sample ends at the first of these (not included in its tokens)
  int64_t pad_id = 0;             // fed to finished samples while the others go on
  // Prefill in micro-batches of this many samples (0: the whole batch at once), each
  // micro-batch's cache quantized right after its prefill; the caches then join and the
  // whole batch decodes together. For batches whose prefill activations do not fit at once.
  int64_t prefill_micro_batch = 0;
  // Benchmarks only: prefill the first micro-batch alone and let its caches stand for every
  // micro-batch. Equal to a full prefill when every sample has the same inputs (as a
  // benchmark's synthetic batch does); prefill_seconds then covers that one micro-batch.
  bool reuse_first_prefill = false;
  // On CUDA, decode steps after the first replay one captured CUDA graph (the host's
  // per-operation cost leaves the step), where the batch has no padding and every layer's
  // cache takes the decode kernel; else, and on the CPU, every step runs eagerly.
  bool cuda_graph = true;
};

struct GenerationResult {
  std::vector<std::vector<int64_t>> tokens;  // per sample: the new tokens, stop token excluded
  std::vector<bool> stopped;                 // per sample: ended on a stop token (else on the length)
  int64_t steps = 0;                         // decode steps run (forward passes after prefill)
  int64_t prefill_parts = 0;                 // micro-batches prefilled (1: the batch at once)
  bool cuda_graph = false;                   // decode steps replayed a captured CUDA graph
  double prefill_seconds = 0, decode_seconds = 0;
  SegmentBytes kv_bytes;   // the caches of all layers after prefill, as stored
  int64_t kv_fp16_bytes = 0;  // the same caches in fp16
};

class MultimodalModel {
 public:
  virtual ~MultimodalModel() = default;
  // Logits of every position, float32 [B, T, V], as transformers' forward gives them.
  virtual at::Tensor forward_logits(const ModelInputs& inputs) = 0;
  // The input ids followed by `new_tokens` greedy tokens (no early stop), [B, T + N].
  // `kv` configures every layer's cache (quantizers and segments); the visual segment is
  // where the image tokens are.
  virtual at::Tensor generate_greedy(const ModelInputs& inputs, int64_t new_tokens, const KVCacheConfig& kv) = 0;
  // Batched generation. Padding (attention_mask 0) may sit anywhere: positions count the
  // unmasked tokens, as transformers' generate numbers them, and padded keys are masked in
  // every step. Every sample must have its image tokens at the same positions.
  virtual GenerationResult generate(const ModelInputs& inputs, const GenerationConfig& gen, const KVCacheConfig& kv) = 0;
  // The same for a batch given by parts: `part(begin, end)` returns the inputs of samples
  // [begin, end) (asked once per prefill micro-batch, so that a large batch's images need
  // never be held at once). Every sample must have the same [system | image | text] layout.
  using InputsOf = std::function<ModelInputs(int64_t begin, int64_t end)>;
  virtual GenerationResult generate_parts(int64_t batch, const InputsOf& part, const GenerationConfig& gen,
                                          const KVCacheConfig& kv) = 0;
  // Runs prefill in full precision, showing `observe` every layer's q, k (after RoPE) and v;
  // returns the system and visual segment lengths (tokens before the image, image tokens).
  virtual std::pair<int64_t, int64_t> observe_prefill(const ModelInputs& inputs, const PrefillObserver& observe) = 0;
  // The RoPE positions forward_logits gives the decoder: [B, T], or [3, B, T] (t, h, w) for
  // M-RoPE (Qwen2-VL), as transformers' forward computes them.
  virtual at::Tensor forward_positions(const ModelInputs& inputs) = 0;
  virtual const ModelConfig& config() const = 0;
  // "llava: 87 tensors loaded, 2 ignored, 0 renamed (0.6 MiB)".
  virtual const std::string& load_report() const = 0;
};

// `dir` holds config.json and the safetensors weights. Throws calibq::Error naming the
// file and tensor for anything missing, extra or misshapen.
std::unique_ptr<MultimodalModel> load_model(const std::string& dir, at::ScalarType dtype = at::kFloat,
                                            at::Device device = at::kCPU);
// A model larger than one GPU: the decoder's layers spread evenly over `devices` in order (the
// first also holds the vision tower, the projector and the embeddings; the last the final norm
// and the head); hidden states move between them at the layer boundaries.
std::unique_ptr<MultimodalModel> load_model(const std::string& dir, at::ScalarType dtype,
                                            const std::vector<at::Device>& devices);
// The architecture `config` describes with random weights (N(0, 0.02^2), seeded): timing at
// real sizes without a checkpoint (architectures.h names the real configurations).
std::unique_ptr<MultimodalModel> random_model(const ModelConfig& config, at::ScalarType dtype, at::Device device,
                                              uint64_t seed = 0);

}  // namespace calibq
