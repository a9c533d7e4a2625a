"""`rpo-bench train`, `pairs` and `presets`: flags are generated from the training config dataclasses, so every
field is a flag with its help text, and a new field needs no CLI change."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import typer
from rich.table import Table

from rpo_bench.cli.console import console

_TYPES = {bool: bool, int: int, float: float, str: str}

# `train --help` in panels, in this order, each setting in its panel's list most-used first. A setting listed
# nowhere (a new method's, a new shared one) still shows: read by only some methods under Method, else Advanced.
PANELS: dict[str, tuple[str, ...]] = {
    "Data": ("data", "data_limit", "heldout_pairs", "data_split", "data_stream"),
    "Model": ("model", "lora_rank", "lora_alpha", "lora_targets", "resolution"),
    "Method": ("method", "preset", "beta", "tau", "kto_beta", "mapo_beta", "embed_mode", "embed_model", "contrast",
               "weight_scale", "placement", "pin_diagonal", "winner_preserving", "mu", "sft_weight",
               "winner_penalty", "kto_labels", "kto_threshold", "lambda_d", "lambda_u", "positive_ratio", "mapo_snr"),
    "Optimisation": ("steps", "lr", "pairs_per_device", "grad_accum", "lr_scheduler", "warmup_steps", "optimizer",
                     "weight_decay", "max_grad_norm", "caption_dropout", "seed", "ema_decay"),
    "Style": ("style", "pairs", "style_losers"),
    "Output": ("output", "resume", "name", "overwrite_name", "quiet", "log_every", "eval_every", "checkpoint_every",
               "snapshot_every", "checkpoints_keep"),
    "Advanced": ("config_file", "device", "mixed_precision", "gradient_checkpointing", "timestep_sharing"),
}
_PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}


def _panel(name: str, shared: bool) -> str:
    return _PANEL_OF.get(name, "Advanced" if shared else "Method")


def _help_order(name: str, shared: bool) -> tuple[int, int]:
    """Where a flag shows in `train --help`: its panel's place, then its place in that panel (unlisted ones last)."""
    panel = _panel(name, shared)
    names = PANELS[panel]
    return list(PANELS).index(panel), names.index(name) if name in names else len(names)


def _train(config_file: Path | None, preset: str | None, resume: bool, quiet: bool, overwrite_name: bool,
           **flags) -> None:
    from rpo_bench.training.config import build_config, default_output, read_config_file
    from rpo_bench.training.output import RECORD_FILE, evaluate_command
    from rpo_bench.training.trainer import train

    file_values = read_config_file(config_file) if config_file else None
    config = build_config(preset, file_values, flags)
    if Path(config.output) == default_output(config):  # said before the run, so a long one can be found meanwhile
        console.print(f"output: {config.output} (the default; --output DIR puts a run elsewhere)", soft_wrap=True)
    result = train(config, resume=resume, show_progress=not quiet, overwrite_name=overwrite_name)
    if quiet:  # without --quiet the trainer has printed the last step's lines already: each is printed once
        from rpo_bench.training.output import format_diagnostics, format_heldout

        if result.history:
            console.print(format_diagnostics(result.history[-1]), soft_wrap=True)  # one line in a log file too
        if result.heldout:
            console.print(format_heldout(result.heldout[-1]), soft_wrap=True)
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    console.print(f"trained {config.method} for {result.steps_done} steps{resumed} -> {result.output}", soft_wrap=True)
    record = json.loads((result.output / RECORD_FILE).read_text(encoding="utf-8"))
    console.print(f"evaluate it: {evaluate_command(record, str(result.output))}", soft_wrap=True, markup=False)


def _shown_default(name: str, default: object) -> str:
    """How `train --help` shows a setting's default: the flag form for switches, nothing for required text."""
    if isinstance(default, bool):
        flag = name.replace("_", "-")
        return flag if default else f"no-{flag}"
    # "" for --data (required), --output (its help says what the default folder is) and --name, whose empty default
    # means "not registered".
    return str(default)


