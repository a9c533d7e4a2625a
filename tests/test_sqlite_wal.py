"""Several processes opening the same new store and caches at once (torchrun ranks do) must all succeed:
switching a file to WAL mode does not wait on SQLite's busy timeout."""

import multiprocessing

from rpo_bench.evaluation.image_cache import ImageCache
from rpo_bench.evaluation.store import ResultsStore
from rpo_bench.training.embeddings import EmbeddingCache


def _open_everything(root, barrier) -> None:
    barrier.wait()  # all processes reach the first open together
    ImageCache(root / "images")
    ResultsStore(root / "r.sqlite")
    EmbeddingCache(root / "embeddings")


def test_processes_opening_new_sqlite_files_together_all_succeed(tmp_path):
    context = multiprocessing.get_context("fork")
    for trial in range(8):
        root = tmp_path / str(trial)
        barrier = context.Barrier(4)
        processes = [context.Process(target=_open_everything, args=(root, barrier)) for _ in range(4)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=60)
        assert [process.exitcode for process in processes] == [0, 0, 0, 0], f"trial {trial}"
