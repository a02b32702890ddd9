#!/usr/bin/env python3
"""The transformers peer of `calibq bench throughput`: the same architecture at its real size
with random bf16 weights (SDPA attention), the same prompt layout (system tokens, the image
tokens, question tokens) and `generate` with greedy decoding and no early stop, on the GPU
machine. Per batch: prefill seconds (generate with one new token), decode ms per step
((T(N) - T(1)) / (N - 1)), decode tokens/s and peak GPU memory; a batch that does not fit is
recorded as out of memory. Writes JSON rows that `calibq bench throughput --transformers`
reads in.

    python3 bench/transformers_throughput.py --arch internvl2.5-8b --batch 1,8,32 --out peer.json
"""
import argparse
import json
import time

import torch
import transformers
from transformers import (CLIPVisionConfig, InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig,
                          LlamaConfig, LlavaConfig, LlavaForConditionalGeneration)


def architecture(name):
    """The configs of core/models/architectures.cpp, as transformers builds them."""
    if name == "internvl2.5-8b":
        vision = InternVLVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                      num_attention_heads=16, image_size=[448, 448], patch_size=[14, 14],
                                      attention_bias=True, norm_type="layer_norm", use_qk_norm=False,
                                      layer_norm_eps=1e-6, layer_scale_init_value=0.1, use_mean_pooling=True)
        text = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=8, vocab_size=92553, max_position_embeddings=32768, rms_norm_eps=1e-5,
                           rope_theta=1000000.0)
        cfg = InternVLConfig(vision_config=vision, text_config=text, image_token_id=92546, downsample_ratio=0.5,
                             vision_feature_layer=-1, vision_feature_select_strategy="default")
        return InternVLForConditionalGeneration, cfg, 92546, 256, 448, 13
    if name == "llava-1.5-7b":
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                  image_size=336, patch_size=14, hidden_act="quick_gelu", projection_dim=768)
        text = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5)
        cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000, projector_hidden_act="gelu",
                          vision_feature_layer=-2, vision_feature_select_strategy="default")
        return LlavaForConditionalGeneration, cfg, 32000, 576, 336, 1
    raise SystemExit(f"--arch {name}: known are internvl2.5-8b, llava-1.5-7b")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="internvl2.5-8b")
    ap.add_argument("--batch", default="1,8,32")
    ap.add_argument("--system-tokens", type=int, default=41)
    ap.add_argument("--prompt-tokens", type=int, default=30)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cls, cfg, image_id, per_image, size, images = architecture(a.arch)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = cls(cfg)
    torch.set_default_dtype(torch.float32)
    model = model.eval().to(torch.bfloat16)
    weights_gib = torch.cuda.memory_allocated() / 2**30
    image_tokens = per_image * images
    seq = a.system_tokens + image_tokens + a.prompt_tokens
    ids = [(i * 7919 + 13) % 30000 for i in range(seq)]
    ids = [image_id if a.system_tokens <= i < a.system_tokens + image_tokens else (t if t != image_id else t + 1)
           for i, t in enumerate(ids)]
    rows = []
    for b in [int(x) for x in a.batch.split(",")]:
        row = {"batch": b, "kv": "transformers"}
        try:
            input_ids = torch.tensor([ids] * b, device="cuda")
            pixels = torch.sin(torch.arange(images * 3 * size * size, device="cuda", dtype=torch.float32) * 0.37)
            pixels = pixels.view(images, 3, size, size).to(torch.bfloat16).repeat(b, 1, 1, 1)
            inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixels}

            def timed(n):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                with torch.no_grad():
                    out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
                torch.cuda.synchronize()
                assert out.shape[1] == seq + n, out.shape
                return time.perf_counter() - t0

            timed(2)  # warm-up
            torch.cuda.reset_peak_memory_stats()
            t1 = timed(1)
            tn = timed(a.new_tokens)
            step = (tn - t1) / (a.new_tokens - 1)
            row.update(prefill_s=t1, decode_ms_per_step=step * 1e3, decode_tok_s=b / step,
                       e2e_tok_s=b * a.new_tokens / tn, peak_gib=torch.cuda.max_memory_allocated() / 2**30, oom=False)
        except torch.OutOfMemoryError:
            row.update(oom=True)
        inputs = None
        torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
    doc = {"arch": a.arch, "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "attn_implementation": model.config._attn_implementation,
           "transformers": transformers.__version__, "weights_gib": weights_gib, "system_tokens": a.system_tokens,
           "image_tokens": image_tokens, "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens, "rows": rows}
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
