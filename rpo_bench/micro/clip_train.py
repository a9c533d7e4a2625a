"""The micro CLIP: a small image-text contrastive model trained on renders.

It is a transformers CLIPModel at tiny size with the real CLIP tokenizer, so it serves the `clip` metric, the RPO
similarity weights and the style metrics through the same code as openai/clip-vit-large-patch14, and its text
tower is exactly a CLIPTextModel: the micro base pipeline's text encoder, as in Stable Diffusion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rpo_bench.core.progress import progress_bar
from rpo_bench.micro.training_data import StyleMix, training_batch
from rpo_bench.models.tokenizer import MODEL_MAX_LENGTH, VOCAB_SIZE, clip_tokenizer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def micro_clip_config():
    from transformers import CLIPConfig  # noqa: PLC0415 - transformers loads in seconds: on first use

    return CLIPConfig(
        text_config=dict(vocab_size=VOCAB_SIZE, max_position_embeddings=MODEL_MAX_LENGTH, hidden_size=64,
                         intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, bos_token_id=49406,
                         eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(image_size=32, patch_size=4, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                           num_attention_heads=4),
        projection_dim=64,
    )


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> CLIP-normalised pixels (what CLIPImageProcessor gives for a 32x32 image)."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


def _features(model, tokenizer, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
    image = model.visual_projection(model.vision_model(pixel_values=clip_pixels(images)).pooler_output)
    text = model.text_projection(model.text_model(**tokens).pooler_output)
    return F.normalize(image, dim=-1), F.normalize(text, dim=-1)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, prompts: list[str], logit_scale: torch.Tensor):
    """Symmetric InfoNCE with soft targets: renders of the same prompt are positives of each other, not
    false negatives (the micro world has only a few thousand distinct prompts)."""
    same = torch.tensor([[a == b for b in prompts] for a in prompts], dtype=torch.float32)
    targets = same / same.sum(dim=1, keepdim=True)
    logits = logit_scale.exp().clamp(max=100) * image @ text.T
    return 0.5 * (torch.sum(-targets * logits.log_softmax(dim=1), dim=1).mean()
                  + torch.sum(-targets * logits.T.log_softmax(dim=1), dim=1).mean())


def train_micro_clip(out_dir: Path, seed: int = 0, steps: int = 1500, batch_size: int = 128,
                     show_progress: bool = True, mix: StyleMix = StyleMix()) -> dict[str, float]:
    from transformers import CLIPImageProcessor, CLIPModel  # noqa: PLC0415 - transformers loads in seconds: on first use

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tokenizer = clip_tokenizer()
    model = CLIPModel(micro_clip_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    model.train()
    with progress_bar("micro CLIP", steps, show_progress) as advance:
        for _ in range(steps):
            images, prompts = training_batch(rng, batch_size, mix=mix)
            image, text = _features(model, tokenizer, images, prompts)
            loss = contrastive_loss(image, text, prompts, model.logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            advance(1)
    model.eval()
    report = evaluate_micro_clip(model, tokenizer, np.random.default_rng(seed + 1))
    report["final_loss"] = round(loss.item(), 4)
    out_dir.mkdir(parents=True, exist_ok=True)
    # atomic: `micro build` passes its stage's temporary folder, which replaces the stage in one rename
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=list(CLIP_MEAN),
                       image_std=list(CLIP_STD)).save_pretrained(out_dir)
    return report


@torch.no_grad()
def evaluate_micro_clip(model, tokenizer, rng: np.random.Generator, n: int = 256) -> dict[str, float]:
    """Image -> prompt retrieval among a batch of held-out (test split) prompts; duplicates count as correct."""
    images, prompts = training_batch(rng, n, split="test")
    image, text = _features(model, tokenizer, images, prompts)
    best = (image @ text.T).argmax(dim=1)
    correct = [prompts[int(j)] == prompts[i] for i, j in enumerate(best)]
    return {"test_retrieval_top1": round(float(np.mean(correct)), 4)}
