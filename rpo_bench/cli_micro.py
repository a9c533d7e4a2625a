"""`rpo-bench micro build` and `rpo-bench micro preferences`."""

from __future__ import annotations

from pathlib import Path

import typer

micro_app = typer.Typer(help="The synthetic micro world: rebuild its models, build its preference set.")


@micro_app.command("build")
def build(
    out: Path | None = typer.Option(None, help="Output folder; default: the package's shipped assets."),
    seed: int = typer.Option(0, help="Seed of every stage."),
    clip_steps: int = typer.Option(1500, help="Micro CLIP training steps."),
    vae_steps: int = typer.Option(800, help="VAE training steps."),
    unet_steps: int = typer.Option(1200, help="Base UNet training steps."),
    judge_steps: int = typer.Option(3000, help="Judge CNN training steps (skipped when the judge exists)."),
    threads: int = typer.Option(1, help="torch threads (1 is fastest for these small models)."),
) -> None:
    """Retrain the judge, micro CLIP, VAE and base UNet from scratch (seeded; resumes at the unfinished stage)."""
    from rpo_bench.cli import console
    from rpo_bench.micro.build import ASSETS, build_micro

    report = build_micro(out or ASSETS, seed=seed, clip_steps=clip_steps, vae_steps=vae_steps, unet_steps=unet_steps,
                         judge_steps=judge_steps, threads=threads)
    for name, sha in report.get("sha256", {}).items():
        console.print(f"{sha}  {name}")


@micro_app.command("preferences")
def preferences(
    out: Path | None = typer.Option(None, help="Output folder; default $RPO_BENCH_HOME/preferences/micro-pickapic."),
    k: int = typer.Option(4, help="Images per prompt."),
    label_noise: float = typer.Option(0.1, help="Bradley-Terry temperature of the labels (0: noiseless)."),
    device: str = typer.Option("auto"),
) -> None:
    """Build micro-pickapic: micro-base samples of micro-train prompts, labelled by the judge with BT noise."""
    from rpo_bench.cli import console
    from rpo_bench.micro.preferences import build_micro_pickapic

    summary = build_micro_pickapic(out, k=k, label_noise=label_noise, device=device)
    console.print(" · ".join(f"{key} {value}" for key, value in summary.items()))
