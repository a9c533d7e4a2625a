"""models x prompts x seeds x metrics, skipping everything the image cache and the results store already have.

The one road of the design: resolve names -> fingerprint -> generate missing images -> score missing
(image, metric, version) rows -> summarise from the store. Each batch is persisted before the next starts, so
killing a run loses at most one batch and the next run resumes from there.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rpo_bench.core.config import default_image_cache, default_store_path, resolve_device, resolve_dtype
from rpo_bench.core.distributed import ProcessContext, process_context
from rpo_bench.core.errors import BadInputError, RpoBenchError
from rpo_bench.core.progress import progress_bar
from rpo_bench.core.provenance import git_commit, library_versions
from rpo_bench.evaluation.defaults import DEFAULT_BATCH_SIZE, DEFAULT_METRICS, DEFAULT_MODELS, DEFAULT_PROMPTS
from rpo_bench.evaluation.generate import GeneratedBatch, GenerationItem, generate_batches
from rpo_bench.evaluation.image_cache import ImageCache, generation_key
from rpo_bench.evaluation.preflight import require_fetchable
from rpo_bench.evaluation.prompts import PromptSet, load_prompt_set
from rpo_bench.evaluation.protocols import PROTOCOLS, Protocol
from rpo_bench.evaluation.seeds import check_seeds
from rpo_bench.evaluation.store import PromptSetRecord, ResultsStore
from rpo_bench.evaluation.summary import BY_ACCEPTED, ScoreTable, SummaryRow, score_dict, summarise_tables
from rpo_bench.metrics import comma_separated, make_metric
from rpo_bench.metrics.base import Metric
from rpo_bench.models.catalog import resolve_model
from rpo_bench.models.loader import load_pipeline, model_fingerprint
from rpo_bench.models.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class EvaluateConfig:
    models: Sequence[str] = DEFAULT_MODELS
    prompts: str = DEFAULT_PROMPTS
    metrics: Sequence[str] = DEFAULT_METRICS
    seeds: Sequence[int] = (0,)
    protocol: str | None = None  # None: each model's default protocol; "A,B": every model under each
    store: Path = field(default_factory=default_store_path)
    image_cache: Path = field(default_factory=default_image_cache)
    device: str = "auto"
    dtype: str = "auto"
    # Scorers run in float32 by default on every device, so a score does not depend on the generation dtype;
    # another dtype is part of the stored version (see stored_version).
    score_dtype: str = "float32"
    batch_size: int = DEFAULT_BATCH_SIZE
    show_progress: bool = True
    baseline: str | None = None  # the model every other is compared with; None: the first of `models`
    by: str | None = None  # "category": the summary also splits the prompts by their category


@dataclass
class EvaluateResult:
    run_id: str
    generated: int = 0
    reused: int = 0
    scored: dict[str, int] = field(default_factory=dict)
    rebuilt: int = 0  # images whose cached file failed verification and were regenerated and rescored
    summary: list[SummaryRow] = field(default_factory=list)
    tables: list[ScoreTable] = field(default_factory=list)  # the per-sample scores the summary was computed from
    notes: list[str] = field(default_factory=list)  # what the metrics ask to print beside their numbers


@dataclass
class _ModelPlan:
    spec: ModelSpec
    protocol: Protocol
    fingerprint: str
    items: list[GenerationItem]


def protocol_names(config: EvaluateConfig, spec: ModelSpec) -> list[str]:
    if not config.protocol:
        return [spec.protocol]

    # A repeated protocol would evaluate and print every row twice.
    return comma_separated(config.protocol, "--protocol", "protocol names (rpo-bench protocols lists them)")


def _plan(config: EvaluateConfig, prompt_set: PromptSet, dtype_name: str) -> list[_ModelPlan]:
    plans = []
    for name in config.models:
        spec = resolve_model(name)
        fingerprint = model_fingerprint(spec)
        for protocol_name in protocol_names(config, spec):
            protocol = PROTOCOLS.get(protocol_name)
            protocol_fp = protocol.fingerprint(spec.family)
            unique: dict[str, GenerationItem] = {}  # a repeated prompt is one image, at its first index
            for p in prompt_set.prompts:
                for seed in config.seeds:
                    key = generation_key(fingerprint, protocol_fp, dtype_name, p.text, seed)
                    unique.setdefault(key, GenerationItem(key, p, seed))
            plans.append(_ModelPlan(spec, protocol, fingerprint, list(unique.values())))
    return plans


def _run_id(config: EvaluateConfig, plans: list[_ModelPlan], prompt_set: PromptSet,
            dtype_name: str) -> tuple[str, dict]:
    run_config = {
        "models": [{"name": p.spec.name, "spec": p.spec.to_dict(), "fingerprint": p.fingerprint,
                    "protocol": p.protocol.settings(p.spec.family),
                    **({"micro_world": p.spec.micro_world} if p.spec.micro_world is not None else {})}
                   for p in plans],
        "prompt_set": {"name": prompt_set.name, "fingerprint": prompt_set.fingerprint, "size": len(prompt_set.prompts)},
        "seeds": list(config.seeds),
        "metrics": list(config.metrics),
        "dtype": dtype_name,
    }
    return hashlib.sha256(json.dumps(run_config, sort_keys=True).encode()).hexdigest()[:16], run_config


def _image_row(plan: _ModelPlan, item: GenerationItem, sha: str, dtype_name: str, run_id: str,
               batch: GeneratedBatch | None) -> dict:
    """What the image is: never which prompt set or model name asked for it (that is its sample). The batch it
    was generated in and the threads then are recorded beside it: on a CPU they move a pixel by a level or two
    (rpo_bench.evaluation.generate); None for an image taken from the image cache, made by an earlier run."""
    return {
        "image_key": item.key, "model_fingerprint": plan.fingerprint,
        "protocol": plan.protocol.name, "protocol_fingerprint": plan.protocol.fingerprint(plan.spec.family),
        "protocol_settings": json.dumps(plan.protocol.settings(plan.spec.family), sort_keys=True),
        "dtype": dtype_name, "prompt": item.prompt.text, "seed": item.seed, "image_sha256": sha,
        "batch_size": batch.batch_size if batch is not None else None,
        "threads": batch.threads if batch is not None else None, "run_id": run_id,
    }


def _sample_row(plan: _ModelPlan, item: GenerationItem, prompt_set: PromptSet, run_id: str) -> dict:
    """How this evaluation names the image: its prompt set, index and category, and the model's name."""
    return {"prompt_set_id": prompt_set.identity, "model": plan.spec.name, "image_key": item.key,
            "prompt_index": item.prompt.index, "category": item.prompt.category, "run_id": run_id}


