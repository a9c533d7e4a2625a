"""`rpo-bench report`: every score in a results store as markdown tables, one section per (prompt set, protocol,
metric, metric version), so that scores made under different protocols, scorer weights or prompt sets are never
averaged or compared together. The numbers are evaluation.summary's (prompt-clustered means, paired
comparisons with a baseline); this module only reads the store, groups and formats.

The store is opened query-only (ResultsStore(readonly=True)): a report never creates, migrates or writes to a
store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from rpo_bench.core.errors import BadInputError
from rpo_bench.core.version import __version__ as rpo_bench_version
from rpo_bench.evaluation.store import ResultsStore, ScoredSample, is_number
from rpo_bench.evaluation.summary import BY_ACCEPTED, ScoreTable, SummaryRow, score_dict, summarise_tables
from rpo_bench.metrics import make_metric
from rpo_bench.reporting.cells import settings_text
from rpo_bench.reporting.published import ReportedValue, reported_for


@dataclass
class Group:
    """The tables of one report section: every model's scores of one metric version under one protocol (with one
    set of settings) and one dtype on one prompt set. Models of one group are compared with each other, nothing
    across groups."""

    prompt_set: str  # the set's label: its name, with its identity appended when two sets share a name
    protocol: str
    protocol_fingerprint: str
    protocol_settings: str  # JSON, as stored with the images
    metric: str
    metric_version: str
    tables: list[ScoreTable] = field(default_factory=list)
    prompt_set_id: str = ""
    dtype: str = ""
    samples: dict[str, list[ScoredSample]] = field(default_factory=dict)  # model -> the rows behind its table

    @property
    def models(self) -> list[str]:
        return [t.model for t in self.tables]

    @property
    def seeds(self) -> list[int]:
        return sorted({seed for t in self.tables for _prompt, seed in t.scores})


@dataclass(frozen=True)
class RunSummary:
    """What one `runs` row says was evaluated: enough to tell which report sections hold its scores."""

    run_id: str
    models: tuple[str, ...]  # store names, in the order evaluate was given them (its baseline is the first)
    protocols: tuple[tuple[str, str], ...]  # (model, protocol fingerprint) pairs the run generated under
    prompt_set: str
    prompt_fingerprint: str
    metrics: tuple[str, ...]
    dtype: str

    def holds(self, group: Group, prompt_fingerprint: str) -> bool:
        """Whether the group's scores include this run's: same prompts, dtype and metric, and one of its models
        under the group's protocol settings. (The metric version is not recorded with a run: every version of a
        metric the run asked for counts.)"""
        return (prompt_fingerprint == self.prompt_fingerprint and group.dtype == self.dtype
                and group.metric in self.metrics
                and any((model, group.protocol_fingerprint) in self.protocols for model in group.samples))


@dataclass
class StoreInfo:
    """What the store's `runs` rows record about the software that wrote it."""

    commits: list[str]
    versions: dict[str, list[str]]  # library -> every version recorded
    first_models: list[str]  # the models of the earliest run, in the order given there
    runs: list[RunSummary] = field(default_factory=list)  # oldest first (the order the runs were first made)
    prompt_fingerprints: dict[str, str] = field(default_factory=dict)  # prompt set id -> fingerprint of its texts


def _higher_is_better(metric: str) -> bool:
    """From the metric's registry entry (unloaded); a metric no longer registered is taken as higher-is-better."""
    try:
        return bool(make_metric(metric).higher_is_better)
    except Exception:  # noqa: BLE001 - an old or unregistered metric key must not stop a report
        return True


