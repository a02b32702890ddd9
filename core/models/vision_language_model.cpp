#include "core/models/vision_language_model.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <random>

#include "core/models/sampling.h"

#ifdef CALIBQ_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#endif
#include "core/util/error.h"
#include "core/util/shape.h"

namespace calibq {

std::string first_prefix(const WeightLoader& w, const std::vector<std::string>& prefixes, const std::string& probe) {
  for (const auto& p : prefixes)
    if (w.has(p + probe)) return p;
  return prefixes.front();
}

void VisionLanguageModel::load_decoder(WeightLoader& w, const std::vector<std::string>& prefixes,
                                       const std::vector<std::string>& lm_heads, const DecoderNames& names) {
  std::string head = lm_heads.front();
  for (const auto& n : lm_heads)
    if (w.has(n)) {
      head = n;
      break;
    }
  const std::string prefix = first_prefix(w, prefixes, names.embed);
  decoder_ = std::make_unique<LlamaDecoder>(config_.text, load_llama_decoder(w, config_.text, prefix, head, names));
}

std::vector<LayerKVCache> VisionLanguageModel::make_caches(const KVCacheConfig& kv) const {
  std::vector<LayerKVCache> caches;
  for (int64_t i = 0; i < config_.text.num_hidden_layers; ++i) caches.emplace_back(kv);
  return caches;
}

at::Tensor VisionLanguageModel::mask_of(const ModelInputs& in) const {
  const auto opts = at::TensorOptions().dtype(at::kLong).device(device_);
  return in.attention_mask.defined() ? in.attention_mask.to(opts) : at::ones(in.input_ids.sizes(), opts);
}

VisionLanguageModel::RopePositions VisionLanguageModel::rope_positions(const ModelInputs& /*inputs*/,
                                                                       const at::Tensor& mask, bool generating) const {
  const int64_t b = mask.size(0), t = mask.size(1);
  if (!generating)  // transformers' forward: 0 .. T-1, padding not skipped
    return {at::arange(t, mask.options()).unsqueeze(0).expand({b, t}), at::full({b, 1}, t, mask.options())};
  // generate: the unmasked tokens counted (cumsum(mask) - 1), padded ones at 1.
  return {(mask.cumsum(1) - 1).masked_fill(mask == 0, 1), mask.sum(1, true)};
}

// The dtype's lowest finite value, as transformers masks: a padded query row, whose keys
// are all masked, then attends uniformly instead of turning into NaN (which -inf would do,
// and which its K/V would carry into every other row).
at::Tensor VisionLanguageModel::neg_inf() const {
  const double neg = dtype_ == at::kHalf       ? -65504.0
                     : dtype_ == at::kBFloat16 ? -3.3895313892515355e38
                     : dtype_ == at::kDouble   ? std::numeric_limits<double>::lowest()
                                               : std::numeric_limits<float>::lowest();
  return at::scalar_tensor(neg, at::TensorOptions().dtype(dtype_).device(device_));
}

at::Tensor VisionLanguageModel::prefill_mask(const ModelInputs& in, const at::Tensor& embeds) const {
  const int64_t b = embeds.size(0), t = embeds.size(1);
  // On CUDA an unpadded batch needs no mask tensor: the fused kernels mask causally themselves.
  if (embeds.is_cuda() && (!in.attention_mask.defined() || (in.attention_mask != 0).all().item<bool>())) return {};
  auto opts = at::TensorOptions().dtype(embeds.scalar_type()).device(device_);
  const double neg = neg_inf().item<double>();
  at::Tensor mask = at::full({t, t}, neg, opts).triu(1).view({1, 1, t, t}).expand({b, 1, t, t}).clone();
  if (in.attention_mask.defined()) mask = mask.masked_fill(in.attention_mask.to(device_).view({b, 1, 1, t}) == 0, neg);
  return mask;
}

VisionLanguageModel::Embedded VisionLanguageModel::input_embeddings(const ModelInputs& in) const {
  const std::string family = model_family_name(config_.family);
  at::Tensor ids = in.input_ids.to(device_);
  if (ids.dim() != 2) fail("{}: input_ids must be [batch, seq], got {}", family, shape_str(ids.sizes()));
  at::Tensor embeds = decoder_->embed(ids);
  at::Tensor is_image = ids == *config_.image_token_id;
  const int64_t n_image = is_image.sum().item<int64_t>();
  if (!in.pixel_values.defined()) {
    if (n_image > 0) fail("{}: {} image tokens but no pixel_values", family, n_image);
    return {embeds, ids.size(1), 0, true};
  }
  at::Tensor f = image_features(in.pixel_values.to(device_, dtype_), in.image_grid_thw);
  if (f.numel() / f.size(-1) != n_image)
    fail("{}: {} image tokens in input_ids but {} image features", family, n_image, f.numel() / f.size(-1));
  embeds = embeds.masked_scatter(is_image.unsqueeze(-1).expand_as(embeds), f.to(embeds.scalar_type()));
  // The cache holds one [system | visual | text] layout for the whole batch.
  for (int64_t r = 1; r < ids.size(0); ++r)
    if (!at::equal(is_image[r], is_image[0]))
      fail("{}: every sample of a batch must have its image tokens at the same positions", family);
  at::Tensor pos = is_image[0].nonzero().flatten();
  const int64_t sys = pos.numel() ? pos[0].item<int64_t>() : ids.size(1);
  const bool one_run = pos.numel() == 0 || pos[-1].item<int64_t>() - sys + 1 == pos.numel();
  return {embeds, sys, pos.numel(), one_run};
}

at::Tensor VisionLanguageModel::forward_logits(const ModelInputs& in) {
  std::vector<LayerKVCache> caches = make_caches({nullptr, nullptr, SegmentSet::parse("none")});
  const Embedded e = input_embeddings(in);
  at::Tensor hidden = decoder_->prefill(e.embeds, rope_positions(in, mask_of(in), false).positions,
                                        prefill_mask(in, e.embeds), caches, e.system_len, e.visual_len);
  return decoder_->logits(hidden).to(at::kFloat);
}

std::pair<int64_t, int64_t> VisionLanguageModel::observe_prefill(const ModelInputs& in, const PrefillObserver& observe) {
  std::vector<LayerKVCache> caches = make_caches({nullptr, nullptr, SegmentSet::parse("none")});
  const Embedded e = input_embeddings(in);
  decoder_->prefill(e.embeds, rope_positions(in, mask_of(in), false).positions, prefill_mask(in, e.embeds), caches,
                    e.system_len, e.visual_len, observe);
  return {e.system_len, e.visual_len};
}

at::Tensor VisionLanguageModel::generate_greedy(const ModelInputs& in, int64_t new_tokens, const KVCacheConfig& kv) {
  GenerationConfig gen;
  gen.max_new_tokens = new_tokens;  // greedy, no stop tokens: exactly new_tokens each
  GenerationResult r = generate(in, gen, kv);
  const int64_t b = in.input_ids.size(0);
  at::Tensor out = at::empty({b, new_tokens}, at::kLong);
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < new_tokens; ++j) out[i][j] = r.tokens[i][j];
  return at::cat({in.input_ids.cpu().to(at::kLong), out}, 1).to(device_);
}

