"""Score image files made anywhere (another tool, a paper's release) with rpo-bench's metrics.

Every image is checked to decode before any model loads; each metric loads once and scores in batches; with
`out` every batch is appended to a JSONL file as soon as it is scored, and a rerun skips what the file already
holds for the same metric version, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rpo_bench.core.config import resolve_device, resolve_dtype
from rpo_bench.core.errors import BadInputError
from rpo_bench.core.progress import progress_bar
from rpo_bench.core.user_files import read_text
from rpo_bench.evaluation.evaluate import stored_version
from rpo_bench.metrics import make_metric
from rpo_bench.metrics.preprocess import check_user_image, open_user_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class ScoreSummary:
    metric: str
    version: str
    higher_is_better: bool
    values: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the metric's own lines (a style probe's held-out accuracy)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else math.nan

    @property
    def stderr(self) -> float:
        n = len(self.values)
        if n < 2:
            return math.nan
        variance = sum((v - self.mean) ** 2 for v in self.values) / (n - 1)
        return math.sqrt(variance / n)


def collect_images(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders expanded to their images in name order."""
    images: list[Path] = []
    for path in paths:
        if path.is_dir():
            try:
                images.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
            except OSError as exc:
                raise BadInputError(f"image folder {path} cannot be listed ({exc.strerror or exc}); accepted: "
                                    "a folder you can read") from exc
        elif path.is_file():
            images.append(path)
        else:
            raise BadInputError(f"image path {path} does not exist")
    if not images:
        raise BadInputError(f"no images in {', '.join(map(str, paths))}; accepted: {', '.join(IMAGE_SUFFIXES)}")
    return images


def check_output_file(out: Path | None) -> None:
    """`--out` must be a file that can be appended to; checked before any image is read or model loaded, so that
    a typo does not fail after the first batch has been scored and lost."""
    if out is None:
        return
    if out.is_dir():
        raise BadInputError(f"--out {out} is a folder; accepted: a JSONL file path (created if missing, appended to "
                            "if present)")
    if out.exists():
        if not os.access(out, os.W_OK):
            raise BadInputError(f"--out {out} is not writable; accepted: a JSONL file you can write")
        return
    parent = out.parent
    if not parent.is_dir():
        raise BadInputError(f"--out {out}: the folder {parent} does not exist; accepted: a file in an existing "
                            "folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"--out {out}: the folder {parent} is not writable; accepted: a file in a folder you "
                            "can write")


def prompts_for(images: Sequence[Path], prompt: str | None, prompts_file: Path | None) -> list[str]:
    if (prompt is None) == (prompts_file is None):
        raise BadInputError("give either --prompt TEXT (one prompt for all images) or --prompts FILE (one per line)")
    if prompt is not None:
        return [prompt] * len(images)

    lines = read_text(prompts_file, "--prompts file").splitlines()
    if len(lines) != len(images):
        raise BadInputError(f"--prompts {prompts_file}: {len(lines)} lines for {len(images)} images; accepted: "
                            "one prompt per line, in the images' order")
    return lines


def _done_rows(out: Path | None) -> dict[tuple[str, str, str], float]:
    """(image, metric, version) -> value of the rows an earlier run already wrote to `out`."""
    if out is None or not out.is_file():
        return {}
    try:
        text = out.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"--out {out} cannot be read as the UTF-8 JSONL that rpo-bench score writes "
                            f"({type(exc).__name__}); accepted: such a file, or a new path") from exc
    done = {}
    for line in text.splitlines():
        try:
            row = json.loads(line)
            done[(row["image"], row["metric"], row["version"])] = float(row["value"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a kill: that batch is scored again
    return done


def _end_cut_line(out: Path) -> None:
    """A kill during an append can leave a last line without its newline. A cut row is removed, so the file stays
    JSONL that any reader parses (its image is scored again: _done_rows never read it); a complete last row that
    only lacks its newline (a file edited by hand) gets one, so the next rows do not join it."""
    # atomic: an append-only file of rows; only an unterminated tail is touched, and no complete row is lost
    if not out.is_file() or out.stat().st_size == 0:
        return
    with open(out, "rb+") as handle:
        end = handle.seek(0, os.SEEK_END)
        start, tail = end, b""
        while start > 0 and b"\n" not in tail:  # back to the last newline: the file may hold many rows
            step = min(start, 4096)
            handle.seek(start - step)
            tail = handle.read(step) + tail
            start -= step
        if tail.endswith(b"\n"):
            return
        cut = start + tail.rfind(b"\n") + 1  # 0 when the file is one unterminated line
        try:
            json.loads(tail[cut - start:])
        except ValueError:  # cut by a kill: not a row
            handle.truncate(cut)
            return
        handle.seek(0, os.SEEK_END)
        handle.write(b"\n")


def score_files(images: Sequence[Path], prompts: Sequence[str], metric_specs: Sequence[str], device: str = "auto",
                dtype: str = "float32", batch_size: int = 16, out: Path | None = None,
                show_progress: bool = True) -> list[ScoreSummary]:
    if batch_size < 1:
        raise BadInputError(f"--batch-size {batch_size}: accepted: an integer >= 1")
    check_output_file(out)
    metrics = [make_metric(spec) for spec in metric_specs]  # unknown names fail before any work
    for metric in metrics:
        if metric.paired_with_model is not None:  # base-sim:S needs the base model's image of the same seed
            raise BadInputError(f"{metric.key} compares each image with {metric.paired_with_model}'s image for the "
                                "same prompt and seed, which image files do not have; accepted: use it in "
                                "`rpo-bench evaluate`")
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    for path, text in zip(images, prompts, strict=True):
        check_user_image(path)  # every file, before any model loads
        if not text.strip():  # checked before any model loads; scorers refuse it too
            raise BadInputError(f"the prompt of {path} is empty; accepted: non-empty text")
    done = _done_rows(out)
    # Every metric's version (which finds its weights, and reads a bad argument such as a seed) before the first
    # one scores, so the last metric's typo does not surface after the others ran.
    versions = [stored_version(metric, torch_dtype) for metric in metrics]
    summaries = []
    for metric, version in zip(metrics, versions, strict=True):
        values = {i: done[key] for i, path in enumerate(images) if (key := (str(path), metric.key, version)) in done}
        todo = [i for i in range(len(images)) if i not in values]
        if todo:
            metric.load(device, torch_dtype)
        with progress_bar(f"score {metric.key}", len(todo), show_progress) as advance:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                scores = metric.score([open_user_image(images[i]) for i in batch], [prompts[i] for i in batch])
                values.update(zip(batch, scores, strict=True))
                if out is not None:  # appended per batch: a crash loses at most the batch in flight
                    # atomic: append-only rows; a row torn by a kill is removed by _end_cut_line first
                    _end_cut_line(out)
                    with open(out, "a", encoding="utf-8") as handle:
                        handle.writelines(json.dumps({"image": str(images[i]), "prompt": prompts[i],
                                                      "metric": metric.key, "version": version,
                                                      "value": values[i]}) + "\n" for i in batch)
                advance(len(batch))
        metric.unload()
        summaries.append(ScoreSummary(metric.key, version, metric.higher_is_better,
                                      [values[i] for i in range(len(images))], metric.notes()))
    return summaries