def _split(text: str | Sequence[str] | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else [t.strip() for t in text]
    return [t for t in items if t] or None


def prompt_set_labels(rows: Sequence[ScoredSample]) -> dict[str, str]:
    """prompt set id -> the label a report shows: its name, or `name #id` where two sets share a name (two files
    called p.txt in two folders, or a file whose prompts changed between runs)."""
    names: dict[str, str] = {}
    for row in rows:
        names.setdefault(row.prompt_set_id, row.prompt_set)
    counts = Counter(names.values())
    return {pid: name if counts[name] == 1 else f"{name} #{pid[:8]}" for pid, name in names.items()}


def _latest_weights(rows: list[ScoredSample]) -> tuple[list[ScoredSample], list[str]]:
    """A model name whose rows come from several weights (a folder trained again under the same path): the rows of
    the weights scored last, and the fingerprints left out."""
    fingerprints = list(dict.fromkeys(row.model_fingerprint for row in reversed(rows)))
    if len(fingerprints) == 1:
        return rows, []
    return [row for row in rows if row.model_fingerprint == fingerprints[0]], fingerprints[1:]


def load_tables(store_path: Path, metrics: str | Sequence[str] | None = None,
                models: str | Sequence[str] | None = None, notes: list[str] | None = None) -> list[Group]:
    """Every (prompt set, protocol, dtype, metric, metric version) of the store as a Group of ScoreTables keyed by
    (prompt index, seed), one table per model; groups in the order their first score was written. Values that
    are not finite numbers (written from outside rpo-bench) are left out, and `notes` says so."""
    path = Path(store_path).expanduser()
    wanted_metrics, wanted_models = _split(metrics), _split(models)
    with ResultsStore(path, readonly=True) as store:
        rows = store.scored_samples()
    present_metrics = list(dict.fromkeys(r.metric for r in rows))
    for metric in wanted_metrics or []:
        if metric not in present_metrics:
            accepted = ", ".join(present_metrics) if present_metrics else "none: the store holds no scores"
            raise BadInputError(f"--metrics {metric!r}: no scores of this metric in {path}; metrics with scores: "
                                f"{accepted}")
    present_models = list(dict.fromkeys(r.model for r in rows))
    for model in wanted_models or []:
        if model not in present_models:
            raise BadInputError(f"model {model!r} has no scores in {path}; models with scores: "
                                f"{', '.join(present_models) or 'none'}")
    labels = prompt_set_labels(rows)
    groups: dict[tuple, Group] = {}
    per_model: dict[tuple, list[ScoredSample]] = {}
    for row in rows:
        if (wanted_metrics and row.metric not in wanted_metrics) or (wanted_models and row.model not in wanted_models):
            continue
        key = (row.prompt_set_id, row.protocol, row.protocol_fingerprint, row.dtype, row.metric, row.metric_version)
        if key not in groups:
            groups[key] = Group(labels[row.prompt_set_id], row.protocol, row.protocol_fingerprint,
                                row.protocol_settings, row.metric, row.metric_version, prompt_set_id=row.prompt_set_id,
                                dtype=row.dtype)
        per_model.setdefault((key, row.model), []).append(row)
    higher = {metric: _higher_is_better(metric) for metric in {k[4] for k in groups}}
    notes = notes if notes is not None else []
    for (key, model), model_rows in sorted(per_model.items(), key=lambda item: item[0][1]):
        group = groups[key]
        model_rows, older = _latest_weights(model_rows)
        if older:
            notes.append(f"{model} ({group.metric}, protocol {group.protocol}, prompt set {group.prompt_set}): the "
                         f"store holds scores of {len(older) + 1} versions of its weights; shown: the weights scored "
                         f"last ({model_rows[-1].model_fingerprint[:12]}), left out: "
                         f"{', '.join(f[:12] for f in older)}")
        scores, categories, skipped = score_dict(model_rows)
        if skipped:
            notes.append(f"{model} ({group.metric}, protocol {group.protocol}, prompt set {group.prompt_set}): "
                         f"{skipped} stored value(s) are not finite numbers (NaN, infinite or text, written outside "
                         "rpo-bench) and are left out of every number")
        group.samples[model] = [r for r in model_rows if is_number(r.value)]
        # The group name makes summarise_tables keep every section apart even if given several at once.
        group.tables.append(ScoreTable(model, group.protocol, "|".join(key), group.metric, higher[group.metric],
                                       scores, categories))
    return list(groups.values())


def store_info(store_path: Path) -> StoreInfo:
    path = Path(store_path).expanduser()
    with ResultsStore(path, readonly=True) as store:
        runs = store.runs()
        prompt_sets = store.prompt_sets()
    commits = list(dict.fromkeys(run.git_commit or "unknown (not a git checkout)" for run in runs))
    versions: dict[str, list[str]] = {}
    first_models: list[str] = []
    summaries: list[RunSummary] = []
    for run in runs:
        try:
            for name, version in json.loads(run.versions).items():
                if version not in versions.setdefault(name, []):
                    versions[name].append(version)
            if not first_models:
                first_models = [m["name"] for m in json.loads(run.config).get("models", []) if isinstance(m, dict)]
        except (ValueError, AttributeError, KeyError, TypeError):
            pass
        summary = _run_summary(run.run_id, run.config)
        if summary is not None:
            summaries.append(summary)
    return StoreInfo(commits, versions, first_models, summaries, {p.prompt_set_id: p.fingerprint for p in prompt_sets})


def _metric_key(name: str) -> str:
    """The key the store files a metric's scores under (`tiny-clip:` is stored as `tiny-clip`)."""
    try:
        return make_metric(name).key
    except Exception:  # noqa: BLE001 - a metric no longer registered keeps the name the run recorded
        return name


def _run_summary(run_id: str, config_text: str) -> RunSummary | None:
    """The run's configuration as evaluate recorded it (evaluation.evaluate._run_id); None for a row that is not
    (a store written by hand or by another version), which then leads no report."""
    try:
        config = json.loads(config_text)
        entries = [m for m in config["models"] if isinstance(m, dict)]
        models = tuple(dict.fromkeys(str(m["name"]) for m in entries))
        # the fingerprint images are filed under is the hash of these very settings (Protocol.fingerprint)
        protocols = tuple((str(m["name"]), hashlib.sha256(json.dumps(m["protocol"], sort_keys=True).encode())
                           .hexdigest()) for m in entries)
        prompt_set = config["prompt_set"]
        return RunSummary(run_id, models, protocols, str(prompt_set["name"]), str(prompt_set["fingerprint"]),
                          tuple(_metric_key(str(m)) for m in config["metrics"]), str(config["dtype"]))
    except (ValueError, KeyError, TypeError):
        return None


def _differs(groups: Sequence[Group]) -> list[str]:
    """Which of the section keys take more than one value in this report: what a section header must name."""
    names = []
    for label, getter in (("prompt set", lambda g: g.prompt_set_id), ("protocol", lambda g: g.protocol),
                          ("protocol settings", lambda g: g.protocol_fingerprint), ("dtype", lambda g: g.dtype),
                          ("metric", lambda g: g.metric), ("metric version", lambda g: (g.metric, g.metric_version))):
        if len({getter(g) for g in groups}) > 1:
            names.append(label)
    if "protocol settings" in names and len({(g.protocol, g.protocol_fingerprint) for g in groups}) == len(
            {g.protocol for g in groups}):
        names.remove("protocol settings")  # only different protocols, not one protocol with changed settings
    return names


def _section_rows(group: Group, baseline: str | None, by_category: bool) -> list[SummaryRow]:
    base = baseline if baseline in group.models else None
    # summarise_tables compares nothing when the baseline is not among the tables: every row is its own.
    return summarise_tables(group.tables, base or "", by_category=by_category)


@dataclass
class Section:
    """One group's rows (all prompts first, then each category with --by category), ranked within each table."""

    group: Group
    rows: list[SummaryRow]
    baseline: str | None  # the compared baseline; None when it has no scores in this section
    reported: list[ReportedValue] = field(default_factory=list)  # published values of this setting, kept apart
    runs: tuple[str, ...] = ()  # the runs whose scores it holds, oldest first
    lead: bool = False  # it holds the scores of the run the report leads with (--run, default the latest)

    @property
    def compared(self) -> bool:
        """Whether it compares anything: the baseline and at least one other model. A section that does not (one
        model alone, or models without the baseline) goes to the report's appendix."""
        return self.baseline is not None and len(self.group.tables) > 1

    @property
    def title(self) -> str:
        g = self.group
        # float32 is what every CPU run and every default score uses; another dtype is named so that two
        # sections differing only in it never look alike
        dtype = f" · {g.dtype}" if g.dtype and g.dtype != "float32" else ""
        return f"{g.metric} (version {g.metric_version}) · protocol {g.protocol}{dtype} · prompt set {g.prompt_set}"

    def tables(self) -> list[tuple[str | None, list[SummaryRow]]]:
        """(category or None for all prompts, rows) in order."""
        return [(category, [r for r in self.rows if r.category == category])
                for category in dict.fromkeys(r.category for r in self.rows)]


@dataclass
class Report:
    """Everything a report shows, computed once; the markdown, HTML and export renderers only format it."""

    store: Path
    sections: list[Section]
    baseline: str | None
    models: list[str]
    info: StoreInfo
    differs: list[str]
    notes: list[str]
    command: str
    version: str
    by: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # store name -> the name shown (--label or a short name)
    run: RunSummary | None = None  # the run the report leads with (--run, default the store's latest)
    user_labels: dict[str, str] = field(default_factory=dict)  # the --label options alone

    def store_name(self, model: str) -> str:
        """The name the store records for a model shown as `model` (its label, or the name itself)."""
        return next((name for name, label in self.labels.items() if label == model), model)

    @property
    def main_sections(self) -> list[Section]:
        """The sections that compare models, those of the lead run first."""
        return [s for s in self.sections if s.compared]

    @property
    def appendix(self) -> list[Section]:
        """The sections that compare nothing (one model alone, or without the baseline)."""
        return [s for s in self.sections if not s.compared]

    def lead_text(self) -> str | None:
        """One line on the run the report leads with, in the names the report shows; None without one."""
        run = self.run
        if run is None:
            return None
        shown = ", ".join(self.labels.get(m, m) for m in run.models)
        latest = (f"the latest of {len(self.info.runs)} run(s) in this store; --run ID picks another"
                  if run.run_id == self.info.runs[-1].run_id else "chosen with --run")
        held = sum(s.lead and s.compared for s in self.sections)
        folded = f"; {len(self.appendix)} section(s) that compare nothing are in the appendix" if self.appendix else ""
        return (f"First: run {run.run_id} ({latest}): {shown} on prompt set {run.prompt_set}, {held} comparison "
                f"section(s){folded}.")


def _shared_sample_notes(section: Section) -> list[str]:
    notes = []
    g = section.group
    for category, rows in section.tables():
        where = f"{g.metric} {g.metric_version}, protocol {g.protocol}" + (
            f", category {category}" if category is not None else "")
        for row in rows:
            if row.versus is None or row.model == section.baseline:
                continue
            shared = row.versus.difference.n_samples
            if not shared == row.n == row.baseline_n:
                notes.append(f"{row.model} vs {section.baseline} ({where}): compared on the {shared} (prompt, seed) "
                             f"samples both have, of {row.n} and {row.baseline_n}.")
    return notes


def _metric_notes(groups: Sequence[Group]) -> list[str]:
    """What a metric says about itself (the style probe's held-out accuracy), for the versions in this report that
    are the metric's current one; read from caches, never fitted or downloaded."""
    notes = []
    for metric, version in dict.fromkeys((g.metric, g.metric_version) for g in groups):
        try:
            scorer = make_metric(metric)
            if hasattr(scorer, "notes") and scorer.version == version:
                notes += scorer.notes()
        except Exception:  # noqa: BLE001 - a metric no longer registered or not loadable here has nothing to add
            continue
    return notes


def parse_labels(specs: Sequence[str] | None) -> dict[str, str]:
    """--label NAME=LABEL options -> {store name: label}; the split is at the last "=" (a path may hold one)."""
    labels: dict[str, str] = {}
    for spec in specs or []:
        name, equals, label = spec.rpartition("=")
        if not equals or not name.strip() or not label.strip():
            raise BadInputError(f"--label {spec!r}; accepted: NAME=LABEL, NAME a model of the store (as the report "
                                "names it without labels) and LABEL the name to show")
        if re.search(r"[\x00-\x1f\x7f]", label):
            raise BadInputError(f"--label {spec!r}: the label holds a line break or another control character; "
                                "accepted: a single-line label")
        if name in labels:
            raise BadInputError(f"--label {spec!r}: {name!r} is labelled twice; accepted: one --label per model")
        labels[name] = label.strip()
    return labels


def _check_labels(labels: Mapping[str, str], present: Sequence[str], path: Path) -> None:
    for name in labels:
        if name not in present:
            raise BadInputError(f"--label {name}={labels[name]}: {name!r} has no scores in {path}; accepted: one of "
                                f"{', '.join(present) or 'none (the store holds no scores)'}")
    shown = [labels.get(name, name) for name in present]
    for label in dict.fromkeys(shown):
        if shown.count(label) > 1:
            raise BadInputError(f"--label: two models would be shown as {label!r}; accepted: labels that differ "
                                "from each other and from every unlabelled model's name")


def build_report(store_path: Path, baseline: str | None = None, by: str | None = None,
                 metrics: str | Sequence[str] | None = None, command: str | None = None,
                 labels: Mapping[str, str] | None = None, run: str | None = None) -> Report:
    """Read the store and compute every section's numbers (rpo_bench.evaluation.summary); `command` is the reproducing
    command line shown in the provenance (default: built from the arguments). `labels` (store name -> label)
    renames models everywhere the report shows them; other models named by a folder path are shown by a short name
    (short_names). `baseline` may be given by either name. `run` (a run id, or a unique beginning of one) picks the
    evaluation the report leads with; default the store's latest."""
    path = Path(store_path).expanduser()
    if by is not None and by not in BY_ACCEPTED:
        raise BadInputError(f"--by {by!r}: accepted: {', '.join(BY_ACCEPTED)}")
    user_labels = dict(labels or {})
    store_notes: list[str] = []
    groups = load_tables(path, metrics=metrics, notes=store_notes)
    present = list(dict.fromkeys(m for g in groups for m in g.models))
    if user_labels:
        _check_labels(user_labels, present, path)
    labels = {**short_names([m for m in present if m not in user_labels], list(user_labels.values())), **user_labels}
    if labels:
        for group in groups:
            group.tables = [replace(t, model=labels.get(t.model, t.model)) for t in group.tables]
    info = store_info(path)
    lead = _chosen_run(info, run, path, labels)
    # models in the order evaluate was given them (the lead run's first, its baseline at the top), not by name
    order = {m: i for i, m in enumerate(dict.fromkeys(
        [*(lead.models if lead else ()), *(m for r in reversed(info.runs) for m in r.models)]))}
    for group in groups:
        shown = dict(zip(group.models, group.samples, strict=True))  # shown name -> store name, table by table
        group.tables.sort(key=lambda t: order.get(shown[t.model], len(order)))
    held = {id(g): tuple(r.run_id for r in info.runs if r.holds(g, info.prompt_fingerprints.get(g.prompt_set_id, "")))
            for g in groups}
    info = replace(info, first_models=[labels.get(m, m) for m in info.first_models])
    models = list(dict.fromkeys(m for g in groups for m in g.models))
    baseline = labels.get(baseline, baseline) if baseline is not None else None
    if baseline is not None and baseline not in models:
        raise BadInputError(f"--baseline {baseline!r} has no scores in {path}; accepted: one of "
                            f"{', '.join(models) or 'none (the store holds no scores)'}")
    chosen = baseline or _default_baseline(groups, info, lead, labels)
    sections = [Section(g, _section_rows(g, chosen, by == "category"), chosen if chosen in g.models else None,
                        reported_for(g.prompt_set, g.protocol, g.metric), held[id(g)],
                        lead is not None and lead.run_id in held[id(g)]) for g in groups]
    sections = _ordered(sections, info)
    models = list(dict.fromkeys(m for s in sections for m in s.group.models))  # the lead run's models first
    notes = list(dict.fromkeys([*store_notes, *(n for section in sections for n in _shared_sample_notes(section)),
                                *_metric_notes(groups)]))
    if lead is not None and not any(s.lead for s in sections):
        notes.append(f"run {lead.run_id} has no scores among this report's sections"
                     + (" (--metrics leaves them out)" if metrics is not None else ""))
    return Report(path, sections, chosen, models, info, _differs(groups), notes,
                  command or reproduce_command(path, baseline, by, metrics, labels=user_labels, run=run),
                  rpo_bench_version, by, labels, lead, user_labels)


def _chosen_run(info: StoreInfo, run: str | None, path: Path, labels: Mapping[str, str]) -> RunSummary | None:
    """--run: a run id, or a beginning of one that names a single run; default the latest run."""
    if run is None:
        return info.runs[-1] if info.runs else None
    wanted = run.strip()
    found = [r for r in info.runs if r.run_id == wanted] or [r for r in info.runs if wanted and
                                                               r.run_id.startswith(wanted)]
    if len(found) == 1:
        return found[0]
    listed = ", ".join(f"{r.run_id} ({', '.join(labels.get(m, m) for m in r.models)})"
                       for r in reversed(info.runs[-8:]))
    more = f" and {len(info.runs) - 8} older" if len(info.runs) > 8 else ""
    why = f"{len(found)} runs begin with it" if found else "no run of this id"
    raise BadInputError(f"--run {run!r}: {why} in {path}; accepted: a run id (evaluate prints it; latest first): "
                        f"{listed or 'none: the store records no run'}{more}")


def _ordered(sections: list[Section], info: StoreInfo) -> list[Section]:
    """The lead run's sections first, then the others by their newest run, newest first; the store's order within
    each (a stable sort). Sections no recorded run holds come last."""
    position = {r.run_id: i for i, r in enumerate(info.runs)}

    def key(section: Section) -> tuple[bool, int]:
        newest = max((position[r] for r in section.runs), default=-1)
        return (not section.lead, -newest)

    return sorted(sections, key=key)


def _registered_name(path: str) -> str | None:
    """The registry name of a model folder (the --name `rpo-bench train` registered it under), if one names it."""
    from rpo_bench.models.catalog import MODELS  # noqa: PLC0415 - the model registry: read only for folder names

    try:
        for entry in MODELS:
            spec = entry.resolve()
            if path in (spec.unet_repo, spec.lora_repo, spec.repo) and entry.name != path:
                return entry.name
    except Exception:  # noqa: BLE001 - a broken user or plug-in entry must not stop a report: folder names then
        return None
    return None


def short_names(names: Sequence[str], taken: Sequence[str] = ()) -> dict[str, str]:
    """store name -> the short name a report shows, for the names that are folder paths (evaluate records a folder
    by its absolute path): the registry name a training run was registered under (train --name), else the folder's
    name, with parent folders added only where two would otherwise be shown alike (or like a name in `names` or
    `taken`). Names that are not paths are left out (shown as they are)."""
    paths = [n for n in names if os.path.isabs(n)]
    if not paths:
        return {}
    fixed = {n for n in names if not os.path.isabs(n)} | set(taken)
    short: dict[str, str] = {}
    for name in paths:
        registered = _registered_name(name)
        if registered is not None and registered not in fixed and registered not in short.values():
            short[name] = registered
    fixed |= set(short.values())
    parts = {n: [p for p in Path(n).parts if p != os.sep] for n in paths if n not in short}
    depth = dict.fromkeys(parts, 1)
    while True:
        shown = {n: "/".join(p[-depth[n]:]) for n, p in parts.items()}
        counts = Counter(shown.values())
        clashing = [n for n in parts if (counts[shown[n]] > 1 or shown[n] in fixed) and depth[n] < len(parts[n])]
        if not clashing:
            break
        for n in clashing:
            depth[n] += 1
    for name, text in shown.items():
        # a clash left at full depth (a path equal to a --label): the store's own name, which is unique
        short[name] = text if counts[text] == 1 and text not in fixed else name
    return {n: s for n, s in short.items() if s != n}


def _default_baseline(groups: Sequence[Group], info: StoreInfo, lead: RunSummary | None,
                      labels: Mapping[str, str]) -> str | None:
    """The first model of the run the report leads with when that run compared models (as evaluate compared
    them); otherwise the first model of the earliest run, if it has scores; otherwise the first with scores."""
    present = list(dict.fromkeys(m for g in groups for m in g.models))
    if lead is not None and len(lead.models) > 1 and labels.get(lead.models[0], lead.models[0]) in present:
        return labels.get(lead.models[0], lead.models[0])
    return next((m for m in info.first_models if m in present), present[0] if present else None)


def reproduce_command(store_path: Path, baseline: str | None, by: str | None, metrics: str | Sequence[str] | None,
                      out: Path | None = None, fmt: str = "markdown", labels: Mapping[str, str] | None = None,
                      run: str | None = None) -> str:
    words = ["rpo-bench", "report", "--store", str(store_path)]
    if run is not None:
        words += ["--run", run]
    for name, label in (labels or {}).items():
        words += ["--label", f"{name}={label}"]
    if baseline is not None:
        words += ["--baseline", baseline]
    if by is not None:
        words += ["--by", by]
    if (chosen := _split(metrics)) is not None:
        words += ["--metrics", ",".join(chosen)]
    words.append(f"--{fmt}")
    if out is not None:
        words += ["--out", str(out)]
    return shlex.join(words)


def header_items(report: Report, escape: Callable[[object], str], code: Callable[[object], str]) -> list[str]:
    """What was evaluated (store, prompt sets, protocols, seeds, metric versions, models), one item per fact, with
    `escape` applied to the store's text and `code` to the store path: each renderer passes its own."""
    groups = [section.group for section in report.sections]
    items = [f"store: {code(report.store)}"]
    if not groups:
        return [*items, "no scores in this store"]
    items.append(f"prompt set(s): {', '.join(escape(p) for p in dict.fromkeys(g.prompt_set for g in groups))}")
    protocols = dict.fromkeys((g.protocol, g.protocol_settings) for g in groups)
    items.append("protocol(s): " + "; ".join(f"{escape(name)} ({escape(settings_text(s))})" for name, s in protocols))
    items.append(f"seeds: {', '.join(str(s) for s in sorted({s for g in groups for s in g.seeds}))}")
    versions = dict.fromkeys((g.metric, g.metric_version) for g in groups)
    items.append("metric versions: " + ", ".join(f"{escape(m)} {escape(v)}" for m, v in versions))
    items.append(f"models: {', '.join(escape(m) for m in report.models)}; baseline: {escape(report.baseline)} (each "
                 "other model minus the baseline on the (prompt, seed) samples both have)")
    if len(groups) > 1:
        items.append(f"{len(groups)} sections, one per {escape(' / '.join(report.differs))}: scores of different "
                     "sections are never averaged or compared together")
    return items
