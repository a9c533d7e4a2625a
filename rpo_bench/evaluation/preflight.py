"""Before any work: everything an evaluation (or a training run) names that is not on this machine, checked at once.

Models, metrics and prompt sets each turn into `AbsentEntry` rows (a metric adds the entries it needs beyond its
own files, as a style metric adds its style); hub.availability refuses in one line when the Hub cannot be asked
for them now, and otherwise lets the loaders fetch on first use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rpo_bench.evaluation.prompts import absent_prompt_set
from rpo_bench.hub.availability import AbsentEntry, require_available
from rpo_bench.metrics import make_metric
from rpo_bench.models.hub_files import absent_model


def absent_entries(models: Iterable[str] = (), metrics: Iterable[str] = (), prompts: Iterable[str] = ()) -> list:
    """The named entries with absent parts, in the order models, metrics, prompt sets, then what the metrics need
    besides their own files (a style metric's style). Unknown names fail here as they would later."""
    found = [absent_model(name) for name in dict.fromkeys(models)]
    companions: list[AbsentEntry | None] = []
    for key in dict.fromkeys(metrics):
        own, *more = make_metric(key).absent_entries()
        found.append(own)
        companions += more
    found += [absent_prompt_set(name) for name in dict.fromkeys(prompts)]
    return [entry for entry in [*found, *companions] if entry is not None]


def require_fetchable(models: Iterable[str] = (), metrics: Iterable[str] = (), prompts: Iterable[str] = (),
                      extra: Sequence[AbsentEntry | None] = ()) -> None:
    """Refuse in one line when something the names (and `extra` rows, such as a style's) need is absent and
    cannot be fetched now; otherwise return."""
    require_available([*absent_entries(models, metrics, prompts), *extra])
