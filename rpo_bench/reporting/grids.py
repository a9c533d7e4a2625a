"""Image grids, so a person can look at what was generated instead of reading numbers about it.

A grid is rows x columns of images with wrapped labels, drawn with PIL alone. The layout depends only on the
number of rows and columns, the cell size and whether there is a title (never on the label texts), so grids of
the same shape line up and the same inputs give byte-identical PNGs.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from rpo_bench.core.atomic import atomic_path
from rpo_bench.core.config import writable_dir
from rpo_bench.core.errors import BadInputError, RpoBenchError
from rpo_bench.evaluation.image_cache import ImageCache
from rpo_bench.evaluation.prompts import load_prompt_set
from rpo_bench.evaluation.store import ResultsStore
from rpo_bench.models.catalog import resolve_model

PAD = 8  # margin around the grid and between the row labels and the first column
GAP = 4  # between cells
LABEL_FONT = 11
TITLE_FONT = 14
LINE = 14  # label line height at LABEL_FONT
TITLE_LINE = 20
HEADER_LINES = 4  # column labels: "micro-base: a watercolor painting of <prompt>" needs four lines of a 96 px cell
ROW_LABEL_WIDTH = 176  # a micro prompt (about 260 px at LABEL_FONT) wraps to two lines
MAX_ROW_LINES = 4
MIN_CELL = 16
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
MISSING_FILL = (222, 222, 222)
MISSING_TEXT = (110, 110, 110)
ELLIPSIS = "…"


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's embedded font (Pillow >= 10.1): no font file on the machine is needed, so every machine with the
    same Pillow draws the same pixels."""
    return ImageFont.load_default(size=size)


def grid_size(rows: int, columns: int, cell: int = 96, title: bool = False) -> tuple[int, int]:
    """(width, height) in pixels of a grid of this shape."""
    width = PAD + ROW_LABEL_WIDTH + PAD + columns * cell + (columns - 1) * GAP + PAD
    header = ((TITLE_LINE + PAD) if title else 0) + HEADER_LINES * LINE + GAP
    height = PAD + header + rows * cell + (rows - 1) * GAP + PAD
    return width, height


def _split_word(word: str, font, width: int) -> list[str]:
    """A word wider than the line (a model path, a long hash) is cut between characters instead of overflowing."""
    pieces, current = [], ""
    for char in word:
        if current and font.getlength(current + char) > width:
            pieces.append(current)
            current = ""
        current += char
    return pieces + ([current] if current else [])


def wrap_text(text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to `width` pixels; text beyond `max_lines` is cut and the last line ends in an ellipsis."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        for piece in _split_word(word, font, width):
            candidate = f"{current} {piece}" if current else piece
            if current and font.getlength(candidate) > width:
                lines.append(current)
                current = piece
            else:
                current = candidate
    if current:
        lines.append(current)
    if len(lines) <= max_lines:
        return lines
    last = lines[max_lines - 1]
    while last and font.getlength(last + ELLIPSIS) > width:
        last = last[:-1]
    return lines[:max_lines - 1] + [last.rstrip() + ELLIPSIS]


def _fit(image: Image.Image, cell: int) -> Image.Image:
    """The image scaled to fit a cell, aspect ratio kept. Upscaling is NEAREST so 32 px micro images stay crisp
    pixel blocks instead of blurring; downscaling is LANCZOS, which does not alias."""
    image = image.convert("RGB")
    scale = cell / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    return image.resize(size, resample)


def _draw_missing(draw: ImageDraw.ImageDraw, x: int, y: int, cell: int) -> None:
    draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=MISSING_FILL)
    font = _font(LABEL_FONT)
    draw.text((x + cell / 2, y + cell / 2), "missing", fill=MISSING_TEXT, font=font, anchor="mm")


def _draw_lines(draw: ImageDraw.ImageDraw, lines: list[str], x: float, top: float, anchor: str) -> None:
    font = _font(LABEL_FONT)
    for i, line in enumerate(lines):
        draw.text((x, top + i * LINE), line, fill=TEXT, font=font, anchor=anchor)


