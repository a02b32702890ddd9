#include "core/models/vision_language_model.h"

#include <limits>

#include "core/util/error.h"
#include "core/util/shape.h"

namespace calibq {

std::string first_prefix(const WeightLoader& w, const std::vector<std::string>& prefixes, const std::string& probe) {
  for (const auto& p : prefixes)
    if (w.has(p + probe)) return p;
  return prefixes.front();
}

void VisionLanguageModel::load_decoder(WeightLoader& w, const std::vector<std::string>& prefixes,
                                       const std::vector<std::string>& lm_heads) {
  std::string head = lm_heads.front();
  for (const auto& n : lm_heads)
    if (w.has(n)) {
      head = n;
      break;
    }
  const std::string prefix = first_prefix(w, prefixes, "embed_tokens.weight");
  decoder_ = std::make_unique<LlamaDecoder>(config_.text, load_llama_decoder(w, config_.text, prefix, head));
}

std::vector<LayerKVCache> VisionLanguageModel::make_caches(const KVCacheConfig& kv) const {
  std::vector<LayerKVCache> caches;
  for (int64_t i = 0; i < config_.text.num_hidden_layers; ++i) caches.emplace_back(kv);
  return caches;
}

// Positions as transformers' forward numbers them: start .. start+len-1 (padding is not
// skipped in forward).
at::Tensor VisionLanguageModel::positions(int64_t batch, int64_t start, int64_t len) const {
  return at::arange(start, start + len, at::TensorOptions().dtype(at::kLong).device(device_)).unsqueeze(0).expand({batch, len});
}

at::Tensor VisionLanguageModel::prefill_mask(const ModelInputs& in, const at::Tensor& embeds) const {
  const int64_t b = embeds.size(0), t = embeds.size(1);
  auto opts = at::TensorOptions().dtype(embeds.scalar_type()).device(device_);
  // The dtype's lowest finite value, as transformers masks: a padded query row, whose keys
  // are all masked, then attends uniformly instead of turning into NaN (which -inf would do,
  // and which its K/V would carry into every other row).
  const double neg = embeds.scalar_type() == at::kHalf       ? -65504.0
                     : embeds.scalar_type() == at::kBFloat16 ? -3.3895313892515355e38
                     : embeds.scalar_type() == at::kDouble   ? std::numeric_limits<double>::lowest()
                                                             : std::numeric_limits<float>::lowest();
  at::Tensor mask = at::full({t, t}, neg, opts).triu(1).view({1, 1, t, t}).expand({b, 1, t, t}).clone();
  if (in.attention_mask.defined()) mask = mask.masked_fill(in.attention_mask.to(device_).view({b, 1, 1, t}) == 0, neg);
  return mask;
}

std::tuple<at::Tensor, int64_t, int64_t> VisionLanguageModel::input_embeddings(const ModelInputs& in) const {
  const std::string family = model_family_name(config_.family);
  at::Tensor ids = in.input_ids.to(device_);
  if (ids.dim() != 2) fail("{}: input_ids must be [batch, seq], got {}", family, shape_str(ids.sizes()));
  at::Tensor embeds = decoder_->embed(ids);
  at::Tensor is_image = ids == *config_.image_token_id;
  const int64_t n_image = is_image.sum().item<int64_t>();
  if (!in.pixel_values.defined()) {
    if (n_image > 0) fail("{}: {} image tokens but no pixel_values", family, n_image);
    return {embeds, ids.size(1), 0};
  }
  at::Tensor f = image_features(in.pixel_values.to(device_, dtype_));
  if (f.numel() / f.size(-1) != n_image)
    fail("{}: {} image tokens in input_ids but {} image features", family, n_image, f.numel() / f.size(-1));
  embeds = embeds.masked_scatter(is_image.unsqueeze(-1).expand_as(embeds), f.to(embeds.scalar_type()));
  // The cache holds one [system | visual | text] layout for the whole batch.
  for (int64_t r = 1; r < ids.size(0); ++r)
    if (!at::equal(is_image[r], is_image[0]))
      fail("{}: every sample of a batch must have its image tokens at the same positions", family);
  at::Tensor pos = is_image[0].nonzero().flatten();
  const int64_t sys = pos.numel() ? pos[0].item<int64_t>() : ids.size(1);
  return {embeds, sys, pos.numel()};
}

at::Tensor VisionLanguageModel::forward_logits(const ModelInputs& in) {
  std::vector<LayerKVCache> caches = make_caches({nullptr, nullptr, SegmentSet::parse("none")});
  auto [embeds, sys, vis] = input_embeddings(in);
  at::Tensor hidden = decoder_->prefill(embeds, positions(embeds.size(0), 0, embeds.size(1)), prefill_mask(in, embeds),
                                        caches, sys, vis);
  return decoder_->logits(hidden).to(at::kFloat);
}

at::Tensor VisionLanguageModel::generate_greedy(const ModelInputs& in, int64_t new_tokens, const KVCacheConfig& kv) {
  std::vector<LayerKVCache> caches = make_caches(kv);
  auto [embeds, sys, vis] = input_embeddings(in);
  const int64_t b = embeds.size(0), t = embeds.size(1);
  at::Tensor hidden = decoder_->prefill(embeds, positions(b, 0, t), prefill_mask(in, embeds), caches, sys, vis);
  at::Tensor ids = in.input_ids.to(device_);
  at::Tensor next = decoder_->logits(hidden.narrow(1, t - 1, 1)).argmax(-1);  // [B, 1]
  for (int64_t i = 0; i < new_tokens; ++i) {
    ids = at::cat({ids, next}, 1);
    if (i + 1 == new_tokens) break;
    hidden = decoder_->decode(decoder_->embed(next), positions(b, t + i, 1), caches);
    next = decoder_->logits(hidden).argmax(-1);
  }
  return ids;
}

}  // namespace calibq
