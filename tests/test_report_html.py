"""`rpo-bench report` as HTML: the same table cells as the markdown report, every store text escaped, one
self-contained file (inline PNGs only, no external URL), deterministic charts, the image grid, and a real render
in headless Chromium."""

from __future__ import annotations

import base64
import copy
import html
import io
import json
import shutil
import sqlite3
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate
from rpo_bench.reporting.cells import mean_text
from rpo_bench.reporting.html import render_html
from rpo_bench.reporting.markdown import render_markdown
from rpo_bench.reporting.plots import BASELINE_COLOUR, interval_bars_png
from rpo_bench.reporting.report import build_report

MODELS = ("tiny-sd15", "tiny-sd15-alt")
EVIL = "evil<script>alert(1)</script>"  # the second model, renamed in the store: names are anyone's text
PROMPTS = [("a red apple on a table", "seen"), ("a cat on a windowsill", "unseen"), ("a bowl of ramen", "seen")]
PNG_SRC = "data:image/png;base64,"


@pytest.fixture(scope="module")
def store(tmp_path_factory, session_home) -> tuple[Path, Path]:
    """(store, image cache) of two tiny models x 3 prompts x 2 seeds under protocol tiny, scored by tiny-clip;
    the second model renamed to EVIL in images and scores."""
    root = tmp_path_factory.mktemp("report-html")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "category": c}) + "\n" for p, c in PROMPTS), encoding="utf-8")
    path, cache = root / "r.sqlite", root / "images"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("RPO_BENCH_HOME", str(session_home))
        evaluate(EvaluateConfig(models=MODELS, prompts=str(prompts), metrics=("tiny-clip",), seeds=(0, 1),
                                protocol="tiny", store=path, image_cache=cache, show_progress=False))
    db = sqlite3.connect(path)
    db.execute("UPDATE samples SET model = ? WHERE model = ?", (EVIL, MODELS[1]))
    db.commit()
    db.close()
    return path, cache


@pytest.fixture(scope="module")
def report(store):
    return build_report(store[0], baseline=MODELS[0], by="category")


@pytest.fixture(scope="module")
def page(report, store) -> str:
    return render_html(report, image_cache=store[1])