class _RunRecord:
    """Writes the `runs` and `prompt_sets` rows just before the run's first image, sample or score row (or at its
    end when everything was already there), so a run whose set-up fails (a broken model folder) leaves no row."""

    def __init__(self, store: ResultsStore, run_id: str, config: dict, prompt_set: PromptSet):
        self.store, self.run_id, self.config, self.prompt_set = store, run_id, config, prompt_set
        self.recorded = False

    def ensure(self) -> None:
        if not self.recorded:
            ps = self.prompt_set
            self.store.record_prompt_set(PromptSetRecord(ps.identity, ps.name, ps.source or ps.name, ps.fingerprint,
                                                         len(ps.prompts)))
            self.store.record_run(self.run_id, self.config, library_versions(), git_commit())
            self.recorded = True


def _rebuild_damaged(items: list[GenerationItem], store: ResultsStore, cache: ImageCache) -> int:
    """Forget stored images whose cached file is missing or no longer hashes to its name, with their scores, so
    the generate and score steps that follow make and score them again. Returns how many."""
    rows = store.image_rows([i.key for i in items])
    damaged = [row["image_key"] for row in rows if not cache.verify(row["image_sha256"])]
    if damaged:
        store.forget_images(damaged)
    return len(damaged)


def _generate_missing(plan: _ModelPlan, items: list[GenerationItem], store: ResultsStore, cache: ImageCache,
                      config: EvaluateConfig, device: str, dtype, dtype_name: str, prompt_set: PromptSet,
                      run: _RunRecord, show: bool) -> tuple[int, int]:
    """Returns (generated, reused from the image cache)."""
    run_id = run.run_id
    keys = [i.key for i in items]
    in_store = store.existing_images(keys)
    labelled = store.existing_samples(prompt_set.identity, plan.spec.name, keys)
    # An image made for another prompt set or model name gets this evaluation's label too.
    relabel = [_sample_row(plan, i, prompt_set, run_id) for i in items if i.key in in_store and i.key not in labelled]
    if relabel:
        run.ensure()
        store.add_samples(relabel)
    missing = [i for i in items if i.key not in in_store]
    cached = cache.lookup(i.key for i in missing)
    if cached:
        run.ensure()
        found = [i for i in missing if i.key in cached]
        store.add_images([_image_row(plan, i, cached[i.key], dtype_name, run_id, None) for i in found],
                         [_sample_row(plan, i, prompt_set, run_id) for i in found])
    todo = [i for i in missing if i.key not in cached]
    if not todo:
        return 0, len(cached)
    pipe = load_pipeline(plan.spec, device=device, dtype=dtype)
    run.ensure()
    with progress_bar(f"generate {plan.spec.name}", len(todo), show) as advance:
        for batch in generate_batches(pipe, plan.protocol, plan.spec.family, todo, config.batch_size, advance):
            rows = [_image_row(plan, item, cache.put(item.key, image), dtype_name, run_id, batch)
                    for item, image in batch]
            store.add_images(rows, [_sample_row(plan, item, prompt_set, run_id) for item, _image in batch])
    del pipe
    _free_memory()
    return len(todo), len(cached)


