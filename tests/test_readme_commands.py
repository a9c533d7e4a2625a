"""The README's commands run as written, in order, in one fresh working folder: what a newcomer pastes works.

Only commands that cannot run here are skipped, each named below with its reason; a skip whose command is no
longer in the README fails, so the list cannot hide a command that was edited. The commands share the session's
home with the other tests, as a user's commands share theirs: `demo --quick` finds tests/test_demo.py's finished
demo there and reuses it, as its own rerun does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = {
    'pip install -e ".[dev]" && rpo-bench evaluate': "CI's install step (.ci/run runs it before the suite)",
    "pytest -q": "the suite itself",
    "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu": "needs the network",
    "rpo-bench train --model sd15-base --style vangogh --method rpo --name sd15-vangogh-rpo":
        "needs SD1.5 weights and the wikiart references",
    "rpo-bench evaluate --models sd15-base,sd15-dpo --prompts pickapic-val --metrics pickscore,hpsv2 "
    "--protocol spo-ddim20": "needs SD1.5, PickScore and HPSv2 weights",
    "rpo-bench report --html --out report.html": "reports the SD1.5 evaluation above",
}


def readme_commands(text: str) -> list[str]:
    """Every command of the README's ```bash blocks, continuation lines joined and comments dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
    return commands


def test_the_readme_commands_run_as_written(tmp_path: Path) -> None:
    commands = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert not set(SKIPPED) - set(commands), f"skipped commands no longer in the README: {set(SKIPPED) - set(commands)}"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "100"}
    ran = []
    for command in commands:
        if command in SKIPPED:
            continue
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, (f"`{command}` exited {done.returncode}:\n"
                                      f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        ran.append(command)
    assert any(c.startswith("rpo-bench train") for c in ran) and any(c.startswith("rpo-bench report") for c in ran)


def test_commands_are_read_as_a_shell_would() -> None:
    text = "```bash\nrpo-bench a --x 1 \\\n    --y 2   # note\n# only a comment\n```\n```toml\nk = 1\n```\n"
    assert readme_commands(text) == ["rpo-bench a --x 1 --y 2"]
