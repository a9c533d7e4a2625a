"""Which UNet weights train, and what the frozen reference is.

LoRA: adapters on the attention projections; the reference is the SAME UNet with adapters disabled, so no
second copy is held. Full: every UNet weight trains; the reference is a frozen copy made before training.
"""

from __future__ import annotations

import copy

import torch

from rpo_bench.core.errors import BadInputError
from rpo_bench.training.config import TrainConfig

LORA_LAYER_TYPES = (torch.nn.Linear, torch.nn.Conv2d)  # what peft's LoRA wraps in a diffusers UNet
LORA_TARGET_EXAMPLES = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.2", "conv1", "conv2")


def lora_target_modules(unet, lora_targets: str) -> list[str]:
    """The --lora-targets names, each checked to name at least one Linear/Conv2d layer of this UNet.

    peft matches a target against the end of each module path; a name that matches nothing fails deep in peft
    (NoMatchingPeftModuleError) and leaves the UNet half-modified, so it is refused here, before peft runs."""
    targets = [t.strip() for t in lora_targets.split(",") if t.strip()]
    layers = [name for name, module in unet.named_modules() if isinstance(module, LORA_LAYER_TYPES)]

    def matches(target: str) -> bool:
        return any(name == target or name.endswith(f".{target}") for name in layers)

    for target in targets:
        if not matches(target):
            examples = [name for name in LORA_TARGET_EXAMPLES if matches(name)]
            raise BadInputError(f"--lora-targets {lora_targets!r}: {target!r} names no Linear or Conv2d layer of "
                                f"the UNet; accepted: comma-separated layer names such as {', '.join(examples)}")
    return targets


def add_lora(unet, config: TrainConfig) -> None:
    from peft import LoraConfig  # noqa: PLC0415 - peft loads in seconds: on first use

    targets = lora_target_modules(unet, config.lora_targets)
    unet.add_adapter(LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha or config.lora_rank,
                                init_lora_weights="gaussian", target_modules=targets))


def prepare_unet(unet, config: TrainConfig, weight_dtype: torch.dtype, needs_reference: bool):
    """Returns the frozen reference UNet for full training (None for LoRA or SFT) and the trainable parameters."""
    reference = None
    if config.lora_rank > 0:
        unet.requires_grad_(False)
        unet.to(dtype=weight_dtype)
        add_lora(unet, config)
        for parameter in unet.parameters():  # LoRA weights train in fp32 even when the base runs in fp16
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
    else:
        if needs_reference:
            reference = copy.deepcopy(unet).to(dtype=weight_dtype).requires_grad_(False).eval()
        unet.requires_grad_(True)
        unet.float()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    return reference, [p for p in unet.parameters() if p.requires_grad]


def make_optimizer(parameters, config: TrainConfig):
    if config.optimizer == "adafactor":
        from transformers.optimization import Adafactor  # noqa: PLC0415 - transformers loads in seconds: on first use

        # Fixed learning rate, as the official SDXL recipe: no relative step, no parameter scaling.
        return Adafactor(parameters, lr=config.lr, scale_parameter=False, relative_step=False, warmup_init=False,
                         weight_decay=config.weight_decay)
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


def make_lr_scheduler(optimizer, config: TrainConfig):
    from diffusers.optimization import get_scheduler  # noqa: PLC0415 - diffusers loads in seconds: on first use


    try:
        return get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps,
                             num_training_steps=config.steps)
    except (ValueError, KeyError) as exc:
        raise BadInputError(f"--lr-scheduler {config.lr_scheduler!r}: {exc}") from exc
