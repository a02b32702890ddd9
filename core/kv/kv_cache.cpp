#include "core/kv/kv_cache.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <sstream>

#include "core/quant/registry.h"
#include "core/util/error.h"
#include "core/util/shape.h"
#include "kernels/cuda_dispatch.h"
#include "kernels/kv_append.h"

namespace calibq {

namespace {
// Row 0 of x [B, ...] held once and expanded over `batch` rows (batch stride 0).
at::Tensor held_once(const at::Tensor& x, int64_t batch) {
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes[0] = batch;
  return x.narrow(0, 0, 1).contiguous().expand(sizes);
}
// Bytes a full-precision block holds: one row when it is shared over the batch (stride 0).
// Read from the storage, not from Block::shared, so that bytes() measures what is held.
int64_t held_bytes(const at::Tensor& x) {
  const bool shared = x.defined() && x.dim() == 4 && x.size(0) > 1 && x.stride(0) == 0;
  return shared ? static_cast<int64_t>(x.nbytes()) / x.size(0) : static_cast<int64_t>(x.nbytes());
}
}  // namespace

const char* segment_name(Segment s) {
  switch (s) {
    case Segment::System: return "system";
    case Segment::Visual: return "visual";
    case Segment::Text: return "text";
  }
  return "?";
}

std::string SegmentSet::to_string() const {
  if (on[0] && on[1] && on[2]) return "all";
  std::vector<std::string> names;
  for (Segment s : {Segment::System, Segment::Visual, Segment::Text})
    if (contains(s)) names.push_back(segment_name(s));
  return names.empty() ? "none" : fmt::format("{}", fmt::join(names, ","));
}

SegmentSet SegmentSet::parse(const std::string& text, const std::string& where) {
  SegmentSet set;
  set.on = {false, false, false};
  if (text == "all") {
    set.on = {true, true, true};
    return set;
  }
  if (text == "none") return set;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "system") set.on[0] = true;
    else if (item == "visual") set.on[1] = true;
    else if (item == "text") set.on[2] = true;
    else
      fail("{}segment '{}' is not one of system, visual, text (or all, none)", where.empty() ? "" : where + ": ", item);
  }
  return set;
}

LayerKVCache::LayerKVCache(KVCacheConfig config) : config_(std::move(config)) {
  const bool kd = config_.key && config_.key->name() == "token_drop";
  const bool vd = config_.value && config_.value->name() == "token_drop";
  if (kd != vd || (kd && config_.key->options().values() != config_.value->options().values()))
    fail("token_drop drops tokens from keys and values together: give it to both, with the same options "
         "(keys: {}, values: {})",
         config_.key ? config_.key->label() : "none", config_.value ? config_.value->label() : "none");
}

