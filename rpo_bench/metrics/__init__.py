"""The metric registry. Targets are lazy "module:attr" strings so that a scorer's dependencies load only when
that scorer is used. A metric may take one argument after a colon: `clip:openai/clip-vit-base-patch32`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rpo_bench.errors import BadInputError
from rpo_bench.metrics.base import Metric
from rpo_bench.registry import Registry, load_target


def _metric_from_table(name: str, table: Mapping[str, Any]):
    """User metrics: either a `target` ("module:Class") or an existing metric with a fixed `arg`."""
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


def example_spec(name: str) -> str:
    """A usable spec for a registry entry: metrics that need an argument declare an `example_arg`."""
    factory = METRICS.get(name)
    example = getattr(factory, "example_arg", None)
    return f"{name}:{example}" if example else name


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
