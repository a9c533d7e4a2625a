"""`rpo-bench micro check`: the micro world's quality card, measured from fresh seeded renders and samples.

A world can carry a finding only when (1) its VAE keeps what the judge reads, every style included, since no
UNet trained on its latents can draw more than the VAE decodes; (2) its base draws recognisable scenes (a sharp
wrong shape is recognisable, a blob is not) while following prompts imperfectly, so that alignment has room;
(3) its preference set's winners are clearly better than the base's typical image; and (4) the style probe, all
a real style has, can agree with the judge on a style-trained model's images. This measures each, on render seeds
below the judge's training floor and sample seeds drawn from `seed`, never on the build's own images, so the same
seed gives the same card and a seed the docs never used is an honest re-check.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rpo_bench.core.errors import BadInputError
from rpo_bench.core.progress import progress_bar
from rpo_bench.micro.scenes import CONTENT_ATTRIBUTES, STYLE_TEMPLATES, STYLES, Scene, sample_scenes

ROOM_PROMPTS_SHARE = 0.25  # the room needs k images per prompt: a quarter of n prompts keeps the check short
STYLED = tuple(s for s in STYLES if s != "plain")


def _to_pixels(array: np.ndarray):
    import torch  # noqa: PLC0415 - torch loads in seconds: on first use

    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def _to_uint8(images) -> np.ndarray:
    return images.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()


def content_accuracy(judge, images: np.ndarray, scenes: list[Scene]) -> dict[str, float]:
    judged = judge.attributes(images)
    return {a: round(float(np.mean([j[a] == getattr(s, a) for j, s in zip(judged, scenes, strict=True)])), 4)
            for a in CONTENT_ATTRIBUTES}


def vae_card(vae, judge, n: int, seed: int) -> dict[str, Any]:
    """Per style: the judge's style probability and content accuracy on reconstructions (latent means, decoded)
    of n fresh renders, beside the same on the renders themselves (what a perfect VAE would keep); PSNR."""
    import torch  # noqa: PLC0415 - torch loads in seconds: on first use

    from rpo_bench.micro.judge import TRAIN_SEED_FLOOR  # noqa: PLC0415 - loads torch: on first use
    from rpo_bench.micro.render import render_batch  # noqa: PLC0415 - keeps the CLI's import light

    rng = np.random.default_rng([seed, 1])
    card: dict[str, Any] = {}
    squared_errors = []
    for style in STYLES:
        scenes = [replace(s, style=style) for s in sample_scenes(rng, n, styles=("plain",))]
        renders = render_batch(scenes, rng.integers(0, TRAIN_SEED_FLOOR, size=n).tolist())
        with torch.no_grad():
            pixels = _to_pixels(renders)
            decoded = torch.cat([vae.decode(vae.encode(pixels[i:i + 64]).latent_dist.mean).sample
                                 for i in range(0, n, 64)])
        reconstructions = _to_uint8(decoded)
        error = float(np.mean((reconstructions.astype(np.float64) - renders) ** 2))
        squared_errors.append(error)
        card[style] = {"style": round(float(np.mean(judge.style_probability(reconstructions, style))), 4),
                       "content": content_accuracy(judge, reconstructions, scenes),
                       "render_style": round(float(np.mean(judge.style_probability(renders, style))), 4),
                       "render_content": content_accuracy(judge, renders, scenes),
                       "psnr_db": _psnr(error)}
    card["psnr_db"] = _psnr(float(np.mean(squared_errors)))
    return card


def _psnr(mse: float) -> float:
    return round(10 * math.log10(255.0 ** 2 / max(mse, 1e-12)), 2)


class _Sampler:
    """One model under its benchmark protocol, drawing one image per (prompt, seed)."""

    def __init__(self, model: str, batch_size: int = 32):
        import torch  # noqa: PLC0415 - torch loads in seconds: on first use

        from rpo_bench.evaluation.protocols import PROTOCOLS  # noqa: PLC0415 - loads torch: on first use
        from rpo_bench.models.catalog import resolve_model  # noqa: PLC0415 - keeps the CLI's import light
        from rpo_bench.models.loader import load_pipeline  # noqa: PLC0415 - loads diffusers: on first use

        self.spec = resolve_model(model)
        self.protocol = PROTOCOLS.get("micro")  # the world's benchmark protocol, also for a built folder's base
        self.pipe = load_pipeline(self.spec, "cpu", torch.float32)
        self.batch_size = batch_size

    def draw(self, prompts: list[str], seeds: list[int], advance) -> np.ndarray:
        from rpo_bench.evaluation.generate import GenerationItem, generate_batches  # noqa: PLC0415 - loads torch
        from rpo_bench.evaluation.prompts import Prompt  # noqa: PLC0415 - keeps the CLI's import light

        items = [GenerationItem(str(i), Prompt(i, text), seed)
                 for i, (text, seed) in enumerate(zip(prompts, seeds, strict=True))]
        images = []
        for batch in generate_batches(self.pipe, self.protocol, self.spec.family, items, self.batch_size,
                                      on_batch=advance):
            images.extend(np.asarray(image.convert("RGB")) for _, image in batch)
        return np.stack(images)


def _split_prompts(split: str, n: int, rng: np.random.Generator) -> list[str]:
    """n prompts drawn without replacement (all of them when the set is smaller)."""
    from rpo_bench.evaluation.prompts import load_prompt_set  # noqa: PLC0415 - keeps the CLI's import light

    texts = [prompt.text for prompt in load_prompt_set(split).prompts]
    picks = rng.permutation(len(texts))[:n]
    return [texts[i] for i in sorted(picks)]


def _oracle(judge, images: np.ndarray, prompts: list[str]) -> dict[str, float]:
    rows = judge.score(images, prompts)
    keys = [k for k in ("overall", *CONTENT_ATTRIBUTES) if k in rows[0]]
    return {k: round(float(np.mean([row[k] for row in rows])), 4) for k in keys}


def _recognisable(judge, images: np.ndarray) -> dict[str, float]:
    """The judge's mean top-class probability per content attribute, whatever the prompt asked."""
    judged = judge.attributes(images)
    return {a: round(float(np.mean([max(j["probabilities"][a].values()) for j in judged])), 4)
            for a in CONTENT_ATTRIBUTES}