void LayerKVCache::prefill(const at::Tensor& k, const at::Tensor& v, int64_t system_len, int64_t visual_len,
                           const at::Tensor& visual_importance, bool share_system) {
  check_kv_tensor(k, "KV cache prefill (keys)");
  check_kv_tensor(v, "KV cache prefill (values)");
  if (k.sizes() != v.sizes())
    fail("KV cache prefill: keys {} and values {} differ in shape", shape_str(k.sizes()),
         shape_str(v.sizes()));
  const int64_t n = k.size(2);
  if (system_len < 0 || visual_len < 0 || system_len + visual_len > n)
    fail("KV cache prefill: system ({}) + visual ({}) tokens exceed the {} tokens given", system_len, visual_len, n);
  blocks_.clear();
  batch_ = k.size(0);
  kv_heads_ = k.size(1);
  head_dim_ = k.size(3);
  length_ = n;
  const std::array<std::pair<Segment, int64_t>, 3> parts = {
      std::pair{Segment::System, system_len}, {Segment::Visual, visual_len}, {Segment::Text, n - system_len - visual_len}};
  int64_t begin = 0;
  for (const auto& [segment, len] : parts) {
    if (len == 0) continue;
    Block b;
    b.segment = segment;
    b.begin = begin;
    b.length = len;
    at::Tensor ks = k.narrow(2, begin, len), vs = v.narrow(2, begin, len);
    if (config_.quantized.contains(segment) && (config_.key || config_.value)) {
      QuantContext ctx;
      if (segment == Segment::Visual) ctx.importance = visual_importance;
      // A role without a quantizer stays as it is, wrapped so that the block is uniform.
      b.qk = config_.key ? config_.key->quantize(ks, ctx) : nullptr;
      b.qv = config_.value ? config_.value->quantize(vs, ctx) : nullptr;
      if (!b.qk) b.k = ks.contiguous();
      if (!b.qv) b.v = vs.contiguous();
      if (segment == Segment::Visual && b.qk && b.qv) {
        b.kernel_k = b.qk->packed_kv();
        b.kernel_v = b.qv->packed_kv();
        if (b.kernel_v && b.kernel_v->bits == 1 && k.is_cuda() && head_dim_ % 32 == 0)
          b.kernel_v->token_words = kernels::token_words(b.kernel_v->packed, len);
      }
    } else if (segment == Segment::System && share_system) {
      b.shared = true;
      b.k = held_once(ks, ks.size(0));
      b.v = held_once(vs, vs.size(0));
    } else {
      b.k = ks.contiguous();
      b.v = vs.contiguous();
    }
    blocks_.push_back(std::move(b));
    begin += len;
  }
}

void LayerKVCache::append(const at::Tensor& k, const at::Tensor& v) {
  check_kv_tensor(k, "KV cache append (keys)");
  check_kv_tensor(v, "KV cache append (values)");
  if (blocks_.empty()) fail("KV cache append: no prefill yet");
  if (graph_len_.defined()) {
    // Graph decoding: the position lives on the device (one kernel writes the token there and
    // advances it); the host catches up in advance_graph_decode.
    if (k.size(2) != 1) fail("KV cache append: graph decoding appends one token at a time, got {}", k.size(2));
    Block& last = blocks_.back();
    kernels::append_token(last.k_store, last.v_store, k, v, graph_len_, graph_done_);
    return;
  }
  if (k.sizes() != v.sizes() || k.size(1) != kv_heads_ || k.size(3) != head_dim_)
    fail("KV cache append: expected [B, {}, T, {}] keys and values, got {} and {}", kv_heads_, head_dim_,
         shape_str(k.sizes()), shape_str(v.sizes()));
  if (blocks_.back().segment != Segment::Text || blocks_.back().qk || blocks_.back().qv) {
    Block b;
    b.segment = Segment::Text;
    b.begin = length_;
    b.k = at::empty({batch_, kv_heads_, 0, head_dim_}, k.options());
    b.v = at::empty({batch_, kv_heads_, 0, head_dim_}, v.options());
    blocks_.push_back(std::move(b));
  }
  Block& last = blocks_.back();
  const int64_t t = k.size(2), need = last.length + t;
  if (!last.k_store.defined() || last.k_store.size(2) < need)
    grow_store(last, std::max<int64_t>({need, 2 * last.length, 64, last.length + reserved_}));
  last.k_store.narrow(2, last.length, t).copy_(k);
  last.v_store.narrow(2, last.length, t).copy_(v);
  last.length = need;
  last.k = last.k_store.narrow(2, 0, need);
  last.v = last.v_store.narrow(2, 0, need);
  length_ += t;
}

bool LayerKVCache::graph_decode_possible() const {
  if (blocks_.empty() || graph_len_.defined()) return false;
  const Block& last = blocks_.back();
  if (last.segment != Segment::Text || last.qk || last.qv || !last.k_store.defined() || !last.k.is_cuda()) return false;
  return decode_kernel_inputs(at::empty({batch_, kv_heads_, 1, head_dim_}, last.k.options()), 1.0).has_value();
}

void LayerKVCache::begin_graph_decode() {
  if (!graph_decode_possible())
    fail("KV cache: graph decoding needs CUDA, a reserved text buffer and a layout the decode kernel takes");
  const Block& last = blocks_.back();
  graph_len_ = at::full({1}, last.length, last.k.options().dtype(at::kInt));
  graph_done_ = at::zeros({1}, last.k.options().dtype(at::kInt));
}

