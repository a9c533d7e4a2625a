"""Score image files made anywhere (another tool, a paper's release) with rpo-bench's metrics.

Every image is checked to decode before any model loads; each metric loads once and scores in batches; with
`out` every batch is appended to a JSONL file as soon as it is scored, and a rerun skips what the file already
holds for the same metric version, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from rpo_bench.errors import BadInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class ScoreSummary:
    metric: str
    version: str
    higher_is_better: bool
    values: list[float] = field(default_factory=list)

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
            images.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            images.append(path)
        else:
            raise BadInputError(f"image path {path} does not exist")
    if not images:
        raise BadInputError(f"no images in {', '.join(map(str, paths))}; accepted: {', '.join(IMAGE_SUFFIXES)}")
    return images


def open_image(path: Path, full: bool = True) -> Image.Image:
    """The decoded image, or one line naming the file that does not decode."""
    try:
        image = Image.open(path)
        if full:
            image.load()
        else:
            image.verify()  # header and structure only: cheap enough to run on every file up front
        return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(f"image {path} does not decode ({type(exc).__name__}: {exc}); accepted: image files "
                            f"that PIL reads ({', '.join(IMAGE_SUFFIXES)})") from exc


def prompts_for(images: Sequence[Path], prompt: str | None, prompts_file: Path | None) -> list[str]:
    if (prompt is None) == (prompts_file is None):
        raise BadInputError("give either --prompt TEXT (one prompt for all images) or --prompts FILE (one per line)")
    if prompt is not None:
        return [prompt] * len(images)
    try:
        lines = prompts_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"--prompts {prompts_file}: cannot read it as UTF-8 text ({type(exc).__name__})") from exc
    if len(lines) != len(images):
        raise BadInputError(f"--prompts {prompts_file}: {len(lines)} lines for {len(images)} images; accepted: "
                            "one prompt per line, in the images' order")
    return lines


def _done_rows(out: Path | None) -> dict[tuple[str, str, str], float]:
    """(image, metric, version) -> value of the rows an earlier run already wrote to `out`."""
    if out is None or not out.is_file():
        return {}
    done = {}
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            done[(row["image"], row["metric"], row["version"])] = float(row["value"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a kill: that batch is scored again
    return done


def score_files(images: Sequence[Path], prompts: Sequence[str], metric_specs: Sequence[str], device: str = "auto",
                dtype: str = "float32", batch_size: int = 16, out: Path | None = None,
                show_progress: bool = True) -> list[ScoreSummary]:
    from rpo_bench.config import resolve_device, resolve_dtype
    from rpo_bench.evaluate import stored_version
    from rpo_bench.metrics import make_metric
    from rpo_bench.progress import progress_bar

    if batch_size < 1:
        raise BadInputError(f"--batch-size {batch_size}: accepted: an integer >= 1")
    metrics = [make_metric(spec) for spec in metric_specs]  # unknown names fail before any work
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    for path, text in zip(images, prompts, strict=True):
        open_image(path, full=False)
        if not text.strip():  # checked before any model loads; scorers refuse it too
            raise BadInputError(f"the prompt of {path} is empty; accepted: non-empty text")
    done = _done_rows(out)
    summaries = []
    for metric in metrics:
        version = stored_version(metric, torch_dtype)
        values = {i: done[key] for i, path in enumerate(images) if (key := (str(path), metric.key, version)) in done}
        todo = [i for i in range(len(images)) if i not in values]
        if todo:
            metric.load(device, torch_dtype)
        with progress_bar(f"score {metric.key}", len(todo), show_progress) as advance:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                scores = metric.score([open_image(images[i]) for i in batch], [prompts[i] for i in batch])
                values.update(zip(batch, scores, strict=True))
                if out is not None:  # appended per batch: a crash loses at most the batch in flight
                    with open(out, "a", encoding="utf-8") as handle:
                        handle.writelines(json.dumps({"image": str(images[i]), "prompt": prompts[i],
                                                      "metric": metric.key, "version": version,
                                                      "value": values[i]}) + "\n" for i in batch)
                advance(len(batch))
        metric.unload()
        summaries.append(ScoreSummary(metric.key, version, metric.higher_is_better,
                                      [values[i] for i in range(len(images))]))
    return summaries