# Rows of a 32x32 image that every render leaves as background (no object reaches them in any plain render of
# 500 sampled scenes): whatever varies there is the model's texture, not content.
BACKGROUND_ROWS = 4


def background_noise(images: np.ndarray) -> float:
    """Mean standard deviation (in 8-bit levels) of the top and bottom background bands: 0 for a render of a
    plain scene, a few levels for a slightly grainy model, more for a decoder that paints texture everywhere
    (which the judge, trained on degraded renders, reads straight through: `recognisable` cannot see it)."""
    bands = np.concatenate([images[:, :BACKGROUND_ROWS], images[:, -BACKGROUND_ROWS:]], axis=1).astype(np.float64)
    return round(float(bands.reshape(len(images), -1, bands.shape[-1]).std(axis=1).mean()), 3)


def base_card(sampler: _Sampler, judge, n: int, seed: int, advance) -> dict[str, Any]:
    """micro-oracle per attribute on micro-train and micro-test prompts, recognisability, and the style
    probability per style when the prompt asks for it and when it does not."""
    rng = np.random.default_rng([seed, 2])
    card: dict[str, Any] = {"micro_oracle": {}}
    everything = []
    for split in ("micro-train", "micro-test"):
        prompts = _split_prompts(split, n, rng)
        images = sampler.draw(prompts, rng.integers(0, 2**31, size=len(prompts)).tolist(), advance)
        card["micro_oracle"][split] = _oracle(judge, images, prompts)
        everything.append(images)
    plain = np.concatenate(everything)
    recognisable = _recognisable(judge, plain)
    card["recognisable"] = min(recognisable.values())
    card["recognisable_by_attribute"] = recognisable
    card["background_noise"] = background_noise(plain)
    card["style"] = {}
    per_style = max(n // len(STYLED), 2)
    contents = _split_prompts("micro-train", per_style, rng)
    for style in STYLED:
        asked = sampler.draw([STYLE_TEMPLATES[style].format(c) for c in contents],
                             rng.integers(0, 2**31, size=len(contents)).tolist(), advance)
        unasked = judge.style_probability(plain, style)
        # the share of plain-prompt images the judge calls in the style: a mean probability cannot tell a few
        # styled images from a faint lean in all of them
        card["style"][style] = {"asked": round(float(np.mean(judge.style_probability(asked, style))), 4),
                                "unasked": round(float(np.mean(unasked)), 4),
                                "unasked_share": round(float(np.mean(np.asarray(unasked) > 0.5)), 4)}
    return card


def room_card(sampler: _Sampler, judge, n: int, seed: int, advance) -> dict[str, Any]:
    """micro-pickapic's construction on a sample of micro-train prompts: k images each, ranked by the judge's
    probability of the requested values, top against bottom with the set's own settings; the winners', losers'
    and all images' (the base's) mean utility, and the same on the binary micro-oracle."""
    from rpo_bench.micro.preference_settings import DEFAULTS, PAIR_SETTINGS  # noqa: PLC0415 - light, kept local
    from rpo_bench.training.pairs import PairSettings, ScoredImage, pick_pairs  # noqa: PLC0415 - loads torch

    rng = np.random.default_rng([seed, 3])
    settings = PairSettings(**{name: DEFAULTS[name] for name in PAIR_SETTINGS} | {"label_seed": seed})
    prompts = _split_prompts("micro-train", max(int(n * ROOM_PROMPTS_SHARE), 2), rng)
    seeds = rng.integers(0, 2**31, size=settings.k).tolist()
    scored: dict[str, list] = {}
    for prompt in prompts:
        images = sampler.draw([prompt] * settings.k, seeds, advance)
        utility = judge.requested_probabilities(images, [prompt] * settings.k)
        oracle = judge.score(images, [prompt] * settings.k)
        scored[prompt] = [ScoredImage(s, u["overall"], "", o["overall"])
                          for s, u, o in zip(seeds, utility, oracle, strict=True)]
    picked = pick_pairs(prompts, scored, settings, 1.0)
    everything = [image for group in scored.values() for image in group]

    def mean(values) -> float:
        values = list(values)
        return round(float(np.mean(values)), 4) if values else float("nan")

    card = {"prompts": len(prompts), "k": settings.k, "pairs": len(picked.pairs),
            "winners_mean": mean(w.score for _, w, _ in picked.pairs),
            "losers_mean": mean(lo.score for _, _, lo in picked.pairs),
            "base_mean": mean(image.score for image in everything),
            "oracle_winners_mean": mean(w.report for _, w, _ in picked.pairs),
            "oracle_losers_mean": mean(lo.report for _, _, lo in picked.pairs),
            "oracle_base_mean": mean(image.report for image in everything)}
    card["winners_minus_base"] = round(card["winners_mean"] - card["base_mean"], 4)
    card["oracle_winners_minus_base"] = round(card["oracle_winners_mean"] - card["oracle_base_mean"], 4)
    return card


def probe_card(model: str, style_name: str, base: _Sampler, judge, n: int, seed: int, advance) -> dict[str, Any]:
    """The shipped style probe's agreement with the judge's "in style" call on the style's held-out prompts as the
    base and the style-trained model draw them, and its ceiling (a probe fitted on the judge's own calls, scored
    on prompts it did not see): the most any linear probe on this CLIP could agree."""
    import torch  # noqa: PLC0415 - torch loads in seconds: on first use

    from rpo_bench.metrics import make_metric  # noqa: PLC0415 - keeps the CLI's import light
    from rpo_bench.style.embedding import StyleEmbedder  # noqa: PLC0415 - loads torch: on first use
    from rpo_bench.style.registry import get_style  # noqa: PLC0415 - keeps the CLI's import light
    from rpo_bench.workflows.probe_ceiling import cross_validated_agreement, prompt_folds  # noqa: PLC0415

    style = get_style(style_name)
    if not style.micro or style.micro == "plain":
        raise BadInputError(f"micro check --style {style_name!r}: not a micro style; accepted: "
                            + ", ".join(f"micro-{s}" for s in STYLED))
    rng = np.random.default_rng([seed, 4])
    prompts = _split_prompts(style.prompts, n, rng)
    seeds = rng.integers(0, 2**31, size=len(prompts)).tolist()
    trained = _Sampler(model)
    arrays = np.concatenate([base.draw(prompts, seeds, advance), trained.draw(prompts, seeds, advance)])
    from PIL import Image  # noqa: PLC0415 - PIL loads with torch anyway; kept beside its only use

    images = [Image.fromarray(a) for a in arrays]
    in_style = np.array(judge.style_probability(arrays, style.micro)) > 0.5
    probe = make_metric(f"style-prob:{style.name}")
    probe.load("cpu", torch.float32)
    try:
        said = np.array(probe.score(images, prompts + prompts)) > 0.5
    finally:
        probe.unload()
    embedder = StyleEmbedder(style).load("cpu", torch.float32)
    try:
        features = embedder.embed(images)
    finally:
        embedder.unload()
    ceiling = cross_validated_agreement(features, in_style, prompt_folds(prompts + prompts))
    return {"style": style.name, "micro_style": style.micro, "images": len(images),
            "judged_in_style": round(float(in_style.mean()), 4),
            "agreement": round(float(np.mean(said == in_style)), 4), "ceiling": round(ceiling, 4)}


def _trained_style(model: str) -> str:
    """The style a trained run was taught (its record), for --model without --style."""
    from rpo_bench.training.output import RECORD_FILE  # noqa: PLC0415 - loads torch: on first use

    record = Path(model) / RECORD_FILE
    style = json.loads(record.read_text())["style"] if record.is_file() else None
    if not style:
        raise BadInputError(f"micro check --model {model}: no style recorded for it; accepted: a run trained with "
                            "--style micro-<style>, or give --style")
    return style["name"]


def build_card(assets: Path) -> dict[str, Any]:
    """Wall seconds per stage as the build recorded them (build.json), and the world's version."""
    path = assets / "build.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    stages = {name: report[name]["wall_seconds"] for name in ("judge", "micro-clip", "micro-vae", "micro-base")
              if isinstance(report.get(name), dict) and "wall_seconds" in report[name]}
    base = report.get("micro-base", {})
    if isinstance(base.get("vae"), dict) and "wall_seconds" in base["vae"]:  # world v1: the VAE inside micro-base
        stages["micro-vae"] = base["vae"]["wall_seconds"]
        if "micro-base" in stages:  # the base stage's own share: the UNet's data and training, as in v2
            stages["micro-base"] = round(stages["micro-base"] - stages["micro-vae"], 1)
    return {"world": report.get("world", 1), "wall_seconds": stages}