def stored_version(metric: Metric, score_dtype) -> str:
    """The metric's version, plus the scoring dtype when it is not float32 (half precision moves scores)."""
    import torch  # noqa: PLC0415 - torch loads in seconds: on first use

    return metric.version if score_dtype == torch.float32 else f"{metric.version}+{str(score_dtype)[6:]}"


def _score_missing(metric: Metric, keys: list[str], store: ResultsStore, cache: ImageCache, config: EvaluateConfig,
                   device: str, dtype, run: _RunRecord, show: bool) -> tuple[int, set[str]]:
    """Returns (scores stored, keys whose file failed verification when read: the caller regenerates those)."""
    version = stored_version(metric, dtype)
    done = store.scored_images(keys, metric.key, version)
    todo = [k for k in keys if k not in done]
    damaged: set[str] = set()
    if not todo:
        return 0, damaged
    rows = {row["image_key"]: row for row in store.image_rows(todo)}
    base = resolve_model(metric.paired_with_model) if metric.paired_with_model is not None else None
    metric.load(device, dtype)
    run.ensure()
    scored = 0
    with progress_bar(f"score {metric.key}", len(todo), show) as advance:
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start:start + config.batch_size]
            images = {k: cache.read(rows[k]["image_sha256"]) for k in batch}
            damaged.update(k for k, image in images.items() if image is None)
            good = [k for k in batch if images[k] is not None]
            if base is not None:  # a paired metric scores only the images whose base counterpart is readable
                base_images = _base_images(base, good, rows, cache, damaged)
                good = [k for k in good if k in base_images]
            if good:
                values = (metric.score_pairs([images[k] for k in good], [base_images[k] for k in good])
                          if base is not None
                          else metric.score([images[k] for k in good], [rows[k]["prompt"] for k in good]))
                values = _finite_scores(metric, good, values, rows, scored)
                scored += store.add_scores(metric.key, version, run.run_id, list(zip(good, values, strict=True)))
            advance(len(batch))
    metric.unload()
    _free_memory()
    return scored, damaged


def _finite_scores(metric: Metric, keys: list[str], values: Sequence, rows: dict[str, dict],
                   stored: int) -> list[float]:
    """The batch's values as floats; a NaN, an infinity or a non-number is refused before anything of the batch
    is stored, so no statistic ever averages it and the batches before it are kept."""
    numbers = []
    for key, value in zip(keys, values, strict=True):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, (bool, str, bytes)) or not math.isfinite(number):
            row = rows[key]
            raise RpoBenchError(f"metric {metric.key} scored {value!r} for image {key[:16]} (prompt "
                                f"{row['prompt']!r}, seed {row['seed']}): not a finite number, so this batch was not "
                                f"stored ({stored} scores of it before this batch are kept); accepted: finite numbers "
                                "(check the metric's weights and inputs)")
        numbers.append(number)
    return numbers