namespace {
// Samples [begin, end) of a batch of `batch`: pixel rows split evenly over the samples (one
// image, or an equal number of tiles, per sample).
ModelInputs slice_inputs(const ModelInputs& in, int64_t begin, int64_t end, int64_t batch) {
  ModelInputs out;
  const int64_t n = end - begin;
  out.input_ids = in.input_ids.narrow(0, begin, n);
  if (in.attention_mask.defined()) out.attention_mask = in.attention_mask.narrow(0, begin, n);
  auto rows = [&](const at::Tensor& t, const char* name) {
    if (!t.defined()) return t;
    if (t.size(0) % batch != 0)
      fail("generate: {} has {} rows, not a whole number per sample of {} (micro-batched prefill needs as many "
           "images or tiles per sample)", name, t.size(0), batch);
    const int64_t r = t.size(0) / batch;
    return t.narrow(0, begin * r, n * r);
  };
  out.pixel_values = rows(in.pixel_values, "pixel_values");
  out.image_grid_thw = rows(in.image_grid_thw, "image_grid_thw");
  return out;
}
}  // namespace

// One decode step captured as a CUDA graph: the token ids and positions in static buffers,
// the caches appending at device-side positions (LayerKVCache::begin_graph_decode), so that
// replaying it runs every later step without the host issuing ~1,500 operations.
class DecodeGraph {
 public:
  static std::unique_ptr<DecodeGraph> make(const LlamaDecoder& decoder, std::vector<LayerKVCache>& caches,
                                           const at::Tensor& positions) {
#ifdef CALIBQ_WITH_CUDA
    // A graph is captured on one device. (Dynamic RoPE recomputes its frequencies on the device
    // from the positions, so its graph is right beyond the original length too.)
    if (!positions.is_cuda() || decoder.spans_devices()) return nullptr;
    // Every cache is checked before any switches: a partly switched set would decode wrongly.
    for (const auto& c : caches)
      if (!c.graph_decode_possible()) return nullptr;
    for (auto& c : caches) c.begin_graph_decode();
    auto g = std::unique_ptr<DecodeGraph>(new DecodeGraph(caches));
    g->ids_ = at::zeros({positions.size(0), 1}, positions.options());
    g->pos_ = positions.clone();
    at::cuda::CUDAStream side = at::cuda::getStreamFromPool(false, positions.device().index());
    at::cuda::CUDAStream main = at::cuda::getCurrentCUDAStream(positions.device().index());
    side.synchronize();
    main.synchronize();
    {
      at::cuda::CUDAStreamGuard guard(side);
      g->graph_.capture_begin();
      const at::Tensor hidden = decoder.decode(decoder.embed(g->ids_), g->pos_, caches);
      g->logits = decoder.logits(hidden).squeeze(1);
      g->pos_.add_(1);
      g->graph_.capture_end();
    }
    return g;
#else
    (void)decoder, (void)caches, (void)positions;
    return nullptr;
#endif
  }
  // One decode step for `ids` [B, 1] (on the host: copied straight into the graph's buffer):
  // logits lands in `logits`.
  void step(const at::Tensor& ids) {
#ifdef CALIBQ_WITH_CUDA
    ids_.copy_(ids);
    graph_.replay();
    for (auto& c : caches_) c.advance_graph_decode(1);
#else
    (void)ids;
#endif
  }
  at::Tensor logits;

