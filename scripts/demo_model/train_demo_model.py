#!/usr/bin/env python3
"""Trains calibq's demo MLLM from scratch on the synthetic scenes of `calibq scenes` (issue #11).

A LlavaForConditionalGeneration (CLIP-style ViT 96x96 / patch 12 = 64 visual tokens, a 2-layer
GELU projector, a 4-layer LLaMA decoder with GQA 8/2) and a byte-level BPE tokenizer trained on
the scene grammar, saved as an ordinary Hugging Face folder (fp16 safetensors, tokenizer, chat
template = llava-1.5-hf's), plus the training log, and a parity fixture for calibq's tests:
transformers' fp32 CPU logits and greedy tokens on a few test-split images.

Run on the GPU machine (torch 2.11, transformers 5.17, tokenizers; no network) with data made
on a CPU machine (the device has no C++ OpenCV; `tar c train val | xz` is 44 MB, which with the
repository exceeds one device call's 64 MiB: carry it in two parts in two calls, joined in /tmp):
    calibq scenes --split train --count 32000 --out data/train
    calibq scenes --split val --count 400 --questions 1 --out data/val
    python3 scripts/demo_model/train_demo_model.py --data data --test datasets/demo/scenes \\
        --out models/calibq-demo-llava --parity tests/data/models/calibq-demo-parity
Deterministic from --seed: same data, same order, same initialization, and PyTorch's deterministic
algorithms with eager attention, so that a second run gives the same weights (check with
--compare DIR). Without them, atomics in a few backward kernels make two runs differ at
step 100 by 1e-3 in the loss and end, 6000 chaotic steps later, in different (equally good) minima.
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts: deterministic cuBLAS
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                          LlavaProcessor)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
# llava-1.5-hf's chat template (the one calibq's LLaVA processor writes in C++), CLIP's
# normalization and the byte-level BPE trainer, as the pipeline fixtures use them.
from make_pipeline_fixtures import CLIP_MEAN, CLIP_STD, LLAVA_TEMPLATE, byte_level_bpe  # noqa: E402

CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."  # calibq's / lmms-eval's default
VQA_PROMPT = "{question}\nAnswer the question using a single word or phrase."
IMAGE_SIZE, PATCH = 96, 12
VISUAL_TOKENS = (IMAGE_SIZE // PATCH) ** 2


def read_split(folder):
    scenes = [json.loads(line) for line in open(os.path.join(folder, "scenes.jsonl"))]
    images = torch.stack([torch.from_numpy(numpy.array(Image.open(os.path.join(folder, "images", s["file_name"])).convert("RGB")))
                          for s in scenes])
    return scenes, images  # images: [N, H, W, 3] uint8


def train_tokenizer(scenes, vocab_size):
    corpus = [CAPTION_PROMPT, VQA_PROMPT.replace("{question}", ""), "USER: ASSISTANT:"]
    for s in scenes:
        corpus += s["captions"]
        corpus += [q["question"] + " " + q["answer"] for q in s["questions"]]
    return byte_level_bpe(corpus, vocab_size)


def make_processor(tokenizer):
    ip = CLIPImageProcessor(do_resize=True, size={"shortest_edge": IMAGE_SIZE}, resample=3, do_center_crop=True,
                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_rescale=True, rescale_factor=1 / 255,
                            do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True)
    return LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=PATCH, vision_feature_select_strategy="default",
                          chat_template=LLAVA_TEMPLATE, num_additional_image_tokens=1)


def chat_text(prompt):
    return f"USER: <image>\n{prompt} ASSISTANT:"


def examples(scenes):
    """(image index, prompt, answer) for every caption and every question of every scene."""
    out = []
    for i, s in enumerate(scenes):
        out += [(i, CAPTION_PROMPT, c) for c in s["captions"]]
        out += [(i, VQA_PROMPT.format(question=q["question"]), q["answer"]) for q in s["questions"]]
    return out


def encode(tokenizer, exs, max_len):
    """Right-padded ids and labels (-100 except on the answer and its </s>), prompt with 64 image tokens."""
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    prompts = tokenizer([chat_text(p) for _, p, _ in exs])["input_ids"]
    answers = tokenizer([" " + a for _, _, a in exs], add_special_tokens=False)["input_ids"]
    ids = torch.full((len(exs), max_len), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(exs), max_len), -100, dtype=torch.long)
    lengths = []
    for k, (p, a) in enumerate(zip(prompts, answers)):
        at = p.index(image_id)
        p = p[:at] + [image_id] * VISUAL_TOKENS + p[at + 1:]
        seq = p + a + [tokenizer.eos_token_id]
        if len(seq) > max_len:
            raise SystemExit(f"example {k} has {len(seq)} tokens > {max_len}")
        ids[k, :len(seq)] = torch.tensor(seq)
        labels[k, len(p):len(seq)] = torch.tensor(a + [tokenizer.eos_token_id])
        lengths.append(len(seq))
    return ids, labels, torch.tensor(lengths)


def pixels_of(images_u8):
    mean = torch.tensor(CLIP_MEAN, device=images_u8.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images_u8.device).view(1, 3, 1, 1)
    return ((images_u8.permute(0, 3, 1, 2).float() * (1 / 255)) - mean) / std


def build_model(tokenizer):
    tc = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                     num_attention_heads=8, num_key_value_heads=2, head_dim=32, max_position_embeddings=512,
                     rms_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    vc = CLIPVisionConfig(hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                          image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=192)
    cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                      vision_feature_layer=-1, vision_feature_select_strategy="default", image_seq_length=VISUAL_TOKENS)
    for c in (cfg, cfg.text_config, cfg.vision_config):
        c._attn_implementation = "eager"  # SDPA's fused backward kernels are not deterministic
    return LlavaForConditionalGeneration(cfg)


@torch.no_grad()
def evaluate(model, tokenizer, scenes, images, device, limit=200):
    """Greedy answers on the val split: VQA exact match and caption exact match with any reference."""
    model.eval()
    res = {}
    for kind in ("caption", "vqa"):
        exs = []
        for i, s in enumerate(scenes[:limit]):
            if kind == "caption":
                exs.append((i, CAPTION_PROMPT, s["captions"]))
            else:
                q = s["kept_questions"][0]
                exs.append((i, VQA_PROMPT.format(question=q["question"]), [q["answer"]]))
        hits = 0
        for b in range(0, len(exs), 100):
            chunk = exs[b:b + 100]
            texts = [chat_text(p).replace("<image>", "<image>" * VISUAL_TOKENS) for _, p, _ in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True).to(device)
            px = pixels_of(images[[i for i, _, _ in chunk]].to(device))
            out = model.generate(**enc, pixel_values=px, do_sample=False, max_new_tokens=48)
            for (i, _, refs), row in zip(chunk, out[:, enc["input_ids"].shape[1]:]):
                hits += tokenizer.decode(row, skip_special_tokens=True).strip() in refs
        res[kind + "_exact"] = hits / len(exs)
    model.train()
    return res


def train(args):
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    device = "cuda"
    scenes, images = read_split(os.path.join(args.data, "train"))
    val_scenes, val_images = read_split(os.path.join(args.data, "val"))
    tokenizer = train_tokenizer(scenes, args.vocab)
    processor = make_processor(tokenizer)
    # What the C++ side checks against too: the template's text and the processor's pixels.
    msg = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": CAPTION_PROMPT}]}]
    assert processor.apply_chat_template(msg, add_generation_prompt=True, tokenize=False) == chat_text(CAPTION_PROMPT)
    ref_px = processor(images=Image.fromarray(images[0].numpy()), text=chat_text("x"), return_tensors="pt")["pixel_values"]
    assert (ref_px - pixels_of(images[:1])).abs().max() < 1e-5, "the processor's pixels differ from pixels_of()"

    exs = examples(scenes)
    ids, labels, lengths = encode(tokenizer, exs, args.max_len)
    image_of = torch.tensor([i for i, _, _ in exs])
    print(f"{len(scenes)} train images, {len(exs)} examples, vocab {len(tokenizer)}, longest {int(lengths.max())} tokens",
          flush=True)
    ids, labels, image_of, gpu_images = ids.to(device), labels.to(device), image_of.to(device), images.to(device)

    model = build_model(tokenizer).to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    log = []
    t0 = time.time()
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        pick = torch.randint(0, len(exs), (args.batch,), generator=g).to(device)
        width = int(lengths[pick.cpu()].max())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(input_ids=ids[pick, :width], attention_mask=(ids[pick, :width] != tokenizer.pad_token_id).long(),
                        pixel_values=pixels_of(gpu_images[image_of[pick]]), labels=labels[pick, :width])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == 1:
            row = {"step": step, "loss": round(out.loss.item(), 5), "lr": lr, "grad_norm": round(gn.item(), 4),
                   "seconds": round(time.time() - t0, 1)}
            if step % args.eval_every == 0 or step == args.steps:
                row.update(evaluate(model, tokenizer, val_scenes, val_images, device))
            log.append(row)
            print(json.dumps(row), flush=True)
    return model.eval(), tokenizer, processor, log, {"parameters": n_params, "examples": len(exs), "images": len(scenes),
                                                      "train_seconds": round(time.time() - t0, 1)}


def save(args, model, tokenizer, processor, log, info):
    os.makedirs(args.out, exist_ok=True)
    model.to(torch.float16).save_pretrained(args.out, safe_serialization=True)
    processor.save_pretrained(args.out)
    with open(os.path.join(args.out, "training_log.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in log)
    info.update({"made_by": "scripts/demo_model/train_demo_model.py", "seed": args.seed, "steps": args.steps,
                 "batch": args.batch, "lr": args.lr, "warmup": args.warmup, "vocab": len(tokenizer),
                 "torch": torch.__version__, "transformers": transformers.__version__,
                 "gpu": torch.cuda.get_device_name(0), "final": log[-1]})
    with open(os.path.join(args.out, "training_info.json"), "w") as f:
        json.dump(info, f, indent=1)


@torch.no_grad()
def parity(args):
    """transformers' fp32 CPU outputs of the saved folder on test-split images, for calibq's tests."""
    model = LlavaForConditionalGeneration.from_pretrained(args.out, dtype=torch.float32).eval()
    processor = transformers.AutoProcessor.from_pretrained(args.out)
    scenes = [json.loads(line) for line in open(os.path.join(args.test, "scenes.jsonl"))][:3]
    cases, tensors = [], {}
    for i, s in enumerate(scenes):
        q = s["kept_questions"][0]["question"]
        for prompt in (CAPTION_PROMPT, VQA_PROMPT.format(question=q)):
            img = Image.open(os.path.join(args.test, "images", s["file_name"]))
            msg = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            text = processor.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)
            inputs = processor(images=img, text=text, return_tensors="pt")
            # Greedy until </s> (at most 40 tokens), then the logits of prompt + answer in one
            # forward: the decode positions are checked too, not only the prompt's.
            gen = model.generate(**inputs, do_sample=False, max_new_tokens=40)
            new = gen[0, inputs["input_ids"].shape[1]:].tolist()
            logits = model(input_ids=gen, attention_mask=torch.ones_like(gen),
                           pixel_values=inputs["pixel_values"]).logits[0].float()
            k = len(cases)
            tensors[f"logits.{k}"] = logits.contiguous()
            tensors[f"pixel_values.{k}"] = inputs["pixel_values"][0].float().contiguous()
            cases.append({"image": s["file_name"], "prompt": prompt, "chat_text": text,
                          "input_ids": inputs["input_ids"][0].tolist(), "generated": new,
                          "stopped": new[-1] == processor.tokenizer.eos_token_id,
                          "text": processor.decode(new, skip_special_tokens=True)})
    os.makedirs(args.parity, exist_ok=True)
    save_file(tensors, os.path.join(args.parity, "parity.safetensors"))
    with open(os.path.join(args.parity, "parity_reference.json"), "w") as f:
        json.dump({"made_by": "scripts/demo_model/train_demo_model.py", "model": os.path.basename(args.out.rstrip("/")),
                   "transformers": transformers.__version__, "torch": torch.__version__, "dtype": "float32",
                   "device": "cpu", "cases": cases}, f, indent=1)
    print("parity:", [c["text"] for c in cases], flush=True)


def compare(a, b):
    """Largest weight difference between two trainings (the reproducibility check)."""
    wa, wb = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    assert wa.keys() == wb.keys()
    worst = max(((wa[k].float() - wb[k].float()).abs().max().item(), k) for k in wa)
    rel = max((wa[k].float() - wb[k].float()).norm().item() / max(wa[k].float().norm().item(), 1e-12) for k in wa)
    print(json.dumps({"compare": [a, b], "max_abs_diff": worst[0], "at": worst[1], "max_rel_l2": rel}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with train/ and val/ scene sets")
    ap.add_argument("--test", required=True, help="the test scene set (parity images)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--parity", required=True, help="where the parity fixture goes")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--max-len", type=int, default=192)
    ap.add_argument("--eval-every", type=int, default=2500)
    ap.add_argument("--compare", help="a folder of an earlier run: print the largest weight difference")
    ap.add_argument("--parity-only", action="store_true", help="no training: the parity fixture of the model in --out")
    args = ap.parse_args()
    if not args.parity_only:
        model, tokenizer, processor, log, info = train(args)
        save(args, model, tokenizer, processor, log, info)
    parity(args)
    if args.compare:
        compare(args.out, args.compare)


if __name__ == "__main__":
    main()
