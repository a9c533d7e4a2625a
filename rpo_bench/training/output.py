"""What a finished training run leaves behind: weights diffusers can load, the record of how they were made,
a model card, and optionally an entry in the user's model registry."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tomllib

from rpo_bench.core.atomic import atomic_path, atomic_write
from rpo_bench.core.config import user_registry_file, writable_dir
from rpo_bench.core.errors import BadInputError
from rpo_bench.core.registry import read_toml
from rpo_bench.evaluation.defaults import CLI_DEFAULT_PROTOCOLS
from rpo_bench.models.catalog import MODELS
from rpo_bench.style.registry import get_style, references_fingerprint

RECORD_FILE = "rpo_bench.json"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
RECORD_FORMAT = "rpo-bench-train/1"
MODEL_CARD = "README.md"
# The first line of every card we write; a README.md without it is the user's and is never overwritten.
CARD_MARKER = "<!-- model card written by rpo-bench train; rewritten when the run is resumed -->"
LEGACY_CARD_LINE = "Trained with rpo-bench: "  # cards written before the marker existed
RUN_FILES = (RECORD_FILE, "checkpoints", "train_log.jsonl")
log = logging.getLogger(__name__)


def is_training_run(folder: Path) -> bool:
    """A folder rpo-bench train wrote: its record, its checkpoints or its log."""
    return any((folder / name).exists() for name in RUN_FILES)


def _is_our_card(path: Path) -> bool:
    text = path.read_text(encoding="utf-8", errors="replace")
    return text.startswith(CARD_MARKER) or f"\n{LEGACY_CARD_LINE}" in text


def _card_path(output: Path) -> Path:
    """README.md, unless a README.md that we did not write is there: then MODEL_CARD.md beside it."""
    readme = output / MODEL_CARD
    if readme.is_file() and not _is_our_card(readme):
        log.warning("%s was not written by rpo-bench: left as it is; the model card goes to MODEL_CARD.md", readme)
        return output / "MODEL_CARD.md"
    return readme


@contextlib.contextmanager
def _staged(folder: Path) -> Iterator[Path]:
    """A hidden folder inside `folder` for writers that fill a folder (diffusers' save_pretrained and
    save_lora_weights); on a clean exit each file it holds moves onto its place in `folder` through atomic_path
    (fsync, one rename), so a kill leaves every file old or new, never torn. Removed on any error, and a killed
    run's leftover with it (the trainer holds the output's lock: no other process is writing one)."""
    for leftover in folder.glob(".staged.*"):
        shutil.rmtree(leftover, ignore_errors=True)
    staging = folder / f".staged.{os.getpid()}"
    staging.mkdir(parents=True)
    try:
        yield staging
        for source in sorted(p for p in staging.rglob("*") if p.is_file()):
            target = folder / source.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                os.replace(source, tmp)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_output(trainer, steps_done: int, folder: Path | None = None) -> None:
    """The trained weights, rpo_bench.json and the model card in `folder` (default: the run's output); only the
    final output registers --name."""
    config, output = trainer.config, folder or trainer.output
    unet = trainer.accelerator.unwrap_model(trainer.unet)
    output.mkdir(parents=True, exist_ok=True)
    # atomic: diffusers writes into a staging folder; each file then moves into place through atomic_path
    if config.lora_rank > 0:
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline  # noqa: PLC0415 - diffusers loads in seconds: on first use
        from diffusers.utils import convert_state_dict_to_diffusers  # noqa: PLC0415 - diffusers loads in seconds: on first use
        from peft.utils import get_peft_model_state_dict  # noqa: PLC0415 - peft loads in seconds: on first use

        pipeline_class = StableDiffusionXLPipeline if trainer.spec.family == "sdxl" else StableDiffusionPipeline
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        with _staged(output) as staging:
            pipeline_class.save_lora_weights(staging, unet_lora_layers=layers, weight_name=LORA_WEIGHTS)
        kind = "lora"
    else:
        with _staged(output) as staging:
            unet.save_pretrained(staging / "unet")
        kind = "unet"
    record = {
        "format": RECORD_FORMAT,
        "kind": kind,
        "method": config.method,
        "steps_done": steps_done,
        "config": absolute_paths(config.to_dict()),
        "beta_convention": trainer.method.convention,
        "method_title": trainer.method.title,
        "base_model": trainer.spec.to_dict(),
        "base_fingerprint": trainer.base_fingerprint,
        "micro_world": trainer.spec.micro_world,
        "protocol": trainer.spec.protocol,
        "data": {"source": _absolute_if_local(trainer.data.source), "fingerprint": trainer.data.fingerprint,
                 **trainer.data.stats},
        "heldout": heldout_record(trainer),
        "embedding_model": trainer.table.model_identity if trainer.table is not None else None,
        "world_size": trainer.world,
        "style": style_record(config),
    }
    atomic_write(output / RECORD_FILE, json.dumps(record, indent=1, sort_keys=True))
    atomic_write(_card_path(output), model_card(record))
    if folder is None and config.name and not check_name_free(config.name, output, overwrite=trainer.overwrite_name):
        register_model(config.name, spec_table_for_output(output, record), replace=trainer.overwrite_name)


def evaluate_command(record: dict[str, Any], folder: str, quote: bool = True) -> str:
    """The `rpo-bench evaluate` command line that measures a run as it was trained, from its record: a style run
    by its style (whose prompts, metrics and base model as the baseline follow), any other beside its base model,
    under the base model's protocol when `evaluate` would not use it by default. `quote`: False for a placeholder
    such as "<this folder>" in the model card."""
    style = record.get("style")
    shown = shlex.quote(folder) if quote else folder
    if style:
        return f"rpo-bench evaluate --style {shlex.quote(style['name'])} --models {shown}"
    base = record["config"]["model"]
    command = f"rpo-bench evaluate --models {shlex.quote(base) if quote else base},{shown}"
    protocol = record.get("protocol")
    if protocol and protocol not in CLI_DEFAULT_PROTOCOLS.split(","):
        command += f" --protocol {shlex.quote(protocol)}"
    return command


def style_record(config) -> dict[str, Any] | None:
    """What --style taught: the style, where its references came from and how pairs were made."""
    if not config.style:
        return None

    style = get_style(config.style)
    return {"name": style.name, "description": style.description, "references": style.source_text,
            "references_fingerprint": references_fingerprint(style), "pairs": config.pairs,
            "style_losers": config.style_losers if config.pairs == "reference" else None,
            "evaluate": f"rpo-bench evaluate --style {style.name} --models <this folder>"}


def _absolute_if_local(value: str) -> str:
    """A path that exists, made absolute: the record must find it again from any working directory. Hub ids and
    registry names stay as written."""
    path = Path(value).expanduser()
    return str(path.resolve()) if value and path.exists() else value


def absolute_paths(config: dict[str, Any]) -> dict[str, Any]:
    out = dict(config)
    out["output"] = str(Path(config["output"]).expanduser().resolve())
    out["data"] = _absolute_if_local(config["data"])
    if config["model"] not in MODELS:  # a registry name is not a path, even if a folder of that name exists here
        out["model"] = _absolute_if_local(config["model"])
    return out


def heldout_record(trainer) -> dict[str, Any]:
    """Which pairs training never saw (so an evaluation can leave their prompts out) and how they scored last."""
    indices = getattr(trainer, "heldout_indices", [])
    data = trainer.data
    return {"pairs": len(indices), "sample_ids": [data.sample_ids[i] for i in indices],
            "captions": sorted({data.captions[i] for i in indices}),
            "last": trainer.heldout_history[-1] if getattr(trainer, "heldout_history", None) else None}


def spec_table_for_output(output: Path, record: dict[str, Any]) -> dict[str, Any]:
    """A ModelSpec table: the base model plus the trained UNet or LoRA from `output`."""
    table = {k: v for k, v in record["base_model"].items() if k not in ("name", "description")}
    if record["kind"] == "lora":
        table.update(lora_repo=str(output.resolve()), lora_weight_name=LORA_WEIGHTS)
    else:
        table.update(unet_repo=str(output.resolve()), unet_subfolder="unet")
    table["description"] = f"{record['method']} on {record['data']['source']} ({record['steps_done']} steps)"
    return table


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def check_name_free(name: str, output: Path | None = None, overwrite: bool = False) -> bool:
    """`--name` must not be a model already: the trainer calls this before training, register_model again.
    True when the name is already registered for this very output folder (a resumed run that registered it).
    With `overwrite`, an entry of the user registry may be taken (register_model replaces it); a built-in or
    plug-in model never: a user entry of its name would shadow it everywhere."""
    path = user_registry_file()
    existing = read_toml(path).get("models", {}) if path.is_file() else {}
    if name in existing:
        entry = existing[name]
        here = str(output.resolve()) if output is not None else None
        if here is not None and isinstance(entry, dict) and here in (entry.get("lora_repo"), entry.get("unet_repo")):
            return True
        if overwrite:
            return False
        raise BadInputError(f"--name {name!r} is already in {path}; pass --overwrite-name to replace it, or choose "
                            "another name")
    if name in MODELS:
        only_user = f"; --overwrite-name replaces only entries of {path}" if overwrite else ""
        raise BadInputError(f"--name {name!r} is already a model (rpo-bench models lists them){only_user}; choose "
                            "another name")
    return False


def register_model(name: str, table: dict[str, Any], replace: bool = False) -> None:
    """Add [models.NAME] to the user registry; an existing entry of that name is an error, or with `replace` is
    taken out first (the rest of the file, comments included, stays as it was)."""
    check_name_free(name, overwrite=replace)
    path = user_registry_file()
    lines = [f"\n[models.{json.dumps(name)}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    writable_dir(path.parent, "the user registry")
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if replace:
        text = _without_model(text, name, path)
    atomic_write(path, text + "\n".join(lines) + "\n")

    MODELS.reset_plugins()  # so this process sees the new entry too


def _table_header(line: str) -> list[str] | None:
    """The key path of a `[a.b."c"]` header line (any quoting or spacing TOML allows), else None."""
    stripped = line.strip()
    if not stripped.startswith("[") or stripped.startswith("[["):
        return None
    try:
        parsed = tomllib.loads(stripped)
    except tomllib.TOMLDecodeError:
        return None
    keys: list[str] = []
    while isinstance(parsed, dict) and len(parsed) == 1:
        key, parsed = next(iter(parsed.items()))
        keys.append(key)
    return keys


def _without_model(text: str, name: str, path: Path) -> str:
    """`text` without its [models.NAME] table (header to the next header), checked by parsing: the result must
    hold everything the file held except that entry, or nothing is written."""
    kept, skipping = [], False
    for line in text.splitlines(keepends=True):
        header = _table_header(line)
        if header is not None:
            skipping = header[:2] == ["models", name]
        if not skipping:
            kept.append(line)
    result = "".join(kept).rstrip("\n") + "\n" if kept else ""
    expected = tomllib.loads(text)
    expected.get("models", {}).pop(name, None)
    if tomllib.loads(result) != expected:
        raise BadInputError(f"cannot replace model {name!r} in {path}: it is not written as a [models.{name}] table "
                            "of its own; remove it there by hand")
    return result


def model_card(record: dict[str, Any]) -> str:
    config = record["config"]
    base = record["base_model"]
    method = record.get("method_title") or record["method"]  # a run recorded before the title was: its name
    settings = "\n".join(f"| `{k}` | `{v}` |" for k, v in sorted(config.items()) if v not in ("", None))
    weights = ("LoRA (`pytorch_lora_weights.safetensors`, load with `pipe.load_lora_weights(folder)`)"
               if record["kind"] == "lora" else "full UNet (`unet/`, load with "
               "`UNet2DConditionModel.from_pretrained(folder, subfolder='unet')`)")
    heldout = record.get("heldout") or {}
    last = heldout.get("last")
    heldout_line = (f"- Held out of training: {heldout['pairs']} pairs over {len(heldout['captions'])} prompts "
                    f"(listed in rpo_bench.json)" + (f"; at step {last['step']}: accuracy {last['heldout_acc']:.2f}, "
                                                     f"margin {last['heldout_margin']:.3f}" if last else "") + "\n"
                    if heldout.get("pairs") else "")
    convention_line, style_line = _convention_line(record.get("beta_convention")), _style_line(record.get("style"))
    return f"""{CARD_MARKER}
# {method} fine-tune of {base.get('name')}

Trained with rpo-bench: {record['steps_done']} steps of {method} on `{record['data']['source']}`
({record['data'].get('kept', '?')} preference pairs, data fingerprint `{record['data']['fingerprint'][:16]}`).

- Weights: {weights}
- Base model: `{base.get('repo') or base.get('tiny')}` (fingerprint `{record['base_fingerprint'][:16]}`)
{convention_line}{heldout_line}{style_line}- Evaluate it: `{evaluate_command(record, "<this folder>", quote=False)}`

| setting | value |
|---|---|
{settings}
"""


CONVENTIONS = {"dpo-half": "logit = -(beta/2)(D^w - D^l), as the official Diffusion-DPO code",
               "kto": "h = sigmoid(+-beta (g - z0)), no factor 1/2, as the official Diffusion-KTO code"}


def _convention_line(convention: str | None) -> str:
    if convention is None:
        return ""
    return f"- beta convention: `{convention}` ({CONVENTIONS.get(convention, 'see the method')})\n"


def _style_line(style: dict[str, Any] | None) -> str:
    if not style:
        return ""
    return (f"- Style: `{style['name']}` ({style['description']}; references: {style['references']}, fingerprint "
            f"`{style['references_fingerprint']}`), {style['pairs']} pairs; measure it with "
            f"`rpo-bench evaluate --style {style['name']} --models <this folder>`\n")


def format_heldout(record: dict[str, float]) -> str:
    """One line per held-out measurement: acc near 0.5 with a rising training acc is memorising; D^w > 0 means the
    winners' error has risen above the reference's (the likelihood displacement DPO is known for)."""
    return (f"step {int(record['step'])} held-out ({int(record['heldout_pairs'])} pairs): "
            f"acc {record['heldout_acc']:.2f}  margin {record['heldout_margin']:.3f}  "
            f"D^w {record['heldout_d_w']:.2e}  D^l {record['heldout_d_l']:.2e}  "
            f"err^w {record['heldout_err_w']:.4f}  err^l {record['heldout_err_l']:.4f}")


def format_diagnostics(record: dict[str, float]) -> str:
    names = [("loss", "loss", 4), ("acc_diag", "acc", 2), ("acc_offdiag", "acc_off", 2),
             ("weight_diag_mean", "w_ii", 2), ("weight_entropy", "H(w)", 2), ("d_w_mean", "D^w", 5),
             ("d_l_mean", "D^l", 5), ("reward_margin", "margin", 3), ("grad_norm", "|g|", 3), ("lr", "lr", 2)]
    parts = [f"step {int(record['step'])}"]
    for key, label, digits in names:
        if key in record and record[key] == record[key]:  # skip NaN (e.g. acc_off at one pair)
            value = record[key]
            parts.append(f"{label} {value:.{digits}e}" if key == "lr" else f"{label} {value:.{digits}f}")
    return "  ".join(parts)
