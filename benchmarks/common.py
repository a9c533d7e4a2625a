"""What every benchmark script shares: its command-line options, result rows, device handling, and the
full-size SD1.5 / SDXL architectures with random weights that the GPU run measures.

Importing this module imports neither torch nor rpo_bench, so a script can set RPO_BENCH_HOME before they load.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEVICES = ("cpu", "cuda")
ROWS_MARK = "BENCH_ROWS "  # a script run by `python -m benchmarks` also writes its rows to --json


# -- options ------------------------------------------------------------------------------------------------
def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: fp16 and the full-size architectures)")
    parser.add_argument("--json", dest="json_out", default=None,
                        help="also write the result rows as JSON to this file (used by `python -m benchmarks`)")


def check_device(name: str) -> str:
    """The device a benchmark measures; cuda must be there, since a silent fallback would mislabel results."""
    from rpo_bench.core.errors import BadInputError

    if name not in DEVICES:
        raise BadInputError(f"--device {name!r} is not a benchmark device; accepted: {', '.join(DEVICES)}")
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BadInputError("--device cuda: no CUDA GPU is visible to torch here; accepted on this machine: cpu")
    return name


def dtype_for(device: str):
    """fp16 on a GPU (how SD models are run there), fp32 on the CPU (fp16 matmuls are emulated and slow)."""
    import torch

    return torch.float16 if device == "cuda" else torch.float32


def synchronize(device: str) -> None:
    """CUDA kernels run asynchronously: a timer must wait for them, or it measures only the launches."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def positive(name: str, value: int) -> int:
    from rpo_bench.core.errors import BadInputError

    if value < 1:
        raise BadInputError(f"{name} {value}: must be a whole number >= 1")
    return value


# -- result rows ---------------------------------------------------------------------------------------------
def holds(ratio: float, target: str) -> bool:
    """`target` is '<= X' or '>= X'."""
    op, threshold = target.split()
    return ratio <= float(threshold) if op == "<=" else ratio >= float(threshold)


def row(what: str, value: float | None, unit: str, ratio: float | None = None, target: str | None = None,
        **details: Any) -> dict[str, Any]:
    """One result: a measured value; when it is a checked ratio, the target and whether it holds.

    Rows without a target are information (throughput, absolute times), printed but not judged; a value of None
    is a measurement that could not be made (the `what` says why).
    """
    return {"what": what, "value": value, "unit": unit, "ratio": ratio, "target": target,
            "holds": None if ratio is None or target is None else holds(ratio, target), "details": details}


def write_json_atomically(path: Path, payload: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False, default=str)
            handle.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_script(main: Callable[[argparse.Namespace], list[dict]], parser: argparse.ArgumentParser,
               argv: list[str] | None = None) -> int:
    """Parse, run, write --json; bad input prints one `error:` line and exits 2, as the rpo-bench CLI does."""
    from rpo_bench.core.errors import RpoBenchError

    args = parser.parse_args(argv)
    try:
        args.device = check_device(args.device)
        rows = main(args)
    except RpoBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json_out:
        write_json_atomically(Path(args.json_out), rows)
    return 0


# -- full-size architectures with random weights -------------------------------------------------------------
# "full" is the real published configuration; "mini" keeps every structural feature (block types, attention
# layout, text_time conditioning, two text encoders) at narrow widths, so the same code runs in a CPU test.
ARCH_SCALES = ("full", "mini")


def clip_text_config(scale: str, hidden: int, layers: int, heads: int, projection: int, act: str):
    from transformers import CLIPTextConfig

    from rpo_bench.models.tokenizer import MODEL_MAX_LENGTH, VOCAB_SIZE

    if scale == "mini":
        hidden, layers, heads, projection = hidden // 16, 2, 4, projection // 16
    return CLIPTextConfig(vocab_size=VOCAB_SIZE, max_position_embeddings=MODEL_MAX_LENGTH, hidden_size=hidden,
                          intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                          projection_dim=projection, hidden_act=act, bos_token_id=49406, eos_token_id=49407,
                          pad_token_id=49407)


