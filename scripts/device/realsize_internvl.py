#!/usr/bin/env python3
"""An InternVL2.5-8B-shaped checkpoint in transformers' layout with random bf16 weights
(InternViT-300M: 24 layers, 1024 wide, 448 px tiles; a 32-layer LLaMA-shaped decoder, hidden
4096, 32 heads / 8 KV heads, MLP 14336, vocab 92553), and inputs for `calibq logits`: a
batch of prompts, each with 13 tiles (3328 image tokens). For timing on the GPU machine only.
    python3 scripts/device/realsize_internvl.py OUT_DIR [BATCH] [TILES]
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, LlamaConfig

out = sys.argv[1]
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 2
tiles = int(sys.argv[3]) if len(sys.argv) > 3 else 13
vision = InternVLVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=[448, 448], patch_size=[14, 14], attention_bias=True, norm_type="layer_norm",
                              use_qk_norm=False, layer_norm_eps=1e-6)
text = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=8, vocab_size=92553, max_position_embeddings=32768, rms_norm_eps=1e-5,
                   rope_theta=1000000.0)
IMG = 92546
cfg = InternVLConfig(vision_config=vision, text_config=text, image_token_id=IMG, downsample_ratio=0.5,
                     vision_feature_layer=-1, vision_feature_select_strategy="default")
torch.manual_seed(0)
with torch.device("cuda"):
    model = InternVLForConditionalGeneration(cfg).to(torch.bfloat16)
model.save_pretrained(out, safe_serialization=True, max_shard_size="5GB")
del model
ids = [1] + list(range(100, 140)) + [IMG] * (256 * tiles) + list(range(200, 230))
input_ids = torch.tensor([ids] * batch)
save_file({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
           "pixel_values": torch.randn(batch * tiles, 3, 448, 448)}, os.path.join(out, "inputs.safetensors"))
print("saved", out, "tokens", input_ids.shape)
