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

With `--device cuda`: the SD1.5-architecture pipeline is the full one (12-layer text encoder, full VAE), trained
at its native 512 px in fp16 mixed precision with gradient checkpointing (the published recipe); LoRA and full
training are both timed (two full trainers fit side by side on a large GPU), and the peak GPU memory
(torch.cuda.max_memory_allocated) of each trainer's setup + first step is recorded in-process: DPO and RPO,
LoRA and full.

    .venv/bin/python benchmarks/bench_train_step.py [--repeats 7] [--tiny-steps 10] [--threads 1]
        [--skip-memory] [--skip-sd15-arch] [--device cpu|cuda] [--arch-scale full|mini] [--json FILE]
"""

from __future__ import annotations

import argparse
import atexit
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
if OWN_HOME:  # also when an import below fails (a memory child leaves its parent's home alone)
    atexit.register(shutil.rmtree, HOME, ignore_errors=True)
os.environ["RPO_BENCH_HOME"] = str(HOME)  # before importing rpo_bench: everything lands in the temp home
os.environ["HF_HUB_OFFLINE"] = "1"

import psutil  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.common` when run as a file
from benchmarks.common import (  # noqa: E402
    ARCH_SCALES,
    add_common_options,
    build_on,
    positive,
    row,
    run_script,
    save_pipeline_atomically,
    sd15_pipeline,
    time_losses,
)
from rpo_bench.training.config import build_config  # noqa: E402
from rpo_bench.training.trainer import Trainer  # noqa: E402

PAIRS = 8  # M: pairs per device per micro-step
RESOLUTION = 64  # pixels: 8x8 latents ("small latents"); tiny-sd15 is native at 64, the SD1.5 UNet at 512
GPU_RESOLUTION = 512  # on a GPU the SD1.5-architecture UNet trains at its native size
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
        from rpo_bench.evaluation.prompts import load_prompt_set

        prompt_file = HOME / "prompts.txt"
        texts = [p.text for p in load_prompt_set("smoke").prompts] + list(EXTRA_PROMPTS)
        prompt_file.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        shutil.rmtree(out)
        summary = make_pairs(model="tiny-sd15", prompts=str(prompt_file), metric="tiny-clip", out_dir=out, k=2,
                             mode="best-worst", show_progress=False)
    print(f"  make_pairs: {summary['prompts']} prompts, {summary['pairs']} pairs, "
          f"{summary['dropped_for_margin']} prompts dropped for a tied score")
    return out, len(load_preference_data(str(out)))


def build_sd15_arch(path: Path, device: str, scale: str) -> Path:
    """The SD1.5 UNet (random weights); on a CPU with a 2-layer text encoder and the mini VAE (as tiny-sd15's),
    on a GPU the whole SD1.5 pipeline. Built on the device (fast on a GPU), saved in fp32 as a model folder."""
    cpu = device == "cpu"
    pipe = build_on(device, torch.float32, lambda: sd15_pipeline(scale, 2 if cpu else None, "mini" if cpu else None))
    return save_pipeline_atomically(pipe, path)


def unet_parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model_dir / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as handle:
        return sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())


def train_config(method: str, model: str, data: Path, lora_rank: int, steps: int, pairs: int = PAIRS,
                 device: str = "cpu", resolution: int = RESOLUTION):
    values = dict(method=method, model=model, data=str(data), steps=steps, pairs_per_device=pairs,
                  lora_rank=lora_rank, lr=1e-6, device=device, log_every=0, seed=0, resolution=resolution,
                  output=str(HOME / "runs" / f"{Path(model).name}-{method}-r{lora_rank}-{time.time_ns()}"))
    if device == "cuda":  # the published GPU recipe (training/config.py): fp16 autocast, checkpointed UNet
        values.update(mixed_precision="fp16", gradient_checkpointing=True)
    if method == "rpo":
        values["embed_model"] = "tiny-clip"  # offline; "auto" would pick the real CLIP for a folder model
    return build_config(None, None, values)


# -- step time ------------------------------------------------------------------------------------------------
def time_steps(model: str, data: Path, lora_rank: int, rounds: int, device: str = "cpu",
               resolution: int = RESOLUTION) -> dict[str, dict]:
    """Wall and CPU seconds of single optimizer steps of a DPO and an RPO trainer with identical settings.

    The steps alternate DPO, RPO, RPO, DPO, ... so each DPO step has an RPO step within a second or two of it:
    the machine's busy phases last seconds, and a paired step sees the same phase. Both trainers take the same
    step numbers, hence the same pairs, timesteps and noise. On cuda it also records each trainer's peak GPU
    memory over its setup and first step, above what was allocated before (the other trainer's weights and
    optimizer states stay allocated between steps; gradients are freed, so that subtraction is exact).
    """
    import gc

    cuda = device == "cuda"
    trainers = {}
    times: dict[str, dict] = {"wall": {"dpo": [], "rpo": []}, "cpu": {"dpo": [], "rpo": []}, "peak_gib": {}}
    for method in ("dpo", "rpo"):
        if cuda:
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        trainer = Trainer(train_config(method, model, data, lora_rank, rounds + 1, device=device,
                                       resolution=resolution), show_progress=False)
        trainer.setup()
        trainer._optimizer_step(0)  # warm-up: lazy allocations, optimizer state, first-call dispatch
        if cuda:
            torch.cuda.synchronize()
            times["peak_gib"][method] = (torch.cuda.max_memory_allocated() - before) / GIB
        trainers[method] = trainer
    for r in range(rounds):
        for method in ("dpo", "rpo") if r % 2 == 0 else ("rpo", "dpo"):
            wall, cpu = time.perf_counter(), time.process_time()
            trainers[method]._optimizer_step(1 + r)  # returns floats (grad norm): waits for the GPU
            times["wall"][method].append(time.perf_counter() - wall)
            times["cpu"][method].append(time.process_time() - cpu)
    times["loss"] = time_losses(trainers, PAIRS, device)
    del trainers, trainer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()  # the next configuration measures its own peak from a clean device
    return times


def report_times(label: str, times: dict[str, dict], detail_rows: bool = False) -> list[dict]:
    """Prints the comparison; returns the RPO / DPO row (and, with `detail_rows`, step times and peaks)."""
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
    peaks = times["peak_gib"]
    if peaks:
        print(f"  {label} peak GPU memory over setup + first step: DPO {peaks['dpo']:.2f} GiB, "
              f"RPO {peaks['rpo']:.2f} GiB")
    rows = [row(f"train step RPO / DPO, {label}", ratio, "ratio", ratio, f"<= {TIME_TARGET}",
                dpo_s=statistics.median(dpo), rpo_s=statistics.median(rpo), paired=paired, cpu_ratio=cpu_ratio,
                best_over_best=best, loss_dpo_ms=loss["dpo"] * 1000, loss_rpo_ms=loss["rpo"] * 1000,
                rounds=len(dpo), peak_gib=peaks or None)]
    if detail_rows:
        for method, values in wall.items():
            rows.append(row(f"train step {method.upper()}, {label}", statistics.median(values), "s/step"))
        for method, peak in peaks.items():
            rows.append(row(f"peak GPU memory {method.upper()}, {label}", peak, "GiB"))
    return rows


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


def full_dpo_need(model: Path) -> int:
    """Full DPO holds the UNet, its frozen reference copy, gradients and two AdamW states: 5 fp32 copies."""
    return 5 * 4 * unet_parameters(model) + 2 * GIB


def measure_memory(model: Path, data: Path, width: str = "auto", scale: str = "full") -> list[dict]:
    label = f"SD1.5-arch {scale}"
    short = full_dpo_need(model) + MEMORY_FLOOR > psutil.virtual_memory().available
    if width == "half" or (width == "auto" and short and scale == "full"):
        # The claim (no reference copy, no gradients or Adam states for the frozen weights) does not depend on the
        # width; a half-width UNet needs a quarter of the memory, so the ratio can be checked on a busy machine.
        print(f"peak memory: full DPO on the {scale} UNet needs {full_dpo_need(model) / GIB:.1f} GiB + "
              f"{MEMORY_FLOOR / GIB:.1f} GiB margin, {psutil.virtual_memory().available / GIB:.1f} GiB available "
              "(or --memory-width half): measuring on a half-width SD1.5 architecture instead")
        model = build_sd15_arch(HOME / "models" / "sd15-arch-half", "cpu", "half")
        label = "SD1.5-arch half width"
    params = unet_parameters(model)
    need = full_dpo_need(model)
    available = psutil.virtual_memory().available
    print(f"peak memory: {label} UNet, {params / 1e6:.0f}M parameters; full DPO needs about "
          f"{need / GIB:.1f} GiB (5 fp32 copies + ~2 GiB), {available / GIB:.1f} GiB available now")
    pairs = PAIRS
    if need + MEMORY_FLOOR > available:
        print("  not enough memory for full DPO at this UNet size: skipped (activations at 8x8 latents are a few "
              "hundred MB, so fewer pairs per device would not make it fit)")
        return [row(f"peak memory LoRA-DPO / full-DPO: not measured, {available / GIB:.1f} GiB free of the "
                    f"{(need + MEMORY_FLOOR) / GIB:.1f} needed", None, "ratio", None, f"<= {MEMORY_TARGET}",
                    need_gib=need / GIB, available_gib=available / GIB)]
    results = {}
    for kind in ("lora", "full"):  # LoRA first: RUSAGE_CHILDREN (the max over children) is then exact for both
        started = time.perf_counter()
        result = run_memory_child(kind, model, data, pairs)
        if result is None:
            return [row(f"peak memory LoRA-DPO / full-DPO: not measured, the {kind}-DPO child failed or was "
                        "stopped by the memory guard", None, "ratio", None, f"<= {MEMORY_TARGET}")]
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
    label = f"{label} ({params / 1e6:.0f}M), M = {pairs}, {RESOLUTION} px, CPU RSS"
    return [row(f"peak memory LoRA-DPO, {label}", results["lora"]["peak"] / GIB, "GiB"),
            row(f"peak memory full-DPO, {label}", results["full"]["peak"] / GIB, "GiB"),
            row(f"peak memory LoRA-DPO / full-DPO, {label}", ratio, "ratio", ratio, f"<= {MEMORY_TARGET}",
                without_baseline=lora_train / full_train, trainable_lora=results["lora"]["trainable"],
                trainable_full=results["full"]["trainable"])]


def gpu_memory_rows(label: str, lora: dict, full: dict) -> list[dict]:
    """LoRA-DPO / full-DPO from the GPU peaks time_steps recorded (each trainer alone on the device then)."""
    ratio = lora["peak_gib"]["dpo"] / full["peak_gib"]["dpo"]
    verdict = "ok" if ratio <= MEMORY_TARGET else "MISSED"
    print(f"LoRA-DPO / full-DPO peak GPU memory = {ratio:.3f} (target <= {MEMORY_TARGET})  {verdict}")
    return [row(f"peak GPU memory LoRA-DPO / full-DPO, {label}", ratio, "ratio", ratio, f"<= {MEMORY_TARGET}",
                lora_gib=lora["peak_gib"], full_gib=full["peak_gib"])]


# -- main -----------------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--arch-scale", choices=ARCH_SCALES, default="full",
                        help="mini: a narrow SD1.5-architecture UNet (a fast check of the code path)")
    parser.add_argument("--memory-width", choices=("auto", "full", "half"), default="auto",
                        help="UNet width of the CPU peak-memory check; auto: full when full DPO fits in the free "
                             "memory, else half (215M parameters)")
    add_common_options(parser)
    parser.add_argument("--child-memory", choices=("lora", "full"), help=argparse.SUPPRESS)
    parser.add_argument("--child-model", help=argparse.SUPPRESS)
    parser.add_argument("--child-data", help=argparse.SUPPRESS)
    parser.add_argument("--child-pairs", type=int, default=PAIRS, help=argparse.SUPPRESS)
    return parser


def sd15_arch_rows(args: argparse.Namespace, data: Path, repeats: int) -> list[dict]:
    cuda = args.device == "cuda"
    start = time.perf_counter()
    sd15_arch = build_sd15_arch(HOME / "models" / "sd15-arch", args.device, args.arch_scale)
    resolution = GPU_RESOLUTION if cuda and args.arch_scale == "full" else RESOLUTION
    print(f"SD1.5-architecture pipeline ({unet_parameters(sd15_arch) / 1e6:.0f}M-parameter UNet, {args.arch_scale}, "
          f"random weights) built in {time.perf_counter() - start:.1f} s (excluded); trained at {resolution} px"
          + (", fp16 mixed precision, gradient checkpointing" if cuda else ""))
    rows = []
    if not args.skip_memory and not cuda:  # first, while this process is still small
        rows += measure_memory(sd15_arch, data, args.memory_width, args.arch_scale)
    label = f"SD1.5-arch {args.arch_scale} {resolution} px LoRA r4"
    lora = time_steps(str(sd15_arch), data, 4, repeats, args.device, resolution)
    rows += report_times(label, lora, detail_rows=True)
    if cuda:  # two full trainers (~15 GB each with fp32 Adam) fit side by side only on a large GPU
        label = f"SD1.5-arch {args.arch_scale} {resolution} px full"
        full = time_steps(str(sd15_arch), data, 0, repeats, args.device, resolution)
        rows += report_times(label, full, detail_rows=True)
        if not args.skip_memory:
            rows += gpu_memory_rows(f"SD1.5-arch {args.arch_scale} {resolution} px, M = {PAIRS}", lora, full)
    return rows


def main(args: argparse.Namespace) -> list[dict]:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the trainer's frozen-module .to(dtype) warns on every setup
    if args.child_memory:
        child_memory(args.child_memory, args.child_model, Path(args.child_data), args.child_pairs)
        return []
    repeats, tiny_steps = positive("--repeats", args.repeats), positive("--tiny-steps", args.tiny_steps)
    guard_this_process()
    default_threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"home: {HOME}  torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} thread(s) for "
          f"the step times (default {default_threads}), cpus {os.cpu_count()}, available memory "
          f"{psutil.virtual_memory().available / GIB:.1f} GiB")

    start = time.perf_counter()
    data, pairs = make_preference_data()
    print(f"preference data: {pairs} pairs from tiny-sd15 judged by tiny-clip, {time.perf_counter() - start:.1f} s "
          f"(excluded); M = {PAIRS} pairs per step, DPO beta 5000, RPO tau 0.5 embed joint (tiny-clip)")
    rows = []
    for label, lora_rank in (("tiny-sd15 LoRA r4", 4), ("tiny-sd15 full", 0)):
        times = time_steps("tiny-sd15", data, lora_rank, repeats * tiny_steps, args.device)
        rows += report_times(label, times)
    if not args.skip_sd15_arch:
        rows += sd15_arch_rows(args, data, repeats)
    print("summary: " + ", ".join(f"{r['what']}: {r['value']:.3f}" for r in rows if r["target"]))
    return rows


if __name__ == "__main__":
    try:
        raise SystemExit(run_script(main, parser()))
    finally:
        if OWN_HOME:
            shutil.rmtree(HOME, ignore_errors=True)