def sd_vae(scale: str, scaling_factor: float, sample_size: int, force_upcast: bool):
    """The SD1.5 / SDXL autoencoder (both share one architecture; 84M parameters at full size)."""
    from diffusers import AutoencoderKL

    widths = (128, 256, 512, 512) if scale == "full" else (8, 16, 32, 32)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=widths,
                         layers_per_block=2 if scale == "full" else 1, norm_num_groups=32 if scale == "full" else 8,
                         latent_channels=4, sample_size=sample_size, scaling_factor=scaling_factor,
                         force_upcast=force_upcast)


SD15_WIDTHS = {"full": (320, 640, 1280, 1280), "half": (160, 320, 640, 640), "mini": (32, 32, 64, 64)}


def sd15_unet(scale: str, cross_attention_dim: int = 768):
    """runwayml/stable-diffusion-v1-5 unet/config.json: 860M parameters at full size.

    "half" (215M, half the channels, everything else as full) is the CPU memory benchmark's fallback when full
    DPO at full size does not fit in the memory that is free.
    """
    from diffusers import UNet2DConditionModel

    full = scale != "mini"
    return UNet2DConditionModel(
        sample_size=64 if full else 8, in_channels=4, out_channels=4, block_out_channels=SD15_WIDTHS[scale],
        layers_per_block=2 if full else 1, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=cross_attention_dim,
        attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu", center_input_sample=False,
        downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1)


def sd15_pipeline(scale: str = "full", text_layers: int | None = None, vae_scale: str | None = None):
    """SD1.5: the UNet, the VAE and CLIP ViT-L/14's text encoder (12 layers, 768 wide), random weights.

    The CPU training benchmark shortens the text encoder (`text_layers=2`) and takes the mini VAE (`vae_scale`):
    both are frozen and shared by DPO and RPO, and at 64 px the full VAE would cost about what the UNet costs.
    """
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    from rpo_bench.models.tiny import _SD_BETAS
    from rpo_bench.models.tokenizer import EOS_TOKEN, clip_tokenizer

    text_config = clip_text_config(scale, 768, 12, 12, 768, "quick_gelu")
    if text_layers:
        text_config.num_hidden_layers = text_layers
    with torch.device("cpu"):  # schedulers keep their tables on the CPU, whatever device build_on() builds on
        scheduler = PNDMScheduler(**_SD_BETAS, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(
        vae=sd_vae(vae_scale or scale, 0.18215, 512 if scale == "full" else 64, force_upcast=True),
        text_encoder=CLIPTextModel(text_config), tokenizer=clip_tokenizer(EOS_TOKEN),
        unet=sd15_unet(scale, text_config.hidden_size), scheduler=scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)


def sdxl_pipeline(scale: str = "full"):
    """stabilityai/stable-diffusion-xl-base-1.0: 2.6B-parameter UNet, CLIP-L + OpenCLIP bigG text encoders.

    The VAE runs in the pipeline's dtype (force_upcast off, as with the fp16-fixed SDXL VAE people use on GPUs).
    """
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from rpo_bench.models.tiny import _SD_BETAS
    from rpo_bench.models.tokenizer import EOS_TOKEN, clip_tokenizer

    full = scale == "full"
    text_1 = clip_text_config(scale, 768, 12, 12, 768, "quick_gelu")
    text_2 = clip_text_config(scale, 1280, 32, 20, 1280, "gelu")
    time_dim = 256 if full else 8
    unet = UNet2DConditionModel(
        sample_size=128 if full else 8, in_channels=4, out_channels=4,
        block_out_channels=(320, 640, 1280) if full else (32, 64, 64), layers_per_block=2 if full else 1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10) if full else (1, 1, 2), attention_head_dim=(5, 10, 20) if full else 8,
        cross_attention_dim=text_1.hidden_size + text_2.hidden_size, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + text_2.projection_dim, norm_num_groups=32)
    with torch.device("cpu"):  # see sd15_pipeline
        scheduler = EulerDiscreteScheduler(**_SD_BETAS, steps_offset=1, timestep_spacing="leading",
                                           interpolation_type="linear")
    return StableDiffusionXLPipeline(
        vae=sd_vae(scale, 0.13025, 1024 if full else 64, force_upcast=False), text_encoder=CLIPTextModel(text_1),
        text_encoder_2=CLIPTextModelWithProjection(text_2), tokenizer=clip_tokenizer(EOS_TOKEN),
        tokenizer_2=clip_tokenizer("!"), unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
        add_watermarker=False)