void LayerKVCache::advance_graph_decode(int64_t tokens) {
  if (!graph_len_.defined()) fail("KV cache: advance_graph_decode without begin_graph_decode");
  Block& last = blocks_.back();
  if (last.length + tokens > last.k_store.size(2))
    fail("KV cache: graph decoding ran past the reserved {} tokens", last.k_store.size(2));
  last.length += tokens;
  last.k = last.k_store.narrow(2, 0, last.length);
  last.v = last.v_store.narrow(2, 0, last.length);
  length_ += tokens;
}

void LayerKVCache::reserve(int64_t tokens) {
  if (tokens < 0) fail("KV cache reserve: {} tokens", tokens);
  reserved_ = tokens;
  if (blocks_.empty()) return;
  Block& last = blocks_.back();
  if (last.segment != Segment::Text || last.qk || last.qv) return;  // append makes the block with the reserve
  const int64_t capacity = last.length + tokens;
  if (last.k_store.defined() && last.k_store.size(2) >= capacity) return;
  grow_store(last, capacity);
}

void LayerKVCache::grow_store(Block& b, int64_t capacity) const {
  at::Tensor ks = at::empty({batch_, kv_heads_, capacity, head_dim_}, b.k.options());
  at::Tensor vs = at::empty({batch_, kv_heads_, capacity, head_dim_}, b.v.options());
  ks.narrow(2, 0, b.length).copy_(b.k);
  vs.narrow(2, 0, b.length).copy_(b.v);
  b.k_store = ks;
  b.v_store = vs;
  b.k = ks.narrow(2, 0, b.length);
  b.v = vs.narrow(2, 0, b.length);
}

LayerKVCache LayerKVCache::concat_batch(const std::vector<const LayerKVCache*>& parts) {
  if (parts.empty()) fail("KV cache: no micro-batches to join");
  const LayerKVCache& first = *parts.front();
  LayerKVCache out(first.config_);
  out.length_ = first.length_;
  out.kv_heads_ = first.kv_heads_;
  out.head_dim_ = first.head_dim_;
  for (const LayerKVCache* pp : parts) {
    const LayerKVCache& p = *pp;
    if (p.blocks_.size() != first.blocks_.size() || p.length_ != first.length_ || p.kv_heads_ != first.kv_heads_ ||
        p.head_dim_ != first.head_dim_)
      fail("KV cache: micro-batches to join differ in layout ({} and {} tokens, {} and {} blocks)", first.length_,
           p.length_, first.blocks_.size(), p.blocks_.size());
    for (size_t i = 0; i < p.blocks_.size(); ++i)
      if (p.blocks_[i].segment != first.blocks_[i].segment || p.blocks_[i].length != first.blocks_[i].length)
        fail("KV cache: micro-batches to join differ in their {} segment", segment_name(first.blocks_[i].segment));
    out.batch_ += p.batch_;
  }
  for (size_t i = 0; i < first.blocks_.size(); ++i) {
    const Block& f = first.blocks_[i];
    Block b;
    b.segment = f.segment;
    b.begin = f.begin;
    b.length = f.length;
    // Shared in every part (the same system tokens throughout): one copy for the joined batch.
    bool shared = true;
    for (const LayerKVCache* p : parts) shared = shared && p->blocks_[i].shared;
    auto join_full = [&](at::Tensor Block::*member) {
      std::vector<at::Tensor> xs;
      for (const LayerKVCache* p : parts) xs.push_back(p->blocks_[i].*member);
      if (!xs.front().defined()) return at::Tensor();
      return shared ? held_once(xs.front(), out.batch_) : at::cat(xs, 0);
    };
    b.shared = shared;
    auto join_quantized = [&](std::unique_ptr<QuantizedTensor> Block::*member) -> std::unique_ptr<QuantizedTensor> {
      if (!(f.*member)) return nullptr;
      std::vector<const QuantizedTensor*> more;
      for (size_t j = 1; j < parts.size(); ++j) more.push_back((parts[j]->blocks_[i].*member).get());
      return (f.*member)->concat_batch(more);
    };
    b.k = join_full(&Block::k);
    b.v = join_full(&Block::v);
    b.qk = join_quantized(&Block::qk);
    b.qv = join_quantized(&Block::qv);
    if (f.kernel_k && f.kernel_v && b.qk && b.qv) {
      b.kernel_k = b.qk->packed_kv();
      b.kernel_v = b.qv->packed_kv();
      if (b.kernel_v && f.kernel_v->token_words.defined()) {
        std::vector<at::Tensor> words;
        for (const LayerKVCache* p : parts) words.push_back(p->blocks_[i].kernel_v->token_words);
        b.kernel_v->token_words = at::cat(words, 0);
      }
    }
    out.blocks_.push_back(std::move(b));
  }
  return out;
}