def _base_images(base: ModelSpec, keys: list[str], rows: dict[str, dict], cache: ImageCache,
                 damaged: set[str]) -> dict:
    """key -> the base model's image for the same prompt, seed, protocol and dtype (a paired metric's other half).

    `_check_pairs` made sure the base model ran under every protocol, so a base image absent from the cache was
    damaged since it was made: its key joins `damaged`, the next pass regenerates it and scores the pair then."""
    fingerprint = model_fingerprint(base)
    base_keys = {k: generation_key(fingerprint, PROTOCOLS.get(rows[k]["protocol"]).fingerprint(base.family),
                                   rows[k]["dtype"], rows[k]["prompt"], rows[k]["seed"]) for k in keys}
    found = cache.lookup(base_keys.values())
    images = {}
    for key, base_key in base_keys.items():
        image = cache.read(found[base_key]) if base_key in found else None
        if image is None:
            damaged.add(base_key)
        else:
            images[key] = image
    return images


def _free_memory() -> None:
    """Give a finished model's GPU memory back before the next loads. On the CPU the allocator returns memory
    when the last reference goes; a forced gc.collect() there costs a quarter second a call for nothing."""
    import torch  # noqa: PLC0415 - torch loads in seconds: on first use

    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def _score_tables(store: ResultsStore, config: EvaluateConfig, plans: list[_ModelPlan], metrics: list[Metric],
                  score_dtype, prompt_set: PromptSet) -> list[ScoreTable]:
    """This run's scores as {(prompt index, seed): value} per (model, protocol, metric), read from the store's
    samples of this prompt set, exactly as the report reads them (summary.score_dict)."""
    keys = list(dict.fromkeys(item.key for plan in plans for item in plan.items))
    rows = store.scored_samples(prompt_set.identity, list(dict.fromkeys(p.spec.name for p in plans)), keys)
    by_table: dict[tuple, list] = {}
    for row in rows:
        by_table.setdefault((row.model, row.protocol_fingerprint, row.metric, row.metric_version), []).append(row)
    tables = []
    for plan in plans:
        wanted = {item.key for item in plan.items}
        protocol_fp = plan.protocol.fingerprint(plan.spec.family)
        # With --protocol every model runs under each protocol and models are compared within one; without it,
        # each model runs its own protocol and all are compared with each other.
        group = plan.protocol.name if config.protocol else ""
        for metric in metrics:
            samples = [r for r in by_table.get((plan.spec.name, protocol_fp, metric.key,
                                                stored_version(metric, score_dtype)), []) if r.image_key in wanted]
            scores, categories, _skipped = score_dict(samples)
            tables.append(ScoreTable(plan.spec.name, plan.protocol.name, group, metric.key, metric.higher_is_better,
                                     scores, categories))
    return tables


def summarise(config: EvaluateConfig, tables: list[ScoreTable]) -> list[SummaryRow]:
    """Means with prompt-clustered intervals, and every model against the baseline (see evaluation.summary)."""
    baseline = resolve_model(config.baseline or config.models[0]).name
    return summarise_tables(tables, baseline, by_category=config.by == "category")


def _check_summary_options(config: EvaluateConfig) -> None:
    if config.baseline is not None and config.baseline not in config.models:
        raise BadInputError(f"--baseline {config.baseline!r} is not among --models; accepted: one of "
                            f"{', '.join(config.models)}")
    if config.by is not None and config.by not in BY_ACCEPTED:
        raise BadInputError(f"--by {config.by!r}: accepted: {', '.join(BY_ACCEPTED)}")


def _check_categories(config: EvaluateConfig, prompt_set: PromptSet) -> None:
    """Before any image is made: a split by category of a set without categories would be one empty split."""
    if config.by == "category" and not any(p.category for p in prompt_set.prompts):
        raise BadInputError(f"--by category: the prompt set {prompt_set.name!r} gives no prompt a category; "
                            "accepted: a prompt set with categories (a .jsonl file's \"category\" field)")


def _check_config(config: EvaluateConfig) -> None:
    if isinstance(config.batch_size, bool) or not isinstance(config.batch_size, int) or config.batch_size < 1:
        raise BadInputError(f"--batch-size {config.batch_size}: accepted: an integer >= 1")
    if not config.models:
        raise BadInputError("no models given; name at least one (rpo-bench models lists them)")
    config.seeds = check_seeds(list(config.seeds))
    _check_summary_options(config)


