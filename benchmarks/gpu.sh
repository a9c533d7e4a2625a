#!/usr/bin/env bash
# The whole GPU benchmark in one call, within a stated time budget: under 8 minutes on one large GPU (expected
# about 5 on an H200). Every benchmark runs with --device cuda in fp16, with the full-size architectures and
# random weights: generation images/s at 512 px (SD1.5) and 1024 px (SDXL), DPO and RPO step time and peak
# memory (LoRA and full, SD1.5 at 512 px), scorer throughput at full size, and the evaluate-cache ratio.
#
# It installs nothing and downloads nothing: it assumes `pip install -e .` was run in the active Python (or
# set PYTHON=/path/to/python). The runner gives each benchmark its own timeout, cut to what is left of
# BUDGET (seconds, default 450), so the run ends in time even if one benchmark hangs; a benchmark that runs out
# of time is reported as such and the others' results are kept. Results: benchmarks/results/cuda-<UTC>.json and
# benchmarks/results/cuda-latest.json. Extra options go to `python -m benchmarks` (e.g. --quick, --only scorers).
#
#     bash benchmarks/gpu.sh [--quick] [--only NAME,...]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
BUDGET="${BUDGET:-450}"
# The outer timeout is a safety net only: the runner's --budget stops benchmarks first.
exec timeout --kill-after=15 "$((BUDGET + 30))" "${PYTHON:-python}" -m benchmarks --device cuda --budget "$BUDGET" "$@"
