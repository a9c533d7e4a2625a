"""The micro base UNet: a latent UNet2DConditionModel trained on mostly-plain renders, conditioned on the frozen
text tower of the micro CLIP (as SD1.5 is on the frozen OpenAI CLIP text encoder).

Latents and prompt embeddings are computed once for a pool of renders, so each step is a UNet step only.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from rpo_bench.core.progress import progress_bar
from rpo_bench.micro.training_data import training_batch

SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def build_micro_unet(cross_attention_dim: int, levels: int = 2, latent_channels: int = 4):
    """levels 2 (world v1): 8x8 latents, attention at 8x8 and 4x4. levels 3 (world v2): 16x16 latents with an
    attention-free top level, so attention still runs at 8x8 and 4x4 only (attention at 16x16 would cost 4x)."""
    from diffusers import UNet2DConditionModel  # noqa: PLC0415 - diffusers loads in seconds: on first use

    if levels not in (2, 3):
        raise ValueError(f"micro UNet levels {levels}; accepted: 2 or 3")
    top = () if levels == 2 else ("DownBlock2D",)
    return UNet2DConditionModel(
        sample_size=8 * 2 ** (levels - 2), in_channels=latent_channels, out_channels=latent_channels,
        layers_per_block=1,
        block_out_channels=(32, 64) if levels == 2 else (32, 64, 64),
        down_block_types=(*top, "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", *(("UpBlock2D",) if top else ())),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=32)


@torch.no_grad()
def _encode_prompts(text_encoder, tokenizer, prompts: list[str]) -> torch.Tensor:
    tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    return text_encoder(tokens.input_ids).last_hidden_state


@torch.no_grad()
def latent_pool(vae, text_encoder, tokenizer, rng: np.random.Generator, size: int, show_progress: bool,
                caption_noise: float = 0.0):
    """(latents [N,C,H,W], prompt index [N], embeddings of the unique prompts [P,77,d] with "" last)."""
    latents, prompt_ids, vocabulary = [], [], {}
    with progress_bar("micro UNet data", size, show_progress) as advance:
        for start in range(0, size, 256):
            images, prompts = training_batch(rng, min(256, size - start), caption_noise=caption_noise)
            latents.append(vae.encode(images).latent_dist.sample() * vae.config.scaling_factor)
            prompt_ids.extend(vocabulary.setdefault(p, len(vocabulary)) for p in prompts)
            advance(len(prompts))
    unique = list(vocabulary) + [""]
    embeddings = torch.cat([_encode_prompts(text_encoder, tokenizer, unique[i:i + 256])
                            for i in range(0, len(unique), 256)])
    return torch.cat(latents), torch.tensor(prompt_ids), embeddings


def train_micro_unet(vae, text_encoder, tokenizer, seed: int = 0, steps: int = 1500, batch_size: int = 128,
                     pool_size: int = 40000, caption_dropout: float = 0.1, ema_decay: float = 0.99,
                     show_progress: bool = True, levels: int = 2, curve_every: int = 0, ema_warmup: bool = False,
                     caption_noise: float = 0.0):
    """Epsilon-prediction DDPM training; returns the EMA UNet and a report; `curve_every` > 0 adds the learning
    curve: the mean loss of each window of that many steps, to see where more steps stop paying.

    EMA: world v1 decays at 0.99 from the first step (a ~100-step window; the random start weighs 0.99**1200, nothing).
    At 0.999 over 3,000 steps the random start would still weigh 0.999**3000 = 5% of the final weights, so v2 warms
    the decay up as diffusers' EMAModel does, min(ema_decay, (1 + step) / (10 + step)): the average never holds the
    initialisation. `caption_noise`: training_data.miscaption."""
    from diffusers import DDPMScheduler  # noqa: PLC0415 - diffusers loads in seconds: on first use

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 200)
    latents, prompt_ids, embeddings = latent_pool(vae, text_encoder, tokenizer, rng, pool_size, show_progress,
                                                  caption_noise)
    empty = len(embeddings) - 1
    scheduler = DDPMScheduler(**SD_BETAS)
    unet = build_micro_unet(text_encoder.config.hidden_size, levels, vae.config.latent_channels)
    ema = copy.deepcopy(unet).requires_grad_(False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=5e-4, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=5e-4, total_steps=steps, pct_start=0.03)
    generator = torch.Generator().manual_seed(seed)
    unet.train()
    curve, window = [], []
    with progress_bar("micro UNet", steps, show_progress) as advance:
        for step in range(steps):
            index = torch.randint(0, len(latents), (batch_size,), generator=generator)
            ids = prompt_ids[index].clone()
            ids[torch.rand(batch_size, generator=generator) < caption_dropout] = empty  # for classifier-free guidance
            noise = torch.randn(latents[index].shape, generator=generator)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
            noisy = scheduler.add_noise(latents[index], noise, t)
            loss = F.mse_loss(unet(noisy, t, encoder_hidden_states=embeddings[ids]).sample, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            decay = min(ema_decay, (1 + step) / (10 + step)) if ema_warmup else ema_decay
            with torch.no_grad():
                for target, source in zip(ema.parameters(), unet.parameters(), strict=True):
                    target.lerp_(source, 1 - decay)
            window.append(loss.item())
            if curve_every and (step + 1) % curve_every == 0:
                curve.append([step + 1, round(sum(window) / len(window), 4)])
                window = []
            advance(1)
    report = {"final_loss": round(loss.item(), 4), "steps": steps, "pool": pool_size}
    return ema.eval(), report | ({"loss_curve": curve} if curve_every else {})
