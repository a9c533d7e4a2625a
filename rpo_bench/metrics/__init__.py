"""The metric registry. Targets are lazy "module:attr" strings so that a scorer's dependencies load only when
that scorer is used. A metric may take one argument after a colon: `clip:openai/clip-vit-base-patch32`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rpo_bench.core.errors import BadInputError, RpoBenchError
from rpo_bench.core.registry import STRING, Registry, ValueRule, check_table_values, load_target
from rpo_bench.metrics.base import Metric

_TABLE_RULES = {
    "target": STRING.refine("a string module:Class", lambda value: ":" in value),
    "metric": STRING,
    "summary": STRING,
    "arg": ValueRule("a string or an integer", lambda value: isinstance(value, (str, int))
                     and not isinstance(value, bool)),
}


def _metric_from_table(name: str, table: Mapping[str, Any]):
    """User metrics: either a `target` ("module:Class") or an existing metric with a fixed `arg`."""
    check_table_values("metrics", name, table, _TABLE_RULES)
    if "target" in table:
        return str(table["target"])
    if "metric" in table:
        base, arg = str(table["metric"]), table.get("arg")
        return lambda _arg=None: make_metric(f"{base}:{arg}" if arg else base)
    raise BadInputError(f"metric {name!r}: needs `target` (module:Class) or `metric` (+ optional `arg`)")


METRICS: Registry = Registry("metrics", from_table=_metric_from_table)
METRICS.register("clip", "rpo_bench.metrics.clip_score:ClipScore",
                 summary="CLIP score 100*max(cos,0); default openai/clip-vit-large-patch14, or clip:<HF id|path> "
                         "or clip:open_clip:<arch>/<pretrained>")
METRICS.register("tiny-clip", "rpo_bench.metrics.clip_score:TinyClipScore",
                 summary="CLIP score on a random tiny CLIP built offline (tests, CPU demo); clip-score math")
METRICS.register("micro-oracle", "rpo_bench.metrics.micro:MicroOracle",
                 summary="micro world ground truth: share of the prompt's attributes the image shows "
                         "(micro-oracle:<attribute> for one)")
METRICS.register("micro-style", "rpo_bench.metrics.micro:MicroStyle",
                 summary="micro world: probability that the image is in style S (micro-style:S)")
METRICS.register("micro-clip", "rpo_bench.metrics.clip_score:MicroClipScore",
                 summary="CLIP score with the micro world's CLIP (trained on renders)")
METRICS.register("style-prob", "rpo_bench.style.metrics:StyleProb",
                 summary="probability that the image is in style S (probe on CLIP image embeddings; held-out "
                         "accuracy printed beside it); style-prob:S")
METRICS.register("style-sim", "rpo_bench.style.metrics:StyleSim",
                 summary="cosine of the CLIP image embedding to style S's reference centroid; style-sim:S")
METRICS.register("base-sim", "rpo_bench.style.metrics:BaseSim",
                 summary="content kept: CLIP image cosine to S's base model's image of the same prompt and seed "
                         "(evaluate, with the base model in --models); base-sim:S")

METRICS.register("hpsv2", "rpo_bench.metrics.hps:HPSv2Score",
                 summary="HPS v2.0 (xswu/HPSv2, open_clip ViT-H-14): 100 x cosine, as papers print it")
METRICS.register("hpsv2.1", "rpo_bench.metrics.hps:HPSv21Score",
                 summary="HPS v2.1: 100 x cosine; a different model from v2.0, not comparable with it")
METRICS.register("pickscore", "rpo_bench.metrics.pickscore:PickScore",
                 summary="PickScore v1 (CLIP ViT-H-14): exp(logit_scale) x cosine, about 20-23")
METRICS.register("imagereward", "rpo_bench.metrics.imagereward:ImageRewardScore",
                 summary="ImageReward v1.0 (BLIP + MLP): reward normalised by the official mean/std")
METRICS.register("aesthetic", "rpo_bench.metrics.aesthetic:AestheticScore",
                 summary="LAION improved aesthetic predictor on CLIP ViT-L/14 image embeddings (1-10 scale)")
_TINY_SCORERS = {"hpsv2": "TinyHPSv2Score", "pickscore": "TinyPickScore", "imagereward": "TinyImageRewardScore",
                 "aesthetic": "TinyAestheticScore"}
for _name, _class in _TINY_SCORERS.items():
    METRICS.register(f"tiny-{_name}", f"rpo_bench.metrics.tiny_scorers:{_class}",
                     summary=f"{_name} code on random tiny weights in the official layout (tests, CPU demo)")
METRICS.register("csd", "rpo_bench.style.csd:CsdScore",
                 summary="CSD style similarity (tomg-group-umd/CSD-ViT-L): cosine to style S's prototype; csd:S")
METRICS.register("tiny-csd", "rpo_bench.style.csd:TinyCsdScore",
                 summary="csd code on random tiny weights in the official checkpoint layout (tests, CPU demo)")


def example_spec(name: str) -> str:
    """A usable spec for a registry entry: metrics that need an argument declare an `example_arg`."""
    factory = METRICS.get(name)
    example = getattr(factory, "example_arg", None)
    return f"{name}:{example}" if example else name


def metric_aspect(key: str) -> tuple[str, int] | None:
    """(aspect, aspect rank) a stored metric key declares (Metric.aspect), read from its class without building
    it; None for a metric no longer registered."""
    try:
        factory = METRICS.get(key.partition(":")[0])
        if isinstance(factory, str):
            factory = load_target(factory)
    except RpoBenchError:
        return None
    return (factory.aspect, factory.aspect_rank) if isinstance(factory, type) else None


def make_metric(spec: str) -> Metric:
    """"name" or "name:arg" -> an unloaded Metric instance."""
    name, _, arg = spec.partition(":")
    factory = METRICS.get(name)
    if isinstance(factory, str):
        factory = load_target(factory)
    metric = factory(arg or None)
    if not isinstance(metric, Metric):
        raise BadInputError(f"metric {spec!r} does not produce a rpo_bench Metric")
    return metric


def comma_separated(text: str, flag: str, accepted: str) -> list[str]:
    """The items of a comma-separated flag value, stripped. An empty value or an empty item ("a,,b", "a,") is
    refused rather than skipped: it is usually a typo or an unset shell variable, and skipping it would silently
    run less than was asked for."""
    items = [part.strip() for part in text.split(",")]
    if not any(items):
        raise BadInputError(f"{flag} {text!r} is empty; accepted: one or more {accepted}, separated by commas")
    if not all(items):
        raise BadInputError(f"{flag} {text!r} has an empty item; accepted: {accepted}, separated by single commas")
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        raise BadInputError(f"{flag} {text!r} names {', '.join(repeated)} more than once; accepted: each once")
    return items


def parse_metric_list(text: str, flag: str = "--metrics") -> list[str]:
    """`--metrics` of every command: NAME or NAME:ARG, comma-separated (names are checked by `make_metric`)."""
    return comma_separated(text, flag, "metrics (NAME or NAME:ARG; rpo-bench metrics lists them)")


MAX_SEED = 2**63 - 1


def seed_argument(metric_key: str, arg: str | None) -> int:
    """The seed in a tiny metric's argument (`tiny-clip:3`); "" or None is seed 0.

    ASCII digits only: str.isdigit() accepts "²" and "٣", which int() then rejects or silently reads."""
    seed = arg or "0"
    if re.fullmatch(r"[0-9]+", seed) is None or int(seed) > MAX_SEED:
        raise BadInputError(f"{metric_key}:{seed}: the argument is the tiny model's seed; accepted: an integer "
                            f"from 0 to {MAX_SEED} in ASCII digits, e.g. {metric_key}:0")
    return int(seed)
