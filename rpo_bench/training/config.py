"""Training configs: the settings every method shares (TrainConfig), each method's own in its file under
training/methods/, every field with help text, readable from TOML / YAML.

The CLI turns every field of every registered method into a `--flag`; a `--config` file and a named `--preset`
fill the same fields. Precedence: preset < config file < command-line flags.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from rpo_bench.core.config import home_dir
from rpo_bench.core.errors import BadInputError
from rpo_bench.core.user_files import read_config
from rpo_bench.evaluation.defaults import DEFAULT_MODELS

# A setting with a fixed set of values is annotated with a Literal: validate() checks every such field of every
# method's config against it, so a method file declares its choices once, in its dataclass.
Optimizer = Literal["adamw", "adafactor"]
MixedPrecision = Literal["no", "fp16", "bf16"]
TimestepSharing = Literal["pair", "batch"]
Device = Literal["auto", "cpu", "cuda"]  # under a launcher, cuda means the launcher's GPU for each process
# diffusers' schedulers that need nothing but the warm-up and total step counts (piecewise_constant needs rules).
LrScheduler = Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"]
# What `rpo-bench train` trains without --method; the base class, build_config and the help text all read it.
DEFAULT_METHOD = "rpo"
# What `rpo-bench train` fine-tunes without --model (or --style): the model `rpo-bench evaluate` evaluates without
# --models, so the two commands start from the same embedded micro world.
DEFAULT_MODEL = DEFAULT_MODELS[0]
# Where a run goes without --output: $RPO_BENCH_HOME/runs/<model>-<method>[-<style>]-seed<seed>.
RUNS_FOLDER = "runs"
# A fractional --heldout-pairs holds out at most this many pairs: enough for an accuracy with a standard error near
# 0.02, while 5% of Pick-a-Pic (50k pairs) would make every evaluation cost more than hundreds of training steps.
HELDOUT_CAP = 500


def setting(default: Any, help: str) -> Any:  # noqa: A002 - "help" reads best at the call sites
    """A config field: its default and the help text its `--flag` shows."""
    return field(default=default, metadata={"help": help})


def method_field(name: str) -> Any:
    """A method config's `method` field: its own name as the default, the shared help text."""
    return setting(name, TrainConfig.__dataclass_fields__["method"].metadata["help"])