 private:
  explicit DecodeGraph(std::vector<LayerKVCache>& caches) : caches_(caches) {}
  std::vector<LayerKVCache>& caches_;
  at::Tensor ids_, pos_;
#ifdef CALIBQ_WITH_CUDA
  at::cuda::CUDAGraph graph_;
#endif
};

GenerationResult VisionLanguageModel::generate(const ModelInputs& in, const GenerationConfig& gen, const KVCacheConfig& kv) {
  const int64_t b = in.input_ids.size(0);
  if (gen.prefill_micro_batch <= 0 || gen.prefill_micro_batch >= b)
    return generate_parts(b, [&](int64_t, int64_t) { return in; }, gen, kv);
  return generate_parts(b, [&](int64_t begin, int64_t end) { return slice_inputs(in, begin, end, b); }, gen, kv);
}

GenerationResult VisionLanguageModel::generate_parts(int64_t b, const InputsOf& part, const GenerationConfig& gen,
                                                     const KVCacheConfig& kv) {
  using clock = std::chrono::steady_clock;
  if (gen.max_new_tokens <= 0) fail("generate: max_new_tokens must be positive, got {}", gen.max_new_tokens);
  if (b <= 0) fail("generate: empty batch");
  const auto t0 = clock::now();
  const int64_t micro = gen.prefill_micro_batch > 0 ? std::min(gen.prefill_micro_batch, b) : b;
  // Prefill each micro-batch; its caches quantize their segments right away.
  std::vector<std::vector<LayerKVCache>> parts;
  std::vector<int64_t> part_of;  // micro-batch index -> the prefilled part standing for it
  std::vector<at::Tensor> lasts, masks, nexts;
  int64_t sys = -1, vis = -1, t = -1;
  // The first sample's system tokens: micro-batches whose samples all have the same (and no
  // padding there) hold their system segment once, and join into one copy for the batch.
  at::Tensor system_ids;
  for (int64_t begin = 0; begin < b; begin += micro) {
    const int64_t end = std::min(b, begin + micro);
    if (gen.reuse_first_prefill && begin > 0 && end - begin == micro) {
      part_of.push_back(0);
      lasts.push_back(lasts.front());
      masks.push_back(masks.front());
      nexts.push_back(nexts.front());
      continue;
    }
    const ModelInputs in = part(begin, end);
    if (in.input_ids.size(0) != end - begin)
      fail("generate: the inputs of samples [{}, {}) hold {} samples", begin, end, in.input_ids.size(0));
    std::vector<LayerKVCache> caches = make_caches(kv);
    const Embedded e = input_embeddings(in);
    const at::Tensor& embeds = e.embeds;
    const int64_t s = e.system_len, v = e.visual_len;
    // The cache's [system | visual | text] layout needs the image tokens in one run (several
    // images with text between them would put that text in the visual segment).
    if (!e.visual_one_run)
      fail("generate: the {} image tokens of a sample must form one run (the KV cache's visual segment); "
           "these are spread with other tokens between them (several images per sample)", v);
    if (t >= 0 && (s != sys || v != vis || embeds.size(1) != t))
      fail("generate: micro-batches differ in layout ({} system, {} image, {} tokens against {}, {}, {})", s, v,
           embeds.size(1), sys, vis, t);
    sys = s, vis = v, t = embeds.size(1);
    const at::Tensor mask = mask_of(in);
    const RopePositions pos = rope_positions(in, mask, true);
    bool share_system = false;
    if (sys > 0) {
      const at::Tensor ids = in.input_ids.narrow(1, 0, sys);
      if (!system_ids.defined()) system_ids = ids.narrow(0, 0, 1).clone();
      share_system = (ids == system_ids.to(ids.device())).all().item<bool>() &&
                     (mask.narrow(1, 0, sys) != 0).all().item<bool>();
    }
    at::Tensor hidden =
        decoder_->prefill(embeds, pos.positions, prefill_mask(in, embeds), caches, sys, vis, {}, share_system);
    lasts.push_back(decoder_->logits(hidden.narrow(1, t - 1, 1)).squeeze(1));
    masks.push_back(mask);
    nexts.push_back(pos.next);
    part_of.push_back(static_cast<int64_t>(parts.size()));
    parts.push_back(std::move(caches));
  }
  GenerationResult r;
  r.prefill_parts = static_cast<int64_t>(parts.size());
  std::vector<LayerKVCache> caches;
  if (part_of.size() == 1) {
    caches = std::move(parts.front());
  } else {
    // Join layer by layer, dropping each layer's parts as soon as it is joined.
    for (size_t layer = 0; layer < static_cast<size_t>(config_.text.num_hidden_layers); ++layer) {
      std::vector<const LayerKVCache*> ptrs;
      for (int64_t p : part_of) ptrs.push_back(&parts[p][layer]);
      caches.push_back(LayerKVCache::concat_batch(ptrs));
      for (auto& p : parts) p[layer] = LayerKVCache(kv);
    }
  }
  parts.clear();
  for (auto& c : caches) c.reserve(gen.max_new_tokens);
  at::Tensor last = lasts.size() == 1 ? lasts.front() : at::cat(lasts, 0);
  const at::Tensor mask = masks.size() == 1 ? masks.front() : at::cat(masks, 0);
  lasts.clear();
  // Padded keys stay masked in every decode step; without padding no mask is needed.
  const bool padded = (mask == 0).any().item<bool>();
  at::Tensor key_mask;
  if (padded)
    key_mask = at::zeros({b, 1, 1, t}, mask.options().dtype(dtype_)).masked_fill(mask.view({b, 1, 1, t}) == 0, neg_inf());
  at::Tensor next_pos = nexts.size() == 1 ? nexts.front() : at::cat(nexts, 0);  // [B, 1]
  nexts.clear();

  r.tokens.resize(b);
  r.stopped.assign(b, false);
  for (const auto& c : caches) {
    r.kv_bytes += c.bytes();
    r.kv_fp16_bytes += c.fp16_bytes();
  }
  std::mt19937_64 rng(gen.seed);
  const SamplingSettings sampling{gen.temperature, gen.top_p};
  std::unique_ptr<DecodeGraph> graph;
  auto t1 = clock::now();
  for (int64_t i = 0; i < gen.max_new_tokens; ++i) {
    std::vector<int64_t> next = next_tokens(last, sampling, rng);  // synchronizes with the device
    if (i == 0) t1 = clock::now();
    bool all_done = true;
    for (int64_t s = 0; s < b; ++s) {
      if (r.stopped[s] || static_cast<int64_t>(r.tokens[s].size()) == gen.max_new_tokens) {
        next[s] = gen.pad_id;
        continue;
      }
      if (std::find(gen.stop_ids.begin(), gen.stop_ids.end(), next[s]) != gen.stop_ids.end()) {
        r.stopped[s] = true;
        next[s] = gen.pad_id;
        continue;
      }
      r.tokens[s].push_back(next[s]);
      if (static_cast<int64_t>(r.tokens[s].size()) < gen.max_new_tokens) all_done = false;
    }
    if (all_done) break;
    const at::Tensor host_ids = at::tensor(next, at::kLong).view({b, 1});
    if (graph) {
      graph->step(host_ids);
      last = graph->logits;
      ++r.steps;
      continue;
    }
    if (padded) key_mask = at::cat({key_mask, at::zeros({b, 1, 1, 1}, key_mask.options())}, 3);
    at::Tensor hidden = decoder_->decode(decoder_->embed(host_ids.to(device_)), next_pos, caches, key_mask);
    last = decoder_->logits(hidden).squeeze(1);
    next_pos = next_pos + 1;
    ++r.steps;
    // After one eager step (which also warms the kernels and cuBLAS up), the rest replay a graph.
    if (i == 0 && gen.cuda_graph && !padded && gen.max_new_tokens > 2) graph = DecodeGraph::make(*decoder_, caches, next_pos);
    r.cuda_graph = graph != nullptr;
  }
  const auto t2 = clock::now();
  r.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  r.decode_seconds = std::chrono::duration<double>(t2 - t1).count();
  return r;
}

}  // namespace calibq
