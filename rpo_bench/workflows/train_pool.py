"""Several training runs at once, one process per core, for `micro compare --jobs N` and `leaderboard update`.

Micro-world runs are small: one torch thread is their fastest setting, so two cores train two runs in about the
time of one. Each run trains in a spawned process (never forked: a fork copies locks that another thread may
hold) on exactly one torch thread, so its weights are the bytes a one-thread run in the main process would give
(tests/test_train_pool.py), and a run interrupted here resumes from its checkpoint like any other.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from pathlib import Path

from rpo_bench.core.progress import progress_bar

RUN_THREADS = 1


def _train_one(config) -> str:
    import torch  # noqa: PLC0415 - loads in the spawned process only

    from rpo_bench.training.checkpoint import latest_checkpoint  # noqa: PLC0415 - loads torch: in the child
    from rpo_bench.training.trainer import train  # noqa: PLC0415 - loads torch: in the child

    torch.set_num_threads(RUN_THREADS)
    output = Path(config.output)
    train(config, resume=latest_checkpoint(output) is not None, show_progress=False)
    return str(output)


def train_in_processes(configs: Sequence, jobs: int, show_progress: bool = True) -> None:
    """Train every config, `jobs` at a time; the first failure ends the others at once and is raised here (each
    finished run is kept, and an unfinished one resumes from its last checkpoint on the next call)."""
    pool = multiprocessing.get_context("spawn").Pool(min(jobs, len(configs)))
    try:
        with progress_bar(f"training {len(configs)} runs, {jobs} at a time", len(configs), show_progress) as advance:
            for _ in pool.imap_unordered(_train_one, configs):
                advance(1)
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()
