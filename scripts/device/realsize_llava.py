#!/usr/bin/env python3
"""A LLaVA-1.5-7B-shaped checkpoint with random bf16 weights (the hub config in
tests/data/configs/llava-1.5-7b-hf.json), and inputs for `calibq logits`: a batch of
prompts with 576 image tokens and random 336x336 pixels. For timing runs on the GPU
machine only: the weights mean nothing.
    python3 scripts/device/realsize_llava.py OUT_DIR [BATCH]
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import LlavaConfig, LlavaForConditionalGeneration

out = sys.argv[1]
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 2
cfg = LlavaConfig.from_dict(json.load(open(os.path.join(os.path.dirname(__file__), "../../tests/data/configs/llava-1.5-7b-hf.json"))))
torch.manual_seed(0)
with torch.device("cuda"):
    model = LlavaForConditionalGeneration(cfg).to(torch.bfloat16)
model.save_pretrained(out, safe_serialization=True, max_shard_size="5GB")
del model
ids = [1] + list(range(100, 135)) + [32000] * 576 + list(range(200, 230))
input_ids = torch.tensor([ids] * batch)
save_file({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
           "pixel_values": torch.randn(batch, 3, 336, 336)}, os.path.join(out, "inputs.safetensors"))
print("saved", out, "tokens", input_ids.shape)