def micro_check(seed: int = 0, n: int = 64, model: str | None = None, style: str | None = None,
                world_dir: Path | None = None, show_progress: bool = True) -> dict[str, Any]:
    """The card as a dict (see the module docstring); `model` adds `probe.<style>`; `world_dir` checks a world
    built into another folder (`micro build --out`) instead of the shipped one, judged by the shipped judge."""
    if n < 10:
        raise BadInputError(f"micro check --n {n}; accepted: an integer >= 10 (the probe's ceiling needs two "
                            "prompts in each of five folds)")
    if not 0 <= seed < 2**32:
        raise BadInputError(f"micro check --seed {seed}; accepted: an integer from 0 to {2**32 - 1}")
    from rpo_bench.micro.build import ASSETS  # noqa: PLC0415 - loads torch: on first use
    from rpo_bench.micro.judge import MicroJudge  # noqa: PLC0415 - loads torch: on first use

    style = style or (_trained_style(model) if model else None)
    folder = Path(world_dir) if world_dir is not None else ASSETS
    if not (folder / "micro-base" / "model_index.json").is_file():
        raise BadInputError(f"micro check --world-dir {folder}: no built micro-base in it; accepted: a folder "
                            "written by `rpo-bench micro build --out`")
    began = time.perf_counter()
    judge = MicroJudge.load()
    base = "micro-base" if world_dir is None else str(folder / "micro-base")
    sampler = _Sampler(base)
    card: dict[str, Any] = {"seed": seed, "n": n, "model": "micro-base" if world_dir is None else folder.name,
                            "build": build_card(folder)}
    card["vae"] = vae_card(sampler.pipe.vae, judge, n, seed)
    per_style = max(n // len(STYLED), 2)
    room_prompts = max(int(n * ROOM_PROMPTS_SHARE), 2)
    total = 2 * n + per_style * len(STYLED) + room_prompts * 12 + (4 * n if model else 0)
    with progress_bar("micro check: sampling", total, show_progress) as advance:
        card["base"] = base_card(sampler, judge, n, seed, advance)
        card["room"] = room_card(sampler, judge, n, seed, advance)
        if model:
            probe = probe_card(model, style, sampler, judge, 2 * n, seed, advance)
            card["probe"] = {probe["micro_style"]: probe}
    card["wall_seconds"] = round(time.perf_counter() - began, 1)
    return card


def _cells(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def card_markdown(card: dict[str, Any]) -> str:
    """The card as a short markdown report (what `micro check` prints without --json)."""
    vae = card["vae"]
    lines = [f"# micro world check (world v{card['build']['world']}, seed {card['seed']}, n {card['n']})", "",
             f"VAE PSNR {vae['psnr_db']:.2f} dB", "",
             "| style | judge's style prob. (reconstruction / render) | content accuracy on reconstructions "
             "| on the renders (the most a VAE can keep) |", "|---|---|---|---|"]
    lines += [f"| {s} | {vae[s]['style']:.3f} / {vae[s]['render_style']:.3f} | {_cells(vae[s]['content'])} "
              f"| {_cells(vae[s]['render_content'])} |" for s in STYLES]
    base = card["base"]
    lines += ["", f"Base recognisable (lowest attribute): {base['recognisable']:.3f} "
              f"({_cells(base['recognisable_by_attribute'])})",
              f"Base background noise: {base['background_noise']:.2f} levels (std of the top and bottom "
              f"{BACKGROUND_ROWS} rows on plain prompts; a plain render's: 0)"]
    lines += [f"Base micro-oracle on {split}: {_cells(row)}" for split, row in base["micro_oracle"].items()]
    lines += ["Base style probability asked / unasked (share of plain-prompt images called in the style): "
              + "; ".join(f"{s} {v['asked']:.3f} / {v['unasked']:.3f} ({v['unasked_share']:.1%})"
                          for s, v in base["style"].items())]
    room = card["room"]
    lines += [f"Room ({room['pairs']} pairs from {room['prompts']} micro-train prompts x {room['k']}): winners "
              f"{room['winners_mean']:.3f}, losers {room['losers_mean']:.3f}, base {room['base_mean']:.3f} "
              f"(winners - base {room['winners_minus_base']:+.3f}); micro-oracle winners "
              f"{room['oracle_winners_mean']:.3f}, base {room['oracle_base_mean']:.3f}"]
    for style, probe in card.get("probe", {}).items():
        lines += [f"Probe {style}: agreement {probe['agreement']:.3f}, ceiling {probe['ceiling']:.3f} on "
                  f"{probe['images']} images ({probe['judged_in_style']:.0%} judged in style)"]
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in card["build"]["wall_seconds"].items())
    lines += [f"Build time per stage: {stages or 'not recorded'}", f"Check wall time: {card['wall_seconds']:.0f} s"]
    return "\n".join(lines) + "\n"