def _check_pairs(config: EvaluateConfig, metrics: list[Metric]) -> None:
    """A paired metric (base-sim:S) needs its base model among the models, under every protocol the others use."""
    for metric in metrics:
        if metric.paired_with_model is None:
            continue
        base = resolve_model(metric.paired_with_model)
        specs = [resolve_model(name) for name in config.models]
        if base.name not in {spec.name for spec in specs}:
            raise BadInputError(f"{metric.key} compares with {metric.arg}'s base model {metric.paired_with_model}: "
                                f"add {metric.paired_with_model} to --models")
        wanted = {name for spec in specs for name in protocol_names(config, spec)}
        if not wanted <= set(protocol_names(config, base)):
            raise BadInputError(f"{metric.key} compares images made under the same protocol, and "
                                f"{metric.paired_with_model} runs only {', '.join(protocol_names(config, base))}; "
                                f"accepted: one --protocol for every model (e.g. --protocol {base.protocol})")


def evaluate(config: EvaluateConfig, context: ProcessContext | None = None) -> EvaluateResult:
    _check_config(config)
    context = context or process_context(config.device)
    device = context.device or resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    dtype_name = str(dtype).removeprefix("torch.")
    score_dtype = resolve_dtype(config.score_dtype, device)
    # Resolve every name before any work, so a typo in the last metric fails in a second, not after an hour.
    require_fetchable(models=config.models, metrics=config.metrics, prompts=[config.prompts])
    prompt_set = load_prompt_set(config.prompts)
    _check_categories(config, prompt_set)
    metrics = [make_metric(m) for m in config.metrics]
    _check_pairs(config, metrics)
    for name in config.models:
        for protocol_name in protocol_names(config, resolve_model(name)):
            PROTOCOLS.get(protocol_name)
    # Fingerprints (which build tiny models) and metric versions come before the store and cache are opened, so
    # a model or metric that cannot be used leaves no new file behind.
    plans = _plan(config, prompt_set, dtype_name)
    for metric in metrics:
        _ = metric.version
    run_id, run_config = _run_id(config, plans, prompt_set, dtype_name)
    result = EvaluateResult(run_id)
    store = ResultsStore(config.store)
    try:
        cache = ImageCache(config.image_cache)
    except BaseException:
        store.close()
        raise
    try:
        run = _RunRecord(store, run_id, run_config, prompt_set)
        _generate_and_score(config, context, plans, metrics, store, cache, run, result, device, dtype, dtype_name,
                            score_dtype, prompt_set)
        context.barrier()
        result.tables = _score_tables(store, config, plans, metrics, score_dtype, prompt_set)
        result.summary = summarise(config, result.tables)
        result.notes = [note for metric in metrics for note in metric.notes()]
    finally:
        store.close()
        cache.close()
    return result


def _generate_and_score(config: EvaluateConfig, context: ProcessContext, plans: list[_ModelPlan],
                        metrics: list[Metric], store: ResultsStore, cache: ImageCache, run: _RunRecord,
                        result: EvaluateResult, device: str, dtype, dtype_name: str, score_dtype,
                        prompt_set: PromptSet) -> None:
    """Verify, generate what is missing, score what is unscored; a file that fails verification while being
    scored is forgotten, and a second pass regenerates and scores it."""
    show = config.show_progress and context.is_main
    for _ in range(3):  # a file damaged again during the rebuild pass is a disk problem, not worth a loop
        rebuilt = sum(_rebuild_damaged(context.shard(plan.items), store, cache) for plan in plans)
        if rebuilt:
            log.warning("%d cached image(s) in %s no longer matched their sha256 (truncated, replaced or missing): "
                        "regenerated and rescored", rebuilt, cache.root)
        result.rebuilt += rebuilt
        for plan in plans:
            generated, reused = _generate_missing(plan, context.shard(plan.items), store, cache, config, device,
                                                  dtype, dtype_name, prompt_set, run, show)
            result.generated += generated
            result.reused += reused
        # one entry per image: an alias of a model (same weights) or a repeated prompt is scored once
        my_keys = list(dict.fromkeys(item.key for plan in plans for item in context.shard(plan.items)))
        damaged: set[str] = set()
        for metric in metrics:
            scored, bad = _score_missing(metric, my_keys, store, cache, config, device, score_dtype, run, show)
            result.scored[metric.key] = result.scored.get(metric.key, 0) + scored
            damaged |= bad
        if not damaged:
            break
    run.ensure()