def build_on(device: str, dtype, build: Callable[[], Any], seed: int = 0):
    """Construct with random weights directly on `device` (initialising 2.6B parameters on a GPU takes seconds,
    on a CPU a minute), then cast. The seed makes the weights the same on every run of one device."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # `.to(dtype)` warns about modules "kept in float32": there are none
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            model = build()
    return model.to(device=device, dtype=dtype)


def save_pipeline_atomically(pipe, path: Path) -> Path:
    """save_pretrained into a sibling temp folder, then rename: a killed run leaves no half-written model."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def time_losses(trainers: dict, pairs: int, device: str = "cpu", iterations: int = 200) -> dict[str, list]:
    """Seconds of `_loss` (weights, loss, diagnostics) + its backward to the 4M errors, without the UNet: the
    only part of a step where RPO does anything DPO does not. Alternated in blocks of 10 calls."""
    import time

    import torch

    indices = list(range(pairs))
    generator = torch.Generator().manual_seed(0)
    values = {k: (torch.rand(pairs, generator=generator) * 0.1).to(trainers["dpo"].accelerator.device)
              for k in ("model_err_w", "model_err_l", "ref_err_w", "ref_err_l")}
    out: dict[str, list] = {"dpo": [], "rpo": []}
    for block in range(iterations // 10):
        for method in ("dpo", "rpo") if block % 2 == 0 else ("rpo", "dpo"):
            for _ in range(10):
                errors = {k: v.clone().requires_grad_(k.startswith("model")) for k, v in values.items()}
                start = time.perf_counter()
                loss, _ = trainers[method]._loss(errors, indices)
                loss.backward()
                synchronize(device)
                out[method].append(time.perf_counter() - start)
    return out


def print_wall_time_rows(rows: list[dict]) -> None:
    """One line per row: a ratio with its target, or a wall time in seconds."""
    for r in rows:
        shown = f"{r['value']:.3f} (target {r['target']})" if r["unit"] == "ratio" else f"{r['value']:.1f} s"
        print(f"  {r['what']}: {shown}")


# -- the code before a change, side by side with the code after it ------------------------------------------------
REPOSITORY = Path(__file__).resolve().parents[1]


def _git(*args: str, cwd: Path = REPOSITORY) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None


def checkout_before(ref: str, where: Path) -> tuple[Path | None, str, object]:
    """A detached worktree of `ref` at `where`, or None and why not; and the function that removes it."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or top.returncode != 0:
        return None, "git is not available or this is not a git checkout", lambda: None
    commit = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if commit is None or commit.returncode != 0:
        return None, f"ref {ref!r} is not in this repository", lambda: None
    added = _git("worktree", "add", "--detach", str(where), commit.stdout.strip())
    if added is None or added.returncode != 0:
        return None, f"git worktree add failed: {(added.stderr if added else '').strip()[:200]}", lambda: None
    removed = []

    def remove() -> None:
        if removed:
            return
        removed.append(True)
        done = _git("worktree", "remove", "--force", str(where))
        if done is None or done.returncode != 0:  # its folder goes with the home; git's record of it with prune
            shutil.rmtree(where, ignore_errors=True)
            _git("worktree", "prune")

    atexit.register(remove)  # also on an error; runs before the home's removal (atexit: last in, first out)
    return where, commit.stdout.strip(), remove


def unet_step_seconds(unet, side: int, batch: int, steps: int = 2, context_dim: int = 64) -> float:
    """Seconds per training step (forward, backward, AdamW) of a UNet2DConditionModel on random latents of
    side x side and a random 77-token context: what a step costs does not depend on the weights or the data."""
    import time

    import torch

    optimizer = torch.optim.AdamW(unet.parameters(), 1e-4)
    latents, context = torch.randn(batch, 4, side, side), torch.randn(batch, 77, context_dim)
    timesteps = torch.randint(0, 1000, (batch,))
    started = time.perf_counter()
    for _ in range(steps):
        loss = unet(latents, timesteps, context).sample.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps
