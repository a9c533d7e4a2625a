"""The results store under concurrency: processes that open a new store together all succeed."""

from __future__ import annotations

import multiprocessing


def _open_store(path: str, barrier, results) -> None:
    from rpo_bench.evaluation.store import ResultsStore

    barrier.wait()  # all processes switch the new file to WAL at the same moment
    try:
        ResultsStore(path).record_run("run", {}, {}, None)
        results.put("ok")
    except Exception as exc:  # reported to the parent, which asserts on it
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_store_together_all_succeed(tmp_path):
    context = multiprocessing.get_context("spawn")
    for round_number in range(3):
        path = str(tmp_path / f"r{round_number}.sqlite")
        barrier, results = context.Barrier(4), context.Queue()
        processes = [context.Process(target=_open_store, args=(path, barrier, results)) for _ in range(4)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)
        assert sorted(results.get(timeout=5) for _ in processes) == ["ok"] * 4