@dataclass
class TrainConfig:
    """Fields every method shares."""

    method: str = setting(DEFAULT_METHOD, "Training method (rpo-bench methods lists them).")
    model: str = setting(DEFAULT_MODEL, "Base model: a registry name or a local diffusers folder.")
    data: str = setting("", "Preference data: a Hugging Face dataset id, a .jsonl / .parquet file, or a folder. "
                        "Required.")
    data_split: str = setting("train", "Split of a Hugging Face dataset.")
    data_limit: int = setting(0, "Use only the first N rows (0: all).")
    data_stream: bool = setting(False, "Stream the first --data-limit rows of a Hub dataset into a local folder "
                                "instead of downloading the whole dataset (Pick-a-Pic v2 is ~335 GB).")
    output: str = setting("", "Output folder: weights, rpo_bench.json, model card, checkpoints (default: "
                          f"$RPO_BENCH_HOME/{RUNS_FOLDER}/MODEL-METHOD[-STYLE]-seedSEED).")
    steps: int = setting(100, "Optimizer steps.")
    pairs_per_device: int = setting(4, "Preference pairs per device per micro-step (M of the RPO matrix, locally).")
    grad_accum: int = setting(1, "Micro-steps accumulated per optimizer step.")
    lr: float = setting(1e-4, "Peak learning rate.")
    lr_scheduler: LrScheduler = setting("constant_with_warmup", "diffusers scheduler name: constant, "
                                        "constant_with_warmup, linear, cosine, ...")
    warmup_steps: int = setting(0, "Learning-rate warm-up steps.")
    optimizer: Optimizer = setting("adamw", "adamw (SD1.5 recipe) or adafactor (SDXL recipe).")
    weight_decay: float = setting(1e-2, "AdamW weight decay.")
    max_grad_norm: float = setting(1.0, "Gradient clipping norm (0: off).")
    mixed_precision: MixedPrecision = setting("no", "no, fp16 or bf16 (accelerate autocast).")
    gradient_checkpointing: bool = setting(False, "Trade compute for memory in the UNet.")
    caption_dropout: float = setting(0.0, "Probability of training on the empty prompt (official DPO recipe: 0.2).")
    resolution: int = setting(0, "Training resolution in pixels (0: the base model's native size).")
    timestep_sharing: TimestepSharing = setting("pair", "pair: one t and noise per pair, shared by winner and loser "
                                    "(Diffusion-DPO); batch: one t for the whole micro-batch.")
    lora_rank: int = setting(0, "LoRA rank on the attention projections; 0 trains the full UNet.")
    lora_alpha: float = setting(0.0, "LoRA alpha (0: equal to the rank).")
    lora_targets: str = setting("to_q,to_k,to_v,to_out.0", "Comma-separated UNet module names that get LoRA.")
    seed: int = setting(0, "Seed of the data order, timesteps, noise, caption dropout and the held-out pairs.")
    heldout_pairs: float = setting(0.05, "Pairs held out of training (whole prompts at a time, chosen by --seed) to "
                              f"measure accuracy and margin on unseen pairs: a fraction below 1 (at most {HELDOUT_CAP} "
                              "pairs) or a number of pairs; 0: none.")
    eval_every: int = setting(50, "Measure the held-out pairs every N steps and at the end (0: only at the end).")
    checkpoint_every: int = setting(0, "Save a resumable checkpoint every N steps (0: only at the end).")
    snapshot_every: int = setting(0, "Also save the model every N steps as OUTPUT/snapshots/step-N, a folder that "
                                  "evaluate takes like the final output (0: none).")
    checkpoints_keep: int = setting(2, "How many checkpoints to keep.")
    log_every: int = setting(1, "Print diagnostics every N steps, and at the last step (0: only there).")
    device: Device = setting("auto", "auto, cpu, cuda (under a launcher: the launcher's device).")
    name: str = setting("", "Also register the result under this name in the user model registry.")
    style: str = setting("", "Teach style S (rpo-bench styles lists them): the preference data is built from the "
                         "style (see --pairs), and --model defaults to the style's base model.")
    pairs: str = setting("reference", "With --style: reference (winners: the style's reference images; losers: the "
                         "base model's images of their captions) or relabel (--data re-labelled so the image "
                         "style-prob:S rates more stylised wins; on the micro world --data defaults to "
                         "micro-pickapic).")
    style_losers: int = setting(1, "With --style --pairs reference: base-model images per reference, each one pair.")
    ema_decay: float = setting(0.0, "Keep an exponential moving average of the trained weights (LoRA or full), "
                               "updated after every optimizer step, and save and evaluate it instead of the last "
                               "weights; 0: off, e.g. 0.999.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Published recipes. Values as in the official Diffusion-DPO launchers (METHOD.md): learning rate 1e-8 scaled by
# the effective batch of 2048 pairs = 2.048e-5 (the paper's formula disagrees with its code by ~1000x; we follow
# the code). The effective batch of 2048 there is 16 GPUs x 1 pair x 128 accumulation steps; on fewer GPUs raise
# grad_accum to keep it.
PRESETS: dict[str, dict[str, Any]] = {
    "dpo-sd15-official": dict(method="dpo", model="sd15-base", beta=5000.0, lr=2.048e-5, optimizer="adamw",
                              pairs_per_device=1, grad_accum=128, steps=2000, lr_scheduler="constant_with_warmup",
                              warmup_steps=500, caption_dropout=0.2, mixed_precision="fp16", resolution=512,
                              gradient_checkpointing=True, lora_rank=0),
    "dpo-sdxl-official": dict(method="dpo", model="sdxl-base", beta=5000.0, lr=2.048e-5, optimizer="adafactor",
                              pairs_per_device=1, grad_accum=128, steps=2000, lr_scheduler="constant_with_warmup",
                              warmup_steps=500, caption_dropout=0.2, mixed_precision="fp16", resolution=1024,
                              gradient_checkpointing=True, lora_rank=0),
    # The micro world's recipe: point D of the sweep in docs/micro-recipe.md, where each value's reason is measured;
    # kto_beta and mapo_beta from E11's sweep there (KTO 1000 / 5000 / 20000, MaPO 0.1 / 1.0 at this budget).
    "micro": dict(model="micro-base", data="micro-pickapic", lora_rank=0, lr=1e-5, beta=5000.0, tau=0.5,
                  kto_beta=5000.0, mapo_beta=0.1, caption_dropout=0.1, pairs_per_device=16, steps=400,
                  eval_every=100, log_every=50),
    # train --style on a micro style, the same budget for every method: chosen by the sweep in docs/style-recipe.md.
    "micro-style": dict(model="micro-base", lora_rank=0, lr=1e-4, beta=5000.0, tau=0.5, caption_dropout=0.1,
                        pairs_per_device=16, steps=400, eval_every=100, log_every=50),
    "tiny-cpu": dict(model="tiny-sd15", pairs_per_device=4, steps=20, lr=1e-4, lora_rank=4, beta=500.0,
                     warmup_steps=0, checkpoint_every=10),
}


def all_fields() -> dict[str, Any]:
    """Every setting of every registered method, for the CLI flags and the config-file keys."""
    from rpo_bench.training.methods import all_fields as registered_fields  # noqa: PLC0415 - method files import this module at load time

    return registered_fields()


def method_fields(method: str) -> set[str]:
    return {f.name for f in fields(method_config(method))}


def method_config(method: str) -> type[TrainConfig]:
    """The config dataclass of a registered method (an unknown name: did you mean)."""
    from rpo_bench.training.methods import get_method  # noqa: PLC0415 - method files import this module at load time

    return get_method(method).config


@functools.cache
def field_choices(config_class: type[TrainConfig]) -> dict[str, tuple[str, ...]]:
    """The settings of a config class annotated with a Literal, and their accepted values."""
    hints = typing.get_type_hints(config_class)
    return {name: typing.get_args(hint) for name, hint in hints.items() if typing.get_origin(hint) is Literal}


FLAGS = "the command line"
# Every field's type is its default's type: bool, int, float or str.
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


class SettingValues(dict):
    """Settings read from one place; `source` (a file path, a preset) names that place in error messages."""

    def __init__(self, values: Mapping[str, Any], source: str):
        super().__init__(values)
        self.source = source


def read_config_file(path: Path) -> SettingValues:
    """TOML, YAML or JSON, through the one reader of user files (UTF-8, a regular file, one-line errors that name
    the file and the place); a `[train]` table or top-level keys."""
    values = read_config(path, "config file")
    values = values.get("train", values)
    if not isinstance(values, Mapping):
        raise BadInputError(f"config file {path}: [train] must be a table of settings")
    return SettingValues(values, str(path))


def _where(name: str, value: Any, sources: Mapping[str, str]) -> str:
    """How the user wrote a setting: `--lr 0.0` on the command line, `lr = 0.0 in c.toml` in a file."""
    source = sources.get(name, FLAGS)
    if source == FLAGS:
        shown = repr(value) if isinstance(value, str) else str(value)
        return f"--{name.replace('_', '-')} {shown}"
    return f"{name} = {value!r} in {source}"


def _checked_type(name: str, value: Any, sources: Mapping[str, str]) -> Any:
    """The value with the field's type, or one line naming it: a file's `steps = "two"` or `pin_diagonal =
    "false"` would otherwise reach the trainer as a truthy string. Integers are accepted for float fields."""
    expected = type(field_default(name))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    hint = ""
    if expected is float and isinstance(value, str) and str(sources.get(name, "")).endswith((".yaml", ".yml")):
        hint = " (YAML reads 1e-4 as text: write 1.0e-4)"
    raise BadInputError(f"{_where(name, value, sources)}: {type(value).__name__} given; accepted: "
                        f"{_TYPE_NAMES[expected]}{hint}")


def build_config(preset: str | None = None, file_values: Mapping[str, Any] | None = None,
                 overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Merge preset < file < overrides, pick the method's dataclass, and validate."""
    layers: list[tuple[Mapping[str, Any], str]] = []
    if preset:
        if preset not in PRESETS:
            close = difflib.get_close_matches(preset, PRESETS, n=3)
            raise BadInputError(f"unknown preset {preset!r}; " + (f"did you mean {', '.join(close)}?" if close
                                else f"known: {', '.join(PRESETS)}"))
        layers.append((PRESETS[preset], f"preset {preset}"))
    if file_values:
        layers.append((file_values, getattr(file_values, "source", "the config file")))
    layers.append(({k: v for k, v in (overrides or {}).items() if v is not None}, FLAGS))
    style = next((layer.get("style") for layer, _ in reversed(layers) if layer.get("style")), None)
    if style:  # between the preset and the file: a file's or a flag's --model still wins
        layers.insert(1 if preset else 0, (style_layer({"style": style}, preset), f"style {style}"))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer, source in layers:
        for key, value in layer.items():
            values[key], sources[key] = value, source
    unknown = sorted(set(values) - set(all_fields()))
    if unknown:
        where = sorted({sources[k] for k in unknown})
        raise BadInputError(f"unknown training setting(s) {', '.join(map(str, unknown))} ({', '.join(where)}); "
                            "rpo-bench train --help lists them")
    values = {k: _checked_type(k, v, sources) for k, v in values.items()}
    method = values.get("method", DEFAULT_METHOD)
    config_class = method_config(method)  # an unknown method: "did you mean"
    values["method"] = method
    allowed = method_fields(method)
    # a preset's (or the style's recipe's) settings for other methods are dropped quietly, a user's are refused
    recipe_keys = {k for layer, source in layers if source.startswith(("preset ", "style ")) for k in layer}
    misplaced = sorted(k for k in set(values) - allowed if k not in recipe_keys)
    if misplaced:
        from rpo_bench.training.methods import get_method, readers  # noqa: PLC0415 - method files import this module at load time

        refuses = get_method(method).refuses
        read_by = "; ".join(f"{k} is read by {', '.join(readers(k))}" + (f": {refuses[k]}" if k in refuses else "")
                            for k in misplaced)
        raise BadInputError(f"setting(s) {', '.join(misplaced)} do not apply to method {method} ({read_by})")
    values = {k: v for k, v in values.items() if k in allowed}
    config = config_class(**values)
    if not config.output:
        config.output = str(default_output(config))
    validate(config, sources)
    return config


def default_output(config: TrainConfig) -> Path:
    """The run folder when --output is not given: named by what tells runs apart at a glance (model, method, style,
    seed), under the home, so a second run of the same command finds the first (and is refused without --resume,
    as an explicit --output holding a run is)."""
    model = Path(config.model).name if ("/" in config.model or "\\" in config.model) else config.model
    parts = [model, config.method, *([config.style] if config.style else []), f"seed{config.seed}"]
    # a local model folder's name may hold anything: only characters every file system and shell take unquoted
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", "-".join(parts)).strip("-.") or "run"
    return home_dir() / RUNS_FOLDER / name


def _require(ok: bool, name: str, value: Any, accepted: str, sources: Mapping[str, str]) -> None:
    if not ok:
        raise BadInputError(f"{_where(name, value, sources)}; accepted: {accepted}")


def _choice(name: str, value: Any, accepted: tuple[str, ...], sources: Mapping[str, str] | None = None) -> None:
    if value not in accepted:
        raise BadInputError(f"{_where(name, value, sources or {})}; accepted: {', '.join(accepted)}")


def _number_ranges(config: TrainConfig, sources: Mapping[str, str]) -> None:
    """`not x > 0` rather than `x <= 0`: NaN fails every comparison, so it is refused too."""
    c = config
    for name in ("steps", "pairs_per_device", "grad_accum", "checkpoints_keep", "style_losers"):
        _require(getattr(c, name) >= 1, name, getattr(c, name), "an integer >= 1", sources)
    for name in ("data_limit", "warmup_steps", "checkpoint_every", "snapshot_every", "log_every", "eval_every"):
        _require(getattr(c, name) >= 0, name, getattr(c, name), "an integer >= 0 (0: off)", sources)
    _require(math.isfinite(c.lr) and c.lr > 0, "lr", c.lr, "a finite number > 0", sources)
    _require(math.isfinite(c.weight_decay) and c.weight_decay >= 0, "weight_decay", c.weight_decay,
             "a finite number >= 0", sources)
    # A negative clipping norm scales the gradient by a negative factor: silent gradient ascent.
    _require(math.isfinite(c.max_grad_norm) and c.max_grad_norm >= 0, "max_grad_norm", c.max_grad_norm,
             "a finite number > 0, or 0 for no clipping", sources)
    _require(math.isfinite(c.heldout_pairs) and c.heldout_pairs >= 0
             and (c.heldout_pairs < 1 or c.heldout_pairs.is_integer()), "heldout_pairs", c.heldout_pairs,
             "0 (none), a fraction 0 < f < 1 of the pairs, or a whole number of pairs", sources)
    _require(0 <= c.caption_dropout < 1, "caption_dropout", c.caption_dropout, "0 <= p < 1", sources)
    _require(c.resolution >= 0 and c.resolution % 8 == 0, "resolution", c.resolution,
             "0 (the model's native size) or a multiple of 8 pixels", sources)
    _require(c.lora_rank >= 0, "lora_rank", c.lora_rank, "0 (full UNet) or a positive rank", sources)
    _require(math.isfinite(c.lora_alpha) and c.lora_alpha >= 0, "lora_alpha", c.lora_alpha,
             "a finite number >= 0 (0: equal to the rank)", sources)
    if c.lora_rank > 0:
        _require(any(t.strip() for t in c.lora_targets.split(",")), "lora_targets", c.lora_targets,
                 "comma-separated UNet module names, e.g. to_q,to_k,to_v,to_out.0", sources)
    _require(0 <= c.ema_decay < 1, "ema_decay", c.ema_decay, "0 (off) or a decay 0 < d < 1, e.g. 0.999", sources)


def _check_style(config: TrainConfig, sources: Mapping[str, str]) -> None:
    """--style names a registered style; relabel needs a set to re-label (the micro world has its own)."""
    from rpo_bench.evaluation.preflight import require_fetchable  # noqa: PLC0415 - `train --help` builds its flags from this module, which must not load torch
    from rpo_bench.style.availability import absent_style  # noqa: PLC0415 - `train --help` builds its flags from this module, which must not load torch
    from rpo_bench.style.registry import get_style, reference_images  # noqa: PLC0415 - `train --help` builds its flags from this module, which must not load torch
    from rpo_bench.training.style_pairs import PAIR_MODES  # noqa: PLC0415 - `train --help` builds its flags from this module, which must not load torch

    style = get_style(config.style)
    _choice("pairs", config.pairs, PAIR_MODES, sources)
    if config.pairs == "relabel" and not config.data and not style.micro:
        raise BadInputError(f"--pairs relabel re-labels an existing preference set and --data is empty; accepted: "
                            f"--data PATH|HUB-ID (style {config.style!r} is not a micro style, which would use "
                            "micro-pickapic)")

    # an unreachable Hub: one line, no retries
    require_fetchable(models=[config.model], extra=[absent_style(style.name)])
    reference_images(style)  # unreadable, too few or not fetched: said before any folder or model is made


def style_layer(values: Mapping[str, Any], preset: str | None) -> dict[str, Any]:
    """What --style S fills in below a config file and flags: the style's base model, and for a micro style the
    measured micro-style recipe unless a preset was named."""
    from rpo_bench.style.registry import get_style  # noqa: PLC0415 - `train --help` builds its flags from this module, which must not load torch

    style = get_style(str(values["style"]))
    layer: dict[str, Any] = {}
    if style.micro and not preset:
        layer.update(PRESETS["micro-style"])
    layer["model"] = style.base_model
    return layer


def validate(config: TrainConfig, sources: Mapping[str, str] | None = None) -> None:
    """Every bad value gets one line naming it, where it came from and what is accepted, before anything loads."""
    sources = sources or {}
    if config.style:
        _check_style(config, sources)
    elif not config.data:
        raise BadInputError("--data is required: a Hugging Face dataset id, a .jsonl / .parquet file or a folder "
                            "(or --style S: data built from a style)")
    if not config.output:
        raise BadInputError("--output is required: the folder the trained weights go to")
    _number_ranges(config, sources)
    for name, accepted in field_choices(type(config)).items():
        _choice(name, getattr(config, name), accepted, sources)
    from rpo_bench.training.methods import get_method  # noqa: PLC0415 - method files import this module at load time

    get_method(config.method).validate(config, lambda ok, name, value, accepted: _require(ok, name, value, accepted,
                                                                                           sources))


# Settings that may change between a run and its resumption without changing the result.
# `steps` may grow only under a constant schedule: other schedules are functions of the total step count.
RESUME_SAFE_FIELDS = {"output", "checkpoint_every", "snapshot_every", "checkpoints_keep", "log_every", "device", "name",
                      "eval_every"}
# Settings a checkpoint written before they existed does not record, with the value that run in effect had.
ABSENT_MEANT = {"heldout_pairs": 0.0}
# The data is compared by its fingerprint (the trainer's resume check), not by its spelling: `pairs/`, `./pairs`
# and `/home/me/pairs` are the same data, and a renamed copy of it is too.
COMPARED_BY_FINGERPRINT = {"data"}


def resume_mismatch(saved: Mapping[str, Any], current: TrainConfig) -> list[str]:
    saved = {**ABSENT_MEANT, **saved}
    now = current.to_dict()
    safe = RESUME_SAFE_FIELDS | COMPARED_BY_FINGERPRINT
    if current.lr_scheduler.startswith("constant"):
        safe = safe | {"steps"}
    return [f"{k}: {saved.get(k)!r} then, {now.get(k)!r} now" for k in sorted(set(saved) | set(now))
            if k not in safe and saved.get(k) != now.get(k)]


def method_default(method: str, name: str) -> Any:
    """The default a method's own config gives setting `name`."""
    spec = {f.name: f for f in fields(method_config(method))}[name]
    return spec.default if spec.default is not MISSING else None


def field_default(name: str) -> Any:
    f = all_fields()[name]
    return f.default if f.default is not MISSING else None


def parse_setting(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` from a command line (`--set lr=3e-4`), the value read as the setting's type; build_config then
    checks its range like any flag's."""
    key, sep, raw = text.partition("=")
    key = key.strip().removeprefix("--").replace("-", "_")
    if not sep or key not in all_fields():
        raise BadInputError(f"--set {text!r}; accepted: KEY=VALUE with KEY a training setting "
                            "(rpo-bench train --help lists them), e.g. lr=3e-4")
    kind = type(field_default(key))
    raw = raw.strip()
    try:
        if kind is bool:
            return key, {"true": True, "false": False}[raw.lower()]
        return key, kind(raw) if kind in (int, float) else raw
    except (KeyError, ValueError) as exc:
        accepted = "true or false" if kind is bool else f"a{'n integer' if kind is int else ' number'}"
        raise BadInputError(f"--set {text!r}: {raw!r} is not {accepted}") from exc