std::vector<at::Tensor> LayerKVCache::block_scores(const at::Tensor& qf) const {
  std::vector<at::Tensor> out;
  for (const Block& b : blocks_) {
    at::Tensor s = b.qk ? b.qk->scores(qf) : at::matmul(qf, b.k.to(at::kFloat).transpose(-1, -2));
    out.push_back(s);
  }
  return out;
}

at::Tensor LayerKVCache::scores(const at::Tensor& q, double scale) const {
  if (blocks_.empty()) fail("KV cache: attention before prefill");
  if (q.dim() != 4 || q.size(3) != head_dim_)
    fail("KV cache attention: expected queries [B, Hq, T, {}], got {}", head_dim_, shape_str(q.sizes()));
  const int64_t hq = q.size(1), t = q.size(2);
  at::Tensor qf = fold_query_heads(q.to(at::kFloat) * scale, kv_heads_);
  std::vector<at::Tensor> parts = block_scores(qf);
  for (size_t i = 0; i < parts.size(); ++i) {
    parts[i] = unfold_query_heads(parts[i], hq, t);
    if (blocks_[i].segment == Segment::Visual && blocks_[i].qk) parts[i] = config_.key->calibrate_scores(parts[i]);
  }
  return at::cat(parts, -1);
}

std::optional<kernels::DecodeAttentionInputs> LayerKVCache::decode_kernel_inputs(const at::Tensor& q, double scale,
                                                                                const at::Tensor& additive_mask) const {
  if (graph_len_.defined() && additive_mask.defined()) fail("KV cache: graph decoding takes no attention mask");
  if (blocks_.empty() || q.dim() != 4 || q.size(2) != 1 || q.size(3) != head_dim_ || q.size(0) != batch_) return std::nullopt;
  if (!kernels::decode_attention_cuda_supports(q.size(1), kv_heads_, head_dim_)) return std::nullopt;
  at::Tensor mask;  // [B, length] float32
  if (additive_mask.defined()) {
    const auto& m = additive_mask;
    if (m.dim() != 4 || m.size(1) != 1 || m.size(2) != 1 || m.size(3) != length_ || (m.size(0) != 1 && m.size(0) != batch_))
      return std::nullopt;
    mask = m.to(at::kFloat).reshape({m.size(0), length_}).expand({batch_, length_});
  }
  kernels::DecodeAttentionInputs in;
  in.q = q.squeeze(2);
  in.scale = scale;
  for (const Block& b : blocks_) {
    if (!b.qk && !b.qv) {
      if (b.k.scalar_type() != q.scalar_type() || b.v.scalar_type() != q.scalar_type()) return std::nullopt;
      kernels::FullKV f{b.k, b.v, {}, {}};
      // Graph decoding: the whole text buffer, its valid length on the device.
      if (graph_len_.defined() && &b == &blocks_.back()) f = {b.k_store, b.v_store, {}, graph_len_};
      if (mask.defined()) f.mask = mask.narrow(1, b.begin, b.length).contiguous();
      in.full.push_back(f);
      continue;
    }
    if (in.has_packed || b.segment != Segment::Visual || !b.kernel_k || !b.kernel_v) return std::nullopt;
    if (b.kernel_k->bits != b.kernel_v->bits) return std::nullopt;
    in.has_packed = true;
    in.key = *b.kernel_k;
    in.value = *b.kernel_v;
    const ScoreCalibration c = config_.key->score_calibration();
    in.calibrate = c.on;
    in.calib_a = c.a;
    in.calib_b = c.b;
  }
  return in;
}

