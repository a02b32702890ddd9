// calibq logits: a model's prefill logits (and greedy tokens) on the tensors transformers'
// forward takes, for parity checks against transformers and for quantizer studies.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>

#include "core/io/safetensors.h"
#include "core/models/model.h"
#include "core/models/processor.h"
#include "datasets/images.h"
#include "core/util/error.h"
#include "experiments/cli/commands.h"

namespace calibq::cli {

at::ScalarType parse_dtype(const std::string& s) {
  if (s == "fp32") return at::kFloat;
  if (s == "fp16") return at::kHalf;
  if (s == "bf16") return at::kBFloat16;
  fail("--dtype '{}' is not one of fp32, fp16, bf16", s);
}

at::Device parse_device(const std::string& s) {
  if (s == "cpu") return at::kCPU;
  if (s == "cuda" || s.rfind("cuda:", 0) == 0) {
    if (!at::hasCUDA()) fail("--device {}: this calibq has no CUDA device to run on", s);
    return at::Device(s);
  }
  fail("--device '{}' is not cpu or cuda[:N]", s);
}

std::vector<at::Device> parse_devices(const std::string& s) {
  if (s == "cuda:all") {
    if (!at::hasCUDA()) fail("--device {}: this calibq has no CUDA device to run on", s);
    std::vector<at::Device> all;
    for (int i = 0; i < static_cast<int>(at::getNumGPUs()); ++i) all.emplace_back(at::kCUDA, static_cast<c10::DeviceIndex>(i));
    return all;
  }
  std::vector<at::Device> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const std::string one = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const at::Device d = parse_device(one);
    if (std::find(out.begin(), out.end(), d) != out.end()) fail("--device {}: {} is listed twice", s, one);
    out.push_back(d);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

namespace {

// What `logits` and `generate` both take: the checkpoint, where it runs, and the KV cache.
struct ModelFlags {
  std::string model;
  std::string dtype = "fp32", device = "cpu";
  std::string kv, kv_key, kv_value, segments = "visual";
};

void add_model_flags(CLI::App* cmd, ModelFlags& f) {
  cmd->add_option("--dtype", f.dtype, "fp32, fp16 or bf16")->capture_default_str();
  cmd->add_option("--device", f.device,
                  "cpu, cuda[:N], or several (cuda:0,cuda:1 or cuda:all): the decoder's layers split across them")
      ->capture_default_str();
  cmd->add_option("--kv", f.kv, "quantizer for keys and values (e.g. calibquant:bits=1)");
  cmd->add_option("--kv-key", f.kv_key, "quantizer for keys (overrides --kv)");
  cmd->add_option("--kv-value", f.kv_value, "quantizer for values (overrides --kv)");
  cmd->add_option("--kv-segments", f.segments, "segments to quantize: visual, all, or a list")->capture_default_str();
}

struct LogitsOptions : ModelFlags {
  std::string inputs, out;
  int64_t generate = 0;
};


KVCacheConfig kv_config(const ModelFlags& o) {
  return make_kv_cache_config(o.kv_key.empty() ? o.kv : o.kv_key, o.kv_value.empty() ? o.kv : o.kv_value, o.segments,
                              "--kv-");
}

void run_logits(const LogitsOptions& o) {
  KVCacheConfig kv = kv_config(o);  // options first: a typo fails before the model loads
  const at::ScalarType dtype = parse_dtype(o.dtype);
  const std::vector<at::Device> devices = parse_devices(o.device);
  auto t0 = std::chrono::steady_clock::now();
  auto model = load_model(o.model, dtype, devices);
  std::cerr << model->load_report() << "\n";
  auto in_ck = SafetensorsCheckpoint::open(o.inputs);
  ModelInputs in;
  if (!in_ck.contains("input_ids")) fail("{}: no 'input_ids' tensor", o.inputs);
  in.input_ids = in_ck.tensor("input_ids").to(at::kLong);
  if (in_ck.contains("attention_mask")) in.attention_mask = in_ck.tensor("attention_mask");
  if (in_ck.contains("pixel_values")) in.pixel_values = in_ck.tensor("pixel_values");
  if (in_ck.contains("image_grid_thw")) in.image_grid_thw = in_ck.tensor("image_grid_thw");
  NamedTensors out = {{"logits", model->forward_logits(in).to(at::kFloat).cpu()}};
  if (o.generate > 0) out.emplace_back("generated", model->generate_greedy(in, o.generate, kv).cpu());
  write_safetensors(o.out, out, {{"model", o.model}, {"dtype", o.dtype}, {"device", o.device}});
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cerr << fmt::format("wrote {} ({:.2f} s)\n", o.out, s);
}

struct GenerateOptions : ModelFlags {
  std::string image, prompt;
  int64_t max_new_tokens = 64;
  double temperature = 0.0, top_p = 1.0;
  uint64_t seed = 0;
};

void run_generate(const GenerateOptions& o) {
  KVCacheConfig kv = kv_config(o);
  RgbImage image;  // inputs first: a bad file fails before the model loads
  if (!o.image.empty()) image = read_rgb_image(o.image);
  auto model = load_model(o.model, parse_dtype(o.dtype), parse_devices(o.device));
  std::cerr << model->load_report() << "\n";
  ModelProcessor proc = ModelProcessor::load(o.model, model->config());
  ProcessedSample s = proc.process(o.image.empty() ? nullptr : &image, o.prompt);
  GenerationConfig gen;
  gen.max_new_tokens = o.max_new_tokens;
  gen.temperature = o.temperature;
  gen.top_p = o.top_p;
  gen.seed = o.seed;
  gen.stop_ids = proc.stop_ids();
  gen.pad_id = proc.pad_id();
  GenerationResult r = model->generate(proc.collate({s}), gen, kv);
  std::cout << proc.decode(r.tokens[0]) << std::endl;
  std::cerr << fmt::format("{} tokens ({}), prefill {:.3f} s, decode {:.3f} s; KV cache {} bytes (fp16: {})\n",
                           r.tokens[0].size(), r.stopped[0] ? "stop token" : "length", r.prefill_seconds, r.decode_seconds,
                           r.kv_bytes.total(), r.kv_fp16_bytes);
}

}  // namespace

void add_model_commands(CLI::App& app) {
  auto o = std::make_shared<LogitsOptions>();
  CLI::App* cmd = app.add_subcommand("logits", "Prefill logits (and greedy tokens) of a checkpoint on given input tensors");
  cmd->add_option("--model", o->model, "checkpoint folder (config.json + safetensors)")->required();
  cmd->add_option("--inputs", o->inputs, "safetensors with input_ids [, attention_mask, pixel_values, image_grid_thw]")->required();
  cmd->add_option("--out", o->out, "output safetensors: logits (float32) [, generated]")->required();
  cmd->add_option("--generate", o->generate, "greedy tokens to add (no early stop)");
  add_model_flags(cmd, *o);
  cmd->callback([o] { run_logits(*o); });

  auto g = std::make_shared<GenerateOptions>();
  CLI::App* gc = app.add_subcommand("generate", "Answer a prompt about an image (the family's chat template and processor)");
  gc->add_option("--model", g->model, "checkpoint folder (config.json, safetensors, tokenizer.json, processor config)")->required();
  gc->add_option("--image", g->image, "image file (omit for a text-only prompt)");
  gc->add_option("--prompt", g->prompt, "the user's text")->required();
  gc->add_option("--max-new-tokens", g->max_new_tokens, "most tokens to generate")->capture_default_str();
  gc->add_option("--temperature", g->temperature, "0: greedy; else sampling")->capture_default_str();
  gc->add_option("--top-p", g->top_p, "nucleus mass when sampling")->capture_default_str();
  gc->add_option("--seed", g->seed, "sampling seed")->capture_default_str();
  add_model_flags(gc, *g);
  gc->callback([g] { run_generate(*g); });
}

}  // namespace calibq::cli