class _Page(HTMLParser):
    """The tables (rows of cell texts, unescaped) and the <img> sources of a page; the image grid's tables (class
    "grid") apart from the results tables."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.grids: list[list[list[str]]] = []
        self.images: list[str] = []
        self.grid_images: list[str] = []
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._in_grid = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._in_grid = "grid" in (dict(attrs).get("class") or "").split()
            self._table = []
            (self.grids if self._in_grid else self.tables).append(self._table)
        elif tag == "tr":
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            (self.grid_images if self._in_grid else self.images).append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._table[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._in_grid = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(text: str) -> _Page:
    parsed = _Page()
    parsed.feed(text)
    parsed.close()
    return parsed


def _markdown_tables(text: str) -> list[list[list[str]]]:
    """Every markdown table as rows of cells as a renderer shows them (HTML entities decoded), header included, the
    |:---| line left out."""
    tables: list[list[list[str]]] = []
    previous = ""
    for line in text.splitlines():
        if line.startswith("| "):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append([html.unescape(c.strip()) for c in line.strip().strip("|").split(" | ")])
        previous = line
    return tables


def _pngs(sources: list[str]) -> list[Image.Image]:
    images = []
    for source in sources:
        with Image.open(io.BytesIO(base64.b64decode(source[len(PNG_SRC):], validate=True))) as image:
            assert image.format == "PNG"
            images.append(image.convert("RGB"))
    return images


def _colours(image: Image.Image) -> set[tuple[int, int, int]]:
    rgb = image.convert("RGB")
    return {colour for _count, colour in rgb.getcolors(maxcolors=rgb.width * rgb.height)}


def test_tables_hold_the_markdown_cells_and_store_text_is_escaped(report, page):
    tables = _parse(page).tables
    assert tables == _markdown_tables(render_markdown(report))  # cell for cell, headers included
    assert len(tables) == 3  # all prompts, category seen, category unseen
    for section in report.sections:
        for _category, rows in section.tables():
            for row in rows:
                assert f'<td class="num">{mean_text(row)}</td>' in page
    assert html.escape(EVIL) in page
    assert "<script" not in page.lower()
    assert {row[0] for row in tables[0][1:]} == {MODELS[0], EVIL}


def test_reported_values_are_a_table_of_their_own(report, store):
    from rpo_bench.reporting.published import ReportedValue

    with_reported = copy.deepcopy(report)
    with_reported.sections[0].reported = [ReportedValue("paper <i>model</i>", 0.25, "a & b 2024", "")]
    page = render_html(with_reported, image_cache=store[1])
    tables = _parse(page).tables
    assert tables == _markdown_tables(render_markdown(with_reported))
    assert tables[-1] == [["model (reported)", "value", "source"], ["paper <i>model</i>", "0.25", "a & b 2024"]]
    assert "paper &lt;i&gt;model&lt;/i&gt;" in page and "a &amp; b 2024" in page


def test_the_page_is_self_contained_with_one_chart_per_table_and_the_image_grid(report, page):
    assert 'src="http' not in page and 'href="http' not in page and "<link" not in page and "url(" not in page
    parsed = _parse(page)
    assert parsed.images and all(source.startswith(PNG_SRC) for source in parsed.images + parsed.grid_images)
    charts = _pngs(parsed.images)
    assert len(charts) == 3  # one differences chart per table: all prompts, category seen, category unseen
    for chart in charts:  # 6 x (0.4 x 1 compared model + 1.1) inches at 100 dpi
        assert chart.size == (600, 150)
    (grid,) = parsed.grids
    assert grid[0] == ["prompt", MODELS[0], EVIL]  # every compared model, as text
    assert [row[0] for row in grid[1:]] == [p for p, _c in PROMPTS]
    cells = _pngs(parsed.grid_images)
    assert len(cells) == len(PROMPTS) * len(MODELS)
    assert all(len(_colours(cell)) > 20 for cell in cells)  # real pictures, not blank cells


def test_without_cached_images_the_grid_section_says_so(report, tmp_path):
    page = render_html(report, image_cache=tmp_path / "no-cache")
    assert "no images are cached" in page
    parsed = _parse(page)
    assert len(parsed.images) == 3 and not parsed.grids  # the charts only


def test_bar_chart_is_deterministic_and_marks_the_baseline(report):
    section = report.sections[0]
    rows = section.tables()[0][1]
    first = interval_bars_png(rows, section.baseline, section.title)
    assert first == interval_bars_png(rows, section.baseline, section.title)
    colour = tuple(int(BASELINE_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
    assert colour in _colours(Image.open(io.BytesIO(first)))
    assert colour not in _colours(Image.open(io.BytesIO(interval_bars_png(rows, None, "x"))))


def _chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    # a fresh profile and no background traffic: the render must not depend on (or reach) anything but the file
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_headless_chromium_renders_the_page(report, page, tmp_path):
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    shot = tmp_path / "shot.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1200,1600", path.as_uri(), profile=tmp_path / "p1")
    assert shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = image.convert("RGB")
    colours = pixels.getcolors(maxcolors=pixels.width * pixels.height)
    most_common = max(count for count, _colour in colours)
    assert most_common < 0.99 * pixels.width * pixels.height  # more than 1% of the page is not background
    assert any(low != high for low, high in pixels.getextrema())
    dom = _chromium("--dump-dom", path.as_uri(), profile=tmp_path / "p2")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = report.sections[0].tables()[0][1]
    assert MODELS[0] in dom.stdout and html.escape(EVIL, quote=False) in dom.stdout
    assert mean_text(rows[0]) in dom.stdout and "<script" not in dom.stdout.lower()