def _build_train_command():
    from rpo_bench.training.config import all_fields, field_default, method_default
    from rpo_bench.training.methods import method_names, readers

    parameters = [
        inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
                          default=typer.Option(None, "--config", help="TOML / YAML / JSON file of settings "
                                               "(a \\[train] table or top-level keys).",
                                               rich_help_panel=_panel("config_file", True))),
        inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
                          default=typer.Option(None, help="A published recipe (rpo-bench presets).",
                                               rich_help_panel=_panel("preset", True))),
        inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, help="Continue the run in --output from its last checkpoint.",
                                               rich_help_panel=_panel("resume", True))),
        inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, help="No progress bar, stage headers or per-step diagnostics.",
                                               rich_help_panel=_panel("quiet", True))),
        inspect.Parameter("overwrite_name", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, help="With --name: replace an entry of that name in the user "
                                               "model registry (never a built-in model).",
                                               rich_help_panel=_panel("overwrite_name", True))),
    ]
    methods = method_names()
    for name, spec in all_fields().items():
        default = field_default(name)
        kind = _TYPES[type(default)]
        # The option's own default stays None, so an unset flag does not override a --config file or --preset;
        # the value a run gets without any of them is written into the help instead, its "[" escaped: rich would
        # take "[default: ...]" for markup and print nothing (and typer's show_default string adds parentheses).
        read_by = readers(name)
        defaults = {method: _shown_default(name, method_default(method, name)) for method in read_by}
        if name != "method" and len(set(defaults.values())) > 1:  # a default per method (kto's beta is not dpo's)
            shown = "; ".join(f"{method}: {value}" for method, value in defaults.items())
        else:
            shown = _shown_default(name, default)
        only = f" (read by {', '.join(read_by)})" if len(read_by) < len(methods) else ""
        parameters.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=kind | None,
            default=typer.Option(None, help=spec.metadata["help"] + only
                                 + (f" \\[default: {shown}]" if shown else ""),
                                 rich_help_panel=_panel(name, len(read_by) == len(methods)))))
    # typer lists panels in the order their first option comes, and options in signature order
    shared = {name: len(readers(name)) == len(methods) for name in all_fields()}
    parameters.sort(key=lambda p: _help_order(p.name, shared.get(p.name, True)))

    def train_command(**kwargs) -> None:
        """Fine-tune with Diffusion-RPO, Diffusion-DPO or SFT (LoRA or full) on preference pairs."""
        _train(kwargs.pop("config_file"), kwargs.pop("preset"), kwargs.pop("resume"), kwargs.pop("quiet"),
               kwargs.pop("overwrite_name"), **kwargs)

    train_command.__signature__ = inspect.Signature(parameters)
    return train_command


def register(app: typer.Typer) -> None:
    app.command("train")(_build_train_command())

    @app.command("presets")
    def presets() -> None:
        """Published training recipes usable as `rpo-bench train --preset NAME`."""
        from rpo_bench.training.config import PRESETS

        table = Table(title="training presets")
        table.add_column("name", no_wrap=True)
        table.add_column("settings")
        for name, values in PRESETS.items():
            table.add_row(name, ", ".join(f"{k}={v}" for k, v in values.items()))
        console.print(table)

    @app.command("pairs")
    def pairs(
        model: str = typer.Option(..., help="Model that generates the candidates (name or folder)."),
        prompts: str = typer.Option(..., help="Prompt set name or file."),
        metric: str = typer.Option(..., help="Metric that judges them (NAME or NAME:ARG)."),
        output: Path = typer.Option(..., help="Folder for pairs.jsonl and images/."),
        k: int = typer.Option(4, help="Images per prompt (seeds 0..k-1)."),
        mode: str = typer.Option("best-worst", help="best-worst: one pair per prompt; all: every pair over margin."),
        margin: float = typer.Option(0.0, help="Minimum score gap for a pair."),
        protocol: str | None = typer.Option(None, help="Sampling protocol; default: the model's own."),
        device: str = typer.Option("auto"),
        dtype: str = typer.Option("auto"),
        batch_size: int = typer.Option(4),
    ) -> None:
        """AI-feedback preference pairs: generate k images per prompt, score them, pair best against worst."""
        from rpo_bench.training.pairs import make_pairs

        summary = make_pairs(model=model, prompts=prompts, metric=metric, out_dir=output, k=k, mode=mode,
                             margin=margin, protocol=protocol, device=device, dtype=dtype, batch_size=batch_size)
        console.print(" · ".join(f"{key} {value}" for key, value in summary.items()))