def _check_shape(cells: Sequence[Sequence[Image.Image | None]], row_labels: Sequence[str],
                 column_labels: Sequence[str], cell: int) -> None:
    if isinstance(cell, bool) or not isinstance(cell, int) or cell < MIN_CELL:
        raise BadInputError(f"grid cell size {cell!r}; accepted: an integer >= {MIN_CELL} (pixels)")
    if not row_labels or not column_labels:
        raise BadInputError(f"a grid of {len(row_labels)} rows x {len(column_labels)} columns; accepted: at least "
                            "one row and one column")
    widths = sorted({len(row) for row in cells})
    if len(cells) != len(row_labels) or widths != [len(column_labels)]:
        raise BadInputError(f"grid cells are {len(cells)} rows of {', '.join(map(str, widths)) or 0} images; "
                            f"accepted: {len(row_labels)} rows (one per row label) of {len(column_labels)} "
                            "(one per column label)")


def image_grid(cells: Sequence[Sequence[Image.Image | None]], row_labels: Sequence[str],
               column_labels: Sequence[str], *, cell: int = 96, title: str | None = None) -> Image.Image:
    """rows x columns of images on white, column labels on top, row labels (prompts) at the left; a None cell
    is a light gray box saying "missing", so one absent image does not hide the others."""
    _check_shape(cells, row_labels, column_labels, cell)
    image = Image.new("RGB", grid_size(len(row_labels), len(column_labels), cell, bool(title)), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(LABEL_FONT)
    top = PAD
    if title:
        title_font = _font(TITLE_FONT)
        width = image.width - 2 * PAD
        draw.text((PAD, top), wrap_text(title, title_font, width, 1)[0], fill=TEXT, font=title_font)
        top += TITLE_LINE + PAD
    left = PAD + ROW_LABEL_WIDTH + PAD
    for j, label in enumerate(column_labels):
        lines = wrap_text(label, font, cell, HEADER_LINES)
        # bottom-aligned, so every label ends just above its column however many lines it has
        first = top + (HEADER_LINES - len(lines)) * LINE
        _draw_lines(draw, lines, left + j * (cell + GAP) + cell / 2, first, anchor="ma")
    top += HEADER_LINES * LINE + GAP
    row_lines = max(1, min(MAX_ROW_LINES, cell // LINE))
    for i, (label, row) in enumerate(zip(row_labels, cells, strict=True)):
        y = top + i * (cell + GAP)
        lines = wrap_text(label, font, ROW_LABEL_WIDTH, row_lines)
        _draw_lines(draw, lines, PAD, y + (cell - len(lines) * LINE) / 2, anchor="la")
        for j, picture in enumerate(row):
            x = left + j * (cell + GAP)
            if picture is None:
                _draw_missing(draw, x, y, cell)
                continue
            fitted = _fit(picture, cell)
            image.paste(fitted, (x + (cell - fitted.width) // 2, y + (cell - fitted.height) // 2))
    return image


def check_png_path(path: str | Path) -> Path:
    """Refuse an output path that cannot take a PNG before any image is generated for it."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".png":
        raise BadInputError(f"output {path} has suffix {path.suffix or '(none)'!r}; accepted: a .png file path")
    if path.is_dir():
        raise BadInputError(f"output {path} is a folder; accepted: a .png file path (e.g. {path / 'grid.png'})")
    return path


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write atomically (temporary file, then rename), creating the folder: a reader never sees half a PNG."""
    path = check_png_path(path)
    writable_dir(path.parent, f"the image {path.name}")
    try:
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
    except OSError as exc:
        raise BadInputError(f"cannot write {path} ({exc.strerror or exc})") from exc
    return path


# -- images from an evaluate run ---------------------------------------------------------------------------------

def _stored_protocols(store, model: str) -> list[str]:
    """The model's protocols in the store, most recently generated first."""
    return store.image_protocols(model)


def _own_protocol(model: str) -> str | None:
    """The protocol evaluate uses for the model without --protocol; None when the name no longer resolves (a
    model folder that was moved away still has its images in the store)."""
    try:
        return resolve_model(model).protocol
    except RpoBenchError:
        return None


def choose_protocol(store, model: str, protocol: str | None) -> str:
    """The protocol whose images a column shows (see grid_from_store)."""
    stored = _stored_protocols(store, model)
    if not stored:
        models = store.models_with_images()
        raise BadInputError(f"results store {store.path} has no images of model {model!r}; accepted: a model it "
                            f"has images of ({', '.join(models) or 'none: run rpo-bench evaluate first'})")
    if protocol is not None:
        if protocol not in stored:
            raise BadInputError(f"results store {store.path} has no images of {model!r} under protocol "
                                f"{protocol!r}; accepted: {', '.join(sorted(stored))}")
        return protocol
    own = _own_protocol(model)
    if own in stored:
        return own
    if len(stored) == 1:
        return stored[0]
    raise BadInputError(f"results store {store.path} has images of {model!r} under protocols "
                        f"{', '.join(sorted(stored))}; choose one (protocol=...)")


def stored_images(store, cache, model: str, protocol: str, prompts: Sequence[str],
                  seed: int) -> list[Image.Image | None]:
    """Each prompt's image of (model, protocol, seed), None when the store has none or its cached file is missing
    or damaged. When the store holds several (the model's weights or dtype changed between runs), the most
    recently generated one."""
    images: list[Image.Image | None] = []
    for prompt in prompts:
        sha = store.latest_image(model, protocol, prompt, seed)
        images.append(cache.read(sha) if sha is not None else None)
    return images


def open_store_and_cache(store_path: str | Path, image_cache_path: str | Path):
    """The results store and image cache of an earlier evaluate, refusing paths that hold neither (opening them
    would create an empty store or cache and draw a grid of nothing but gray boxes)."""
    store_path, image_cache_path = Path(store_path).expanduser(), Path(image_cache_path).expanduser()
    if not store_path.is_file():
        raise BadInputError(f"results store {store_path} does not exist; accepted: the --store of an evaluate run")
    if not image_cache_path.is_dir():
        raise BadInputError(f"image cache {image_cache_path} is not a folder; accepted: the --image-cache of an "
                            "evaluate run")
    store = ResultsStore(store_path)
    try:
        return store, ImageCache(image_cache_path)
    except BaseException:
        store.close()
        raise


def grid_from_store(store_path: str | Path, image_cache_path: str | Path, models: Sequence[str],
                    prompts: Sequence[str], seed: int, protocol: str | None = None) -> Image.Image:
    """The images an evaluate run made: one row per prompt, one column per model, all of one seed.

    `models` are names as the store records them (the registry name, or the folder path evaluate was given).
    Which protocol a column shows: `protocol` when given (every model must have images under it); otherwise, as
    evaluate does without --protocol, the model's own default protocol when the store has images under it, else
    the one protocol the store has for the model; a model stored under several others is refused in one line that
    names them, because picking one silently would label a grid with the wrong sampler. An image the store or the
    cache lacks is a gray "missing" cell.
    """
    store, cache = open_store_and_cache(store_path, image_cache_path)
    try:
        columns = [(model, choose_protocol(store, model, protocol)) for model in models]
        by_column = [stored_images(store, cache, model, chosen, prompts, seed) for model, chosen in columns]
    finally:
        store.close()
        cache.close()
    cells = [[column[i] for column in by_column] for i in range(len(prompts))]
    labels = [f"{model} ({chosen})" for model, chosen in columns]
    return image_grid(cells, list(prompts), labels, title=f"seed {seed}")


def write_evaluate_grid(config, path: str | Path, rows: int = 6) -> Path:
    """The grid of an evaluated `EvaluateConfig`: its first `rows` prompts x its models at its first seed, under
    its first --protocol (or each model's own when it has none). Returns the PNG's path."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise BadInputError(f"grid rows {rows!r}; accepted: an integer >= 1")
    path = check_png_path(path)
    prompts = [p.text for p in load_prompt_set(config.prompts).prompts[:rows]]
    models = [resolve_model(name).name for name in config.models]  # the store records resolved names
    protocol = config.protocol.split(",")[0].strip() if config.protocol else None
    image = grid_from_store(config.store, config.image_cache, models, prompts, config.seeds[0], protocol)
    return save_png(image, path)
