"""Cost of Diffusion-RPO over Diffusion-DPO per optimizer step, and memory of LoRA-DPO against full DPO.

RPO contrasts every winner with every loser of the micro-batch using the 2M denoising errors DPO already
computes (METHOD.md): no extra UNet pass, only an M x M weight matrix from cached CLIP embeddings and an
M x M loss. So an RPO step should cost what a DPO step costs (target: RPO / DPO step time <= 1.05 at the
same batch, M = 8 pairs). LoRA training takes its DPO reference from the same UNet with the adapters
switched off, so unlike full training it keeps no frozen copy of the UNet and no gradients or Adam states for
its weights (target: LoRA-DPO / full-DPO peak memory <= 0.6).

Step times are measured with `Trainer._optimizer_step` after `setup()` and one warm-up step, single steps of
a DPO and an RPO trainer alternated (DPO, RPO, RPO, DPO, ...) in one process, so a slow phase of the shared
machine hits both alike; ratios of medians are printed, never absolute targets. Two models: tiny-sd15 (LoRA
rank 4 and full) and a UNet with the full SD1.5 architecture (860M parameters, random weights) trained at
64 px, i.e. 8x8 latents (LoRA rank 4 only: two full trainers, ~18 GB each, do not fit side by side). Peak memory is the
peak RSS of a fresh subprocess (this script re-invoked with `--child-memory`) that does setup + 2 optimizer
steps of LoRA-DPO or full-DPO on the SD1.5-architecture UNet, guarded so that it is killed before the
machine runs out of memory.

Step times use ONE torch thread by default (`--threads 0`: torch's default, 2 here). On a shared 2-core box
two OpenMP threads stall at every barrier whenever another process takes a core, and a step then costs 2x to
10x more at random (seen: SD1.5-architecture LoRA steps from 4.7 s to 49 s within minutes, CPU time equal to
wall time); one thread runs at a steady speed. The ratio measures the work RPO adds; more threads shrink the
UNet's share a little, so `--threads 0` on a quiet machine is the stricter (and noisier) check.

    .venv/bin/python benchmarks/bench_train_step.py [--repeats 7] [--tiny-steps 10] [--threads 1]
                                                    [--skip-memory] [--skip-sd15-arch]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD_HOME_ENV = "RPO_BENCH_TRAIN_STEP_HOME"  # a memory child works in its parent's home and leaves it alone
OWN_HOME = CHILD_HOME_ENV not in os.environ
HOME = Path(tempfile.mkdtemp(prefix="rpo-bench-bench-")) if OWN_HOME else Path(os.environ[CHILD_HOME_ENV])
os.environ["RPO_BENCH_HOME"] = str(HOME)  # before importing rpo_bench: everything lands in the temp home
os.environ["HF_HUB_OFFLINE"] = "1"

import psutil  # noqa: E402
import torch  # noqa: E402

from rpo_bench.training.config import build_config  # noqa: E402
from rpo_bench.training.trainer import Trainer  # noqa: E402

PAIRS = 8  # M: pairs per device per micro-step
RESOLUTION = 64  # pixels: 8x8 latents ("small latents"); tiny-sd15 is native at 64, the SD1.5 UNet at 512
TIME_TARGET = 1.05
MEMORY_TARGET = 0.6
GIB = 1024**3
MEMORY_FLOOR = 1.5 * GIB  # the guard kills a memory child when the machine's available memory drops below this
RESULT_MARK = "BENCH_RESULT "
EXTRA_PROMPTS = ("a red bicycle leaning on a brick wall", "a bowl of ramen on a wooden table",
                 "a lighthouse at dusk", "an astronaut riding a horse", "a snowy mountain village at night",
                 "a watercolor painting of a fox", "a close-up photo of a honeybee on a flower",
                 "a vintage car parked by the sea")


# -- fixtures: preference pairs and the SD1.5-architecture pipeline ------------------------------------------
def make_preference_data() -> tuple[Path, int]:
    """>= 8 AI-feedback pairs from tiny-sd15 judged by tiny-clip (best-worst of 2 seeds per prompt).

    The CLIP score is 100 max(cos, 0); the random tiny CLIP gives about half the prompts a negative cosine, so
    both seeds score 0, tie and give no pair. The 8 smoke prompts then give fewer than 8 pairs: 8 more are added.
    """
    from rpo_bench.training.data import load_preference_data
    from rpo_bench.training.pairs import make_pairs

    out = HOME / "pairs"
    summary = make_pairs(model="tiny-sd15", prompts="smoke", metric="tiny-clip", out_dir=out, k=2,
                         mode="best-worst", show_progress=False)
    if summary["pairs"] < PAIRS:  # a tied score drops a prompt: add prompts so a micro-batch has no repeats
        print(f"  make_pairs: smoke gives {summary['pairs']} pairs (< {PAIRS}); adding {len(EXTRA_PROMPTS)} prompts")
        from rpo_bench.prompts import load_prompt_set

        prompt_file = HOME / "prompts.txt"
        texts = [p.text for p in load_prompt_set("smoke").prompts] + list(EXTRA_PROMPTS)
        prompt_file.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        shutil.rmtree(out)
        summary = make_pairs(model="tiny-sd15", prompts=str(prompt_file), metric="tiny-clip", out_dir=out, k=2,
                             mode="best-worst", show_progress=False)
    print(f"  make_pairs: {summary['prompts']} prompts, {summary['pairs']} pairs, "
          f"{summary['dropped_for_margin']} prompts dropped for a tied score")
    return out, len(load_preference_data(str(out)))


def build_sd15_arch(path: Path, seed: int = 0) -> Path:
    """The real SD1.5 UNet (random weights) with tiny-sd15's VAE and a 768-wide, 2-layer CLIP text encoder."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from rpo_bench.models.tiny import _SD_BETAS, _save_atomically, _text_config, _vae
    from rpo_bench.models.tokenizer import EOS_TOKEN, clip_tokenizer

    def build():
        text_config = _text_config()
        # Only the width grows, to SD1.5's 768 so the UNet's cross-attention fits; 2 layers, not 12.
        text_config.hidden_size, text_config.intermediate_size, text_config.num_attention_heads = 768, 3072, 12
        unet = UNet2DConditionModel(  # runwayml/stable-diffusion-v1-5 unet/config.json
            sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768,
            attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu", center_input_sample=False,
            downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1)
        scheduler = PNDMScheduler(**_SD_BETAS, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
        return StableDiffusionPipeline(vae=_vae(scaling_factor=0.18215), text_encoder=CLIPTextModel(text_config),
                                       tokenizer=clip_tokenizer(EOS_TOKEN), unet=unet, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    return _save_atomically(path, seed, "model_index.json", build)


def unet_parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model_dir / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as handle:
        return sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())


def train_config(method: str, model: str, data: Path, lora_rank: int, steps: int, pairs: int = PAIRS):
    values = dict(method=method, model=model, data=str(data), steps=steps, pairs_per_device=pairs,
                  lora_rank=lora_rank, lr=1e-6, device="cpu", log_every=0, seed=0, resolution=RESOLUTION,
                  output=str(HOME / "runs" / f"{Path(model).name}-{method}-r{lora_rank}-{time.time_ns()}"))
    if method == "rpo":
        values["embed_model"] = "tiny-clip"  # offline; "auto" would pick the real CLIP for a folder model
    return build_config(None, None, values)


# -- step time ------------------------------------------------------------------------------------------------
def time_steps(model: str, data: Path, lora_rank: int, rounds: int) -> dict[str, dict[str, list]]:
    """Wall and CPU seconds of single optimizer steps of a DPO and an RPO trainer with identical settings.

    The steps alternate DPO, RPO, RPO, DPO, ... so each DPO step has an RPO step within a second or two of it:
    the machine's busy phases last seconds, and a paired step sees the same phase. Both trainers take the same
    step numbers, hence the same pairs, timesteps and noise.
    """
    trainers = {}
    for method in ("dpo", "rpo"):
        trainer = Trainer(train_config(method, model, data, lora_rank, rounds + 1), show_progress=False)
        trainer.setup()
        trainer._optimizer_step(0)  # warm-up: lazy allocations, optimizer state, first-call dispatch
        trainers[method] = trainer
    times: dict[str, dict[str, list]] = {"wall": {"dpo": [], "rpo": []}, "cpu": {"dpo": [], "rpo": []}}
    for r in range(rounds):
        for method in ("dpo", "rpo") if r % 2 == 0 else ("rpo", "dpo"):
            wall, cpu = time.perf_counter(), time.process_time()
            trainers[method]._optimizer_step(1 + r)
            times["wall"][method].append(time.perf_counter() - wall)
            times["cpu"][method].append(time.process_time() - cpu)
    times["loss"] = time_losses(trainers)
    del trainers, trainer
    import gc

    gc.collect()
    return times


def time_losses(trainers: dict, iterations: int = 200) -> dict[str, list]:
    """Seconds of `_loss` (weights, loss, diagnostics) + its backward to the 4M errors, without the UNet: the
    only part of a step where RPO does anything DPO does not. Alternated in blocks of 10 calls."""
    m = PAIRS
    indices = list(range(m))
    generator = torch.Generator().manual_seed(0)
    values = {k: torch.rand(m, generator=generator) * 0.1 for k in ("model_err_w", "model_err_l", "ref_err_w",
                                                                     "ref_err_l")}
    out: dict[str, list] = {"dpo": [], "rpo": []}
    for block in range(iterations // 10):
        for method in ("dpo", "rpo") if block % 2 == 0 else ("rpo", "dpo"):
            for _ in range(10):
                errors = {k: v.clone().requires_grad_(k.startswith("model")) for k, v in values.items()}
                start = time.perf_counter()
                loss, _ = trainers[method]._loss(errors, indices)
                loss.backward()
                out[method].append(time.perf_counter() - start)
    return out


def report_times(label: str, times: dict[str, dict[str, list]]) -> float:
    wall, cpu = times["wall"], times["cpu"]
    dpo, rpo = wall["dpo"], wall["rpo"]
    ratio = statistics.median(rpo) / statistics.median(dpo)
    paired = statistics.median(b / a for a, b in zip(dpo, rpo, strict=True))
    cpu_ratio = statistics.median(cpu["rpo"]) / statistics.median(cpu["dpo"])
    best = min(rpo) / min(dpo)
    extra_ms = statistics.median(b - a for a, b in zip(dpo, rpo, strict=True)) * 1000
    for method, values in wall.items():
        shown = ", ".join(f"{v * 1000:.0f}" for v in values[:12]) + (", ..." if len(values) > 12 else "")
        print(f"  {label} {method.upper()}: {statistics.median(values) * 1000:9.1f} ms/step wall, "
              f"{statistics.median(cpu[method]) * 1000:9.1f} ms CPU (medians of {len(values)}; wall: {shown})")
    verdict = "ok" if ratio <= TIME_TARGET else "MISSED"
    print(f"{label}: RPO / DPO step time = {ratio:.3f} (target <= {TIME_TARGET})  {verdict}  "
          f"[median of paired ratios {paired:.3f}, CPU time {cpu_ratio:.3f}, best / best {best:.3f}, "
          f"median paired difference {extra_ms:+.1f} ms]")
    loss = {k: statistics.median(v) for k, v in times["loss"].items()}
    print(f"  {label} loss + its backward alone (no UNet): DPO {loss['dpo'] * 1000:.2f} ms, RPO "
          f"{loss['rpo'] * 1000:.2f} ms: RPO's own work is {(loss['rpo'] - loss['dpo']) * 1000:+.2f} ms = "
          f"{(loss['rpo'] - loss['dpo']) / statistics.median(dpo) * 100:+.2f}% of a DPO step")
    spread = max(max(v) / min(v) for v in wall.values())
    if spread > 1.5:
        print(f"  note: {spread:.1f}x spread between steps: the machine was busy; trust the ratio when the "
              "estimates agree, or rerun with more --repeats")
    return ratio


# -- peak memory (child processes) ---------------------------------------------------------------------------
def _rss() -> int:
    return psutil.Process().memory_info().rss


def _hwm() -> int:
    """VmHWM: the peak resident set of this process (since start, or since the last reset_peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def child_memory(kind: str, model: str, data: Path, pairs: int) -> None:
    """Runs in a fresh process: setup + 2 optimizer steps of DPO, LoRA rank 4 or full; prints its memory."""
    rss_imports = _rss()
    trainer = Trainer(train_config("dpo", model, data, 4 if kind == "lora" else 0, 2, pairs), show_progress=False)
    trainer.setup()
    rss_setup, hwm_setup = _rss(), _hwm()
    reset = _reset_peak()
    for step in range(2):
        trainer._optimizer_step(step)
    result = {"kind": kind, "pairs": pairs, "rss_imports": rss_imports, "rss_setup": rss_setup,
              "peak_setup": hwm_setup, "peak_training": _hwm() if reset else None,
              "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "trainable": sum(p.numel() for p in trainer.parameters),
              "reference_copy": trainer.reference is not None}
    print(RESULT_MARK + json.dumps(result), flush=True)


def guard_this_process() -> None:
    """Exit (deleting the temp home) before this process runs the machine out of memory: a safety net."""
    import threading

    def watch() -> None:
        while True:
            if psutil.virtual_memory().available < MEMORY_FLOOR:
                print(f"ABORTED by the memory guard: available memory fell below {MEMORY_FLOOR / GIB:.1f} GiB",
                      flush=True)
                if OWN_HOME:
                    shutil.rmtree(HOME, ignore_errors=True)
                os._exit(3)
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


def run_memory_child(kind: str, model: Path, data: Path, pairs: int) -> dict | None:
    """Start the child, poll the machine's available memory, kill the child (only it) before it runs out."""
    env = {**os.environ, CHILD_HOME_ENV: str(HOME)}
    command = [sys.executable, __file__, "--child-memory", kind, "--child-model", str(model), "--child-data",
               str(data), "--child-pairs", str(pairs)]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    guard_killed = False
    lowest_available = psutil.virtual_memory().available
    while child.poll() is None:
        available = psutil.virtual_memory().available
        lowest_available = min(lowest_available, available)
        if available < MEMORY_FLOOR:
            child.kill()
            guard_killed = True
            break
        time.sleep(0.05)
    output, _ = child.communicate()
    if guard_killed:
        print(f"  {kind}-DPO child KILLED by the memory guard: available memory fell below "
              f"{MEMORY_FLOOR / GIB:.1f} GiB")
        return None
    for line in output.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
            result["lowest_available"] = lowest_available
            result["children_maxrss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
            return result
    print(f"  {kind}-DPO child failed (exit {child.returncode}):\n" + "\n".join(output.splitlines()[-20:]))
    return None


def measure_memory(model: Path, data: Path) -> None:
    params = unet_parameters(model)
    # Full DPO holds the UNet, its frozen reference copy, gradients and two AdamW states: 5 fp32 copies.
    need = 5 * 4 * params + 2 * GIB
    available = psutil.virtual_memory().available
    print(f"peak memory: SD1.5-architecture UNet, {params / 1e6:.0f}M parameters; full DPO needs about "
          f"{need / GIB:.1f} GiB (5 fp32 copies + ~2 GiB), {available / GIB:.1f} GiB available now")
    pairs = PAIRS
    if need + MEMORY_FLOOR > available:
        print("  not enough memory for full DPO at this UNet size: skipped (activations at 8x8 latents are a few "
              "hundred MB, so fewer pairs per device would not make it fit)")
        return
    results = {}
    for kind in ("lora", "full"):  # LoRA first: RUSAGE_CHILDREN (the max over children) is then exact for both
        started = time.perf_counter()
        result = run_memory_child(kind, model, data, pairs)
        if result is None:
            return
        results[kind] = result
        train = f", training only {result['peak_training'] / GIB:.2f}" if result["peak_training"] else ""
        print(f"  {kind}-DPO ({result['pairs']} pairs, {result['trainable'] / 1e6:.1f}M trainable, reference copy: "
              f"{result['reference_copy']}): RSS after imports {result['rss_imports'] / GIB:.2f} GiB, after setup "
              f"(loaded, before training) {result['rss_setup'] / GIB:.2f}, peak {result['peak'] / GIB:.2f} GiB "
              f"(setup {result['peak_setup'] / GIB:.2f}{train}; RUSAGE_CHILDREN "
              f"{result['children_maxrss'] / GIB:.2f}); lowest available {result['lowest_available'] / GIB:.1f} "
              f"GiB; {time.perf_counter() - started:.0f} s")
    ratio = results["lora"]["peak"] / results["full"]["peak"]
    verdict = "ok" if ratio <= MEMORY_TARGET else "MISSED"
    print(f"LoRA-DPO / full-DPO peak memory = {ratio:.3f} (target <= {MEMORY_TARGET})  {verdict}")
    lora_train = results["lora"]["peak"] - results["lora"]["rss_imports"]
    full_train = results["full"]["peak"] - results["full"]["rss_imports"]
    print(f"  without the process baseline (RSS after imports): {lora_train / full_train:.3f}")


# -- main -----------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7,
                        help="alternating rounds (one DPO + one RPO step each) on the SD1.5-architecture UNet")
    parser.add_argument("--tiny-steps", type=int, default=10,
                        help="tiny-sd15 steps are short: it runs --repeats x this many alternating rounds")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the step times (0: torch's default); see the module docstring")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--skip-sd15-arch", action="store_true",
                        help="only tiny-sd15: no SD1.5-architecture UNet (so no memory measurement either)")
    parser.add_argument("--child-memory", choices=("lora", "full"), help=argparse.SUPPRESS)
    parser.add_argument("--child-model", help=argparse.SUPPRESS)
    parser.add_argument("--child-data", help=argparse.SUPPRESS)
    parser.add_argument("--child-pairs", type=int, default=PAIRS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the trainer's frozen-module .to(dtype) warns on every setup
    if args.child_memory:
        child_memory(args.child_memory, args.child_model, Path(args.child_data), args.child_pairs)
        return 0
    repeats = max(args.repeats, 1)
    guard_this_process()
    default_threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"home: {HOME}  torch {torch.__version__}, {torch.get_num_threads()} thread(s) for the step times "
          f"(default {default_threads}), cpus {os.cpu_count()}, available memory "
          f"{psutil.virtual_memory().available / GIB:.1f} GiB")

    start = time.perf_counter()
    data, pairs = make_preference_data()
    print(f"preference data: {pairs} pairs from tiny-sd15 judged by tiny-clip, {time.perf_counter() - start:.1f} s "
          f"(excluded); M = {PAIRS} pairs per step, DPO beta 5000, RPO tau 0.5 embed joint (tiny-clip)")
    sd15_arch = None
    if not args.skip_sd15_arch:
        start = time.perf_counter()
        sd15_arch = build_sd15_arch(HOME / "models" / "sd15-arch")
        print(f"SD1.5-architecture pipeline ({unet_parameters(sd15_arch) / 1e6:.0f}M-parameter UNet, random "
              f"weights; tiny VAE; 768-wide 2-layer CLIP text encoder) built in {time.perf_counter() - start:.1f} s "
              f"(excluded); trained at 64 px = 8x8 latents")
        if not args.skip_memory:  # first, while this process is still small
            measure_memory(sd15_arch, data)

    ratios = {}
    for label, lora_rank in (("tiny-sd15 LoRA r4", 4), ("tiny-sd15 full", 0)):
        times = time_steps("tiny-sd15", data, lora_rank, repeats * max(args.tiny_steps, 1))
        ratios[label] = report_times(label, times)
    if sd15_arch is not None:
        label = "SD1.5-arch LoRA r4"
        ratios[label] = report_times(label, time_steps(str(sd15_arch), data, 4, repeats))
    print("summary: " + ", ".join(f"{k}: RPO / DPO = {v:.3f}" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    finally:
        if OWN_HOME:
            shutil.rmtree(HOME, ignore_errors=True)