at::Tensor LayerKVCache::attend(const at::Tensor& q, double scale, const at::Tensor& additive_mask) const {
  if (q.is_cuda() && kernels::cuda_available()) {
    // The visual segment is never masked: padding sits before the system prompt or between
    // the image and the text, in full-precision blocks.
    if (auto in = decode_kernel_inputs(q, scale, additive_mask)) return kernels::decode_attention(*in).unsqueeze(2);
  }
  if (graph_len_.defined()) fail("KV cache: graph decoding needs the CUDA decode kernel");
  at::Tensor s = scores(q, scale);
  if (additive_mask.defined()) s = s + additive_mask.to(at::kFloat);
  const int64_t hq = q.size(1), t = q.size(2);
  at::Tensor p = fold_query_heads(at::softmax(s, -1), kv_heads_);  // [B, H, G*T, N]
  at::Tensor out;
  for (const Block& b : blocks_) {
    at::Tensor pb = p.narrow(-1, b.begin, b.length);
    at::Tensor o = b.qv ? b.qv->weighted_sum(pb) : at::matmul(pb, b.v.to(at::kFloat));
    out = out.defined() ? out + o : o;
  }
  return unfold_query_heads(out, hq, t).to(q.scalar_type());
}

KVCacheConfig make_kv_cache_config(const std::string& key_spec, const std::string& value_spec,
                                   const std::string& segments, const std::string& prefix) {
  KVCacheConfig kv{nullptr, nullptr, SegmentSet::parse(segments, prefix + "segments")};
  auto& registry = QuantizerRegistry::instance();
  if (!key_spec.empty()) kv.key = registry.make(parse_quantizer_spec(key_spec, prefix + "key"), KVRole::Key);
  if (!value_spec.empty()) kv.value = registry.make(parse_quantizer_spec(value_spec, prefix + "value"), KVRole::Value);
  return kv;
}

bool LayerKVCache::needs_visual_importance() const {
  if (!config_.quantized.contains(Segment::Visual)) return false;
  return (config_.key && config_.key->needs_importance()) || (config_.value && config_.value->needs_importance());
}

SegmentBytes LayerKVCache::bytes() const {
  SegmentBytes out;
  for (const Block& b : blocks_) {
    int64_t n = (b.qk ? b.qk->nbytes() : held_bytes(b.k)) + (b.qv ? b.qv->nbytes() : held_bytes(b.v));
    // The CUDA kernel's token-major copy of 1-bit values is storage too.
    if (b.kernel_v && b.kernel_v->token_words.defined()) n += static_cast<int64_t>(b.kernel_v->token_words.nbytes());
    switch (b.segment) {
      case Segment::System: out.system += n; break;
      case Segment::Visual: out.visual += n; break;
      case Segment::Text: out.text += n; break;
    }
  }
  return out;
}

int64_t LayerKVCache::fp16_bytes() const { return 2 * 2 * batch_ * kv_heads_ * length_ * head_dim_; }

at::Tensor LayerKVCache::keys() const {
  std::vector<at::Tensor> parts;
  for (const Block& b : blocks_) parts.push_back(b.qk ? b.qk->dequantize() : b.k);
  return at::cat(parts, 2);
}

at::Tensor LayerKVCache::values() const {
  std::vector<at::Tensor> parts;
  for (const Block& b : blocks_) parts.push_back(b.qv ? b.qv->dequantize() : b.v);
  return at::cat(parts, 2);
}

}  // namespace calibq
