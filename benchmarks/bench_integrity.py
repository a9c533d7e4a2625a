"""What E9's integrity work costs: a warm re-run of `evaluate` over a large store, and atomic checkpoint writes.

E9 keys images by what they are and labels them with a `samples` row per (prompt set, model name, prompt
index); `evaluate` now also records `prompt_sets` rows, relabels images another prompt set made, and reads its
closing table through `store.scored_samples(...)`; and every file write goes through `rpo_bench/core/atomic.py`
(a temporary file, fsync, rename, fsync of the folder, and a glob for what killed writers left). Two parts,
each measured side by side in one run:

1. **Warm re-run of `evaluate`**: micro-base, protocol `micro-fast`, metric `micro-oracle`, batch size 64, on
   the first `--prompts` micro-train prompts (a .jsonl prompt file) x seeds 0..`--seeds`-1 (default 200 x 50 =
   10,000 images). The code before E9 (`--before REF`, default c1f45d9) is checked out with `git worktree add
   --detach` into the temporary home (removed at exit) and both versions run in a child process each (this
   script with `--child-evaluate`, `PYTHONPATH` = that checkout, its own `RPO_BENCH_HOME`; the child checks that
   `rpo_bench` really comes from there). The parent drives the two children line by line: a warm-up evaluate
   each (one other prompt into a store and cache of its own: imports, model loads and torch's first calls, not
   timed, so both versions start equal), one **cold** run each (fresh store and image cache: generation +
   scoring; on the CPU the two at the same time, one single-threaded process per core, so both meet the same
   phase of the shared machine (and quiet cores halve the wait); one after the other on a GPU or with fewer cores), then
   `--repeats` **warm** runs each (the identical config again: nothing generated, scored or rebuilt, every
   sample in the closing table; asserted), alternating which version goes first. Reported: warm / cold before,
   warm / cold after, warm after / warm before (medians; the paired and best / best ratios as cross-checks), and
   cold after / cold before (information: one run each; E9 also fsyncs every image it caches), and whether both
   versions produced the same mean score. Without git or the ref (a tarball), the before half is skipped with a
   note. A run killed by a timeout leaves git's record of the worktree (its folder goes with the temporary
   home): `git worktree prune` forgets it.
2. **Checkpoint saves**: `write_checkpoint` (the real code: a hidden temporary folder, safetensors weights +
   optimizer.pt + trainer_state.json each through `atomic_path`, then one rename) against a plain write of the
   same three files straight into a folder (save_file + torch.save + write_text, no temporary, no fsync), for
   micro-base's full UNet with an AdamW state after one step, and for LoRA rank 4 on its attention projections
   (`keep` large, so no old checkpoint is pruned inside the timing); then `atomic_write` against
   `Path.write_text` for a 20 kB report written as a new file, and for a 400-step train log replacing the previous
   one (the trainer rewrites its whole log through `atomic_write` after every step; on ext4 a plain write that
   truncates and rewrites a file also starts writing its data at close (auto_da_alloc), so that plain write costs
   milliseconds too). Alternating, `--save-repeats` / `--text-repeats` times each, medians; every write starts
   with nothing dirty in the page cache (an untimed `os.sync()` after each one), so a plain write's deferred
   flush is not billed to the next atomic one.

Targets. Warm after / warm before <= 1.5: the new checks are per-image SQL look-ups of the same kind the warm run
already makes (which images the store has, which are scored), so they may add about half again, not multiply it;
more would mean a look-up that scales badly (a scan or a per-row query). Warm / cold (after) <= 0.05: the promise
`bench_evaluate_cache.py` checks on tiny models, here at 10,000 images. The atomic / plain ratios are
information: an fsync costs what the disk makes it cost at that moment (0.5 to 8 ms on this virtual disk,
whatever the file's size), so a small file's ratio is large while its absolute cost (printed) is milliseconds.

One torch thread by default (`--threads 0`: torch's default), for the reason given in `bench_train_step.py`.

    .venv/bin/python benchmarks/bench_integrity.py [--prompts 200] [--seeds 50] [--repeats 5] [--before c1f45d9]
        [--save-repeats 15] [--text-repeats 100] [--threads 1] [--device cpu|cuda] [--json FILE]
"""

from __future__ import annotations

import sys

CHILD_FLAG = "--child-evaluate"
CHILD_MARK = "INTEGRITY_CHILD "


def child_evaluate(argv: list[str]) -> int:
    """One version's evaluate, driven over stdin: each `run` line runs the same evaluate once and answers one
    `INTEGRITY_CHILD {json}` line on stdout. Imports rpo_bench from PYTHONPATH (before any path of this script's
    checkout), and refuses to run when it came from elsewhere."""
    import argparse
    import json
    import os
    import time
    from pathlib import Path

    parser = argparse.ArgumentParser()
    parser.add_argument(CHILD_FLAG, action="store_true")
    for name in ("--root", "--prompts-file", "--warm-up-prompts", "--device"):
        parser.add_argument(name, required=True)
    for name in ("--seeds", "--threads", "--batch-size"):
        parser.add_argument(name, type=int, required=True)
    args = parser.parse_args(argv)

    def answer(**payload) -> None:
        print(CHILD_MARK + json.dumps(payload), flush=True)

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    import rpo_bench
    from rpo_bench.evaluation.evaluate import EvaluateConfig, evaluate

    root = Path(args.root).resolve()
    source = Path(rpo_bench.__file__).resolve()
    if root not in source.parents:
        answer(error=f"rpo_bench was imported from {source}, not from {root}")
        return 3
    home = Path(os.environ["RPO_BENCH_HOME"])
    answer(ready=True, rpo_bench=str(source), threads=torch.get_num_threads())
    for line in sys.stdin:
        command = line.strip()
        if command not in ("run", "warm-up"):
            break
        # warm-up: one other prompt into a store and cache of its own (imports, model loads, torch's first calls)
        prompts, seeds, name = ((args.prompts_file, tuple(range(args.seeds)), "") if command == "run"
                                else (args.warm_up_prompts, (0,), "warm-up-"))
        config = EvaluateConfig(models=("micro-base",), prompts=prompts, metrics=("micro-oracle",), seeds=seeds,
                                protocol="micro-fast", store=home / f"{name}results.sqlite",
                                image_cache=home / f"{name}images", device=args.device, batch_size=args.batch_size,
                                show_progress=False)
        start = time.perf_counter()
        try:
            result = evaluate(config)
        except Exception as exc:  # the parent reports it; a traceback on stderr says where
            import traceback

            traceback.print_exc()
            answer(error=f"{type(exc).__name__}: {exc}")
            return 1
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        values = [v for table in result.tables for v in table.scores.values()]
        answer(seconds=seconds, generated=result.generated, reused=result.reused, scored=sum(result.scored.values()),
               rebuilt=result.rebuilt, samples=len(values), mean=sum(values) / len(values) if values else None)
    return 0


if __name__ == "__main__" and CHILD_FLAG in sys.argv[1:]:
    raise SystemExit(child_evaluate(sys.argv[1:]))

import argparse  # noqa: E402
import atexit  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HOME = Path(tempfile.mkdtemp(prefix="rpo-bench-bench-"))
atexit.register(shutil.rmtree, HOME, ignore_errors=True)  # also when an import below fails
os.environ["RPO_BENCH_HOME"] = str(HOME)  # before importing rpo_bench: everything lands in the temp home
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `benchmarks.common` when run as a file
from benchmarks.common import add_common_options, checkout_before, positive, row, run_script  # noqa: E402
from rpo_bench.core.atomic import atomic_write  # noqa: E402
from rpo_bench.evaluation.prompts import load_prompt_set  # noqa: E402
from rpo_bench.training.checkpoint import (  # noqa: E402
    CHECKPOINT_FORMAT,
    OPTIMIZER_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    write_checkpoint,
)

DEFAULT_BEFORE = "c1f45d9"  # the commit E9 was implemented on
WARM_TARGET = 1.5  # warm after / warm before
CACHE_TARGET = 0.05  # warm / cold, as bench_evaluate_cache.py
VERSIONS = ("after", "before")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200, help="first N micro-train prompts (216 in all)")
    parser.add_argument("--seeds", type=int, default=50, help="seeds 0..N-1 per prompt (images = prompts x seeds)")
    parser.add_argument("--repeats", type=int, default=5, help="warm runs per version (medians)")
    parser.add_argument("--before", default=DEFAULT_BEFORE,
                        help="git ref of the code before E9 (empty: measure the current code only)")
    parser.add_argument("--save-repeats", type=int, default=15, help="checkpoint saves per variant and size")
    parser.add_argument("--text-repeats", type=int, default=100, help="text writes per variant and size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the evaluate children (0: default)")
    add_common_options(parser)
    return parser


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    return ", ".join(f"{v * scale:.{digits}f}" for v in values)


# -- 1. evaluate: warm re-run, before and after ----------------------------------------------------------------
def prompt_file(first: int, path: Path, skip: int = 0) -> Path:
    """micro-train prompts [skip, skip + first) as a .jsonl prompt file (text and category)."""
    prompts = load_prompt_set("micro-train").prompts[skip:skip + first]
    path.write_text("".join(json.dumps({"prompt": p.text, "category": p.category}) + "\n" for p in prompts),
                    encoding="utf-8")
    return path


class Child:
    """One version's evaluate process; `run()` times one evaluate in it."""

    def __init__(self, version: str, root: Path, prompts: Path, args: argparse.Namespace):
        self.version = version
        home = HOME / f"home-{version}"
        home.mkdir()
        env = {**os.environ, "RPO_BENCH_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
        command = [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, "--root", str(root),
                   "--prompts-file", str(prompts), "--warm-up-prompts", str(HOME / "warm-up.jsonl"),
                   "--device", args.device, "--seeds", str(args.seeds), "--threads", str(args.threads),
                   "--batch-size", "64"]
        self.process = subprocess.Popen(command, cwd=HOME, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1)
        self.ready = self._read()

    def _read(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(CHILD_MARK):
                payload = json.loads(line[len(CHILD_MARK):])
                if "error" in payload:
                    raise RuntimeError(f"{self.version}: {payload['error']}")
                return payload
            print(f"  [{self.version}] {line.rstrip()}", file=sys.stderr)
        raise RuntimeError(f"{self.version}: the evaluate process ended (exit {self.process.wait()}); see above")

    def send(self, command: str) -> None:
        try:
            self.process.stdin.write(f"{command}\n")
            self.process.stdin.flush()
        except OSError:  # it has ended: receive() says so
            pass

    def receive(self) -> dict:
        return self._read()

    def run(self, command: str = "run") -> dict:
        self.send(command)
        return self.receive()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def evaluate_rows(args: argparse.Namespace) -> list[dict]:
    images = args.prompts * args.seeds
    prompts = prompt_file(args.prompts, HOME / "prompts.jsonl")
    prompt_file(1, HOME / "warm-up.jsonl", skip=args.prompts % len(load_prompt_set("micro-train").prompts))
    roots = {"after": ROOT}
    before_note, remove_tree = "--before is empty", lambda: None
    if args.before:
        tree, before_note, remove_tree = checkout_before(args.before, HOME / "before-tree")
        if tree is not None:
            roots["before"] = tree
            print(f"before E9: {args.before} = {before_note[:12]}, checked out in {tree}")
    if "before" not in roots:
        print(f"note: before E9 not measured ({before_note}); the current code only")
    children: dict[str, Child] = {}
    try:
        for version, root in roots.items():
            try:
                children[version] = Child(version, root, prompts, args)
                print(f"{version}: rpo_bench from {children[version].ready['rpo_bench']}, "
                      f"torch threads {children[version].ready['threads']}")
            except RuntimeError as exc:
                if version == "after":
                    raise
                before_note = f"its evaluate process failed to start: {exc}"
                print(f"note: before E9 not measured ({before_note})")
        versions = [v for v in VERSIONS if v in children]
        cold: dict[str, dict] = {}
        warm: dict[str, list[float]] = {v: [] for v in versions}
        # On the CPU, with a core per child, the two cold runs run at the same time, one core each: the same phase
        # of the shared machine for both, and half the wait. Otherwise (a GPU, or too few cores) one after the other.
        together = (len(versions) > 1 and args.device == "cpu" and args.threads >= 1
                    and (os.cpu_count() or 1) >= args.threads * len(versions))
        print(f"cold runs: {'at the same time, one process per core' if together else 'one after the other'}")
        groups = [versions] if together else [[v] for v in versions]
        for command in ("warm-up", "run"):
            for group in groups:
                start = time.perf_counter()
                for version in group:
                    children[version].send(command)
                for version in list(group):
                    try:
                        answer = children[version].receive()
                    except RuntimeError as exc:
                        if version == "after":
                            raise
                        before_note = f"its {command} evaluate failed: {exc}"
                        print(f"note: before E9 not measured ({before_note})")
                        children.pop(version).close()
                        group.remove(version)
                        continue
                    if command == "warm-up":
                        print(f"{version}: warm-up evaluate (1 other prompt, own store and cache; excluded): "
                              f"{time.perf_counter() - start:.1f} s")
                        continue
                    cold[version] = answer
                    assert answer["generated"] == images and answer["samples"] == images, f"{version} cold: {answer}"
                    print(f"{version}: cold run {answer['seconds']:.1f} s ({images} images generated and scored, "
                          f"{images / answer['seconds']:.1f} images/s; mean micro-oracle {answer['mean']:.6f})")
        versions = [v for v in VERSIONS if v in cold]
        for i in range(args.repeats):
            for version in versions if i % 2 == 0 else versions[::-1]:
                w = children[version].run()
                redone = w["generated"] or w["scored"] or w["rebuilt"]
                assert not redone, f"{version} warm run redid work: {w}"
                assert w["samples"] == images, f"{version} warm run's table lost samples: {w}"
                warm[version].append(w["seconds"])
    finally:
        for child in children.values():
            child.close()
        remove_tree()

    med = {v: median(warm[v]) for v in versions}
    for v in versions:
        print(f"{v}: warm re-run, median of {len(warm[v])}: {med[v]:.3f} s (all: {fmt(warm[v])}); "
              f"warm / cold = {med[v] / cold[v]['seconds']:.4f}")
    size = f"micro-base, micro-fast, {args.prompts} prompts x {args.seeds} seeds = {images:,} images"
    runs = f"warm: medians of {args.repeats}; cold: one run each"
    after_ratio = med["after"] / cold["after"]["seconds"]
    verdict = "ok" if after_ratio <= CACHE_TARGET else "MISSED"
    print(f"warm / cold after E9 = {after_ratio:.4f} (target <= {CACHE_TARGET})  {verdict}")
    rows = [row(f"evaluate warm re-run / cold run, after E9 ({size})", after_ratio, "ratio", after_ratio,
                f"<= {CACHE_TARGET}", warm_s=med["after"], cold_s=cold["after"]["seconds"], warm_all_s=warm["after"],
                runs=runs, device=args.device, threads=args.threads)]
    if "before" not in versions:
        rows.append(row(f"evaluate warm re-run before E9: not measured ({before_note})", None, "ratio"))
        return rows
    before_ratio = med["before"] / cold["before"]["seconds"]
    warm_ratio = med["after"] / med["before"]
    paired = median([a / b for a, b in zip(warm["after"], warm["before"], strict=True)])
    cold_ratio = cold["after"]["seconds"] / cold["before"]["seconds"]
    same = cold["after"]["mean"] == cold["before"]["mean"]
    verdict = "ok" if warm_ratio <= WARM_TARGET else "MISSED"
    print(f"warm / cold before E9 ({args.before}) = {before_ratio:.4f}")
    print(f"warm re-run after / before E9 = {warm_ratio:.3f} (target <= {WARM_TARGET})  {verdict}  "
          f"[median of paired ratios: {paired:.3f}; best / best: {min(warm['after']) / min(warm['before']):.3f}]")
    print(f"cold run after / before E9 = {cold_ratio:.3f} (information: one run each)")
    print(f"same scores before and after: {'yes' if same else 'NO'} (mean micro-oracle {cold['after']['mean']:.6f} "
          f"vs {cold['before']['mean']:.6f})")
    rows += [
        row(f"evaluate warm re-run / cold run, before E9 ({args.before}, same size)", before_ratio, "ratio",
            warm_s=med["before"], cold_s=cold["before"]["seconds"], warm_all_s=warm["before"], runs=runs),
        row(f"evaluate warm re-run after / before E9 ({med['after']:.2f} / {med['before']:.2f} s, {images:,} images)",
            warm_ratio, "ratio", warm_ratio, f"<= {WARM_TARGET}", paired=paired, before_ref=args.before,
            best_over_best=min(warm["after"]) / min(warm["before"]), same_scores=same),
        row(f"evaluate cold run after / before E9 ({cold['after']['seconds']:.0f} / {cold['before']['seconds']:.0f} s, "
            "one run each)", cold_ratio, "ratio", after_s=cold["after"]["seconds"],
            before_s=cold["before"]["seconds"]),
    ]
    return rows


# -- 2. checkpoint saves and text writes ---------------------------------------------------------------------
def checkpoint_inputs() -> dict[str, tuple[dict, dict, dict]]:
    """name -> (state, weights, optimizer state dict) as the trainer passes them, for full and LoRA micro-base."""
    import copy
    from types import SimpleNamespace

    from rpo_bench.models.catalog import resolve_model
    from rpo_bench.models.loader import load_pipeline
    from rpo_bench.training.unet_setup import add_lora

    unet = load_pipeline(resolve_model("micro-base"), device="cpu", dtype=torch.float32).unet
    lora = copy.deepcopy(unet).requires_grad_(False)
    add_lora(lora, SimpleNamespace(lora_rank=4, lora_alpha=0.0, lora_targets="to_q,to_k,to_v,to_out.0"))
    unet.requires_grad_(True)
    found = {}
    for name, module in (("micro-base full UNet", unet), ("micro-base LoRA r4", lora)):
        parameters = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=1e-5, weight_decay=1e-2)
        generator = torch.Generator().manual_seed(0)
        for p in parameters:
            p.grad = torch.randn(p.shape, generator=generator) * 1e-3
        optimizer.step()  # AdamW's exp_avg and exp_avg_sq exist from the first step
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        state = {"step": 100, "config": {"model": "micro-base", "method": "rpo", "lr": 1e-5, "steps": 400,
                                         "lora_rank": 4 if "LoRA" in name else 0, "output": str(HOME / "out")},
                 "data": "0" * 64, "lr_scheduler": scheduler.state_dict(), "grad_scaler": None}
        weights = {n: p for n, p in module.named_parameters() if p.requires_grad}
        found[name] = (state, weights, optimizer.state_dict())
    return found


def plain_save(folder: Path, state: dict, weights: dict, optimizer_state: dict) -> None:
    """The same three files written straight into their folder: no temporary, no fsync, no rename."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in weights.items()}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    torch.save(optimizer_state, folder / OPTIMIZER_FILE)
    (folder / STATE_FILE).write_text(json.dumps({"format": CHECKPOINT_FORMAT, **state}, indent=1), encoding="utf-8")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def alternate(variants: dict, repeats: int, clean) -> dict[str, list[float]]:
    """Each variant `repeats` times, the order flipping every round; `clean(name, i)` (untimed) after each."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            variants[name](i)
            times[name].append(time.perf_counter() - start)
            clean(name, i)
            os.sync()  # nothing dirty left for the next write's fsync to flush
    return times


def checkpoint_row(name: str, state: dict, weights: dict, optimizer_state: dict, repeats: int) -> dict:
    parent, plain_parent = HOME / "saves" / "checkpoints", HOME / "saves" / "plain"
    parent.mkdir(parents=True, exist_ok=True)
    plain_parent.mkdir(parents=True, exist_ok=True)
    write_checkpoint(parent / "step-0", state, weights, optimizer_state, keep=10**6)  # warm-up, untimed
    size = folder_bytes(parent / "step-0")
    shutil.rmtree(parent / "step-0")
    # keep: nothing pruned inside the timing (pruning an old checkpoint is not the write's cost)
    variants = {"atomic": lambda i: write_checkpoint(parent / f"step-{i + 1}", state, weights, optimizer_state,
                                                     keep=10**6),
                "plain": lambda i: plain_save(plain_parent / f"step-{i + 1}", state, weights, optimizer_state)}
    times = alternate(variants, repeats, lambda variant, i: shutil.rmtree(
        (parent if variant == "atomic" else plain_parent) / f"step-{i + 1}"))
    med = {k: median(v) for k, v in times.items()}
    ratio = med["atomic"] / med["plain"]
    paired = median([a / p for a, p in zip(times["atomic"], times["plain"], strict=True)])
    print(f"checkpoint save, {name} ({size / 2**20:.2f} MiB): write_checkpoint {med['atomic'] * 1e3:.1f} ms, plain "
          f"{med['plain'] * 1e3:.1f} ms (medians of {repeats}); atomic / plain = {ratio:.2f} "
          f"[paired {paired:.2f}; overhead {(med['atomic'] - med['plain']) * 1e3:.1f} ms a save]")
    print(f"  atomic all (ms): {fmt(times['atomic'], 1e3, 1)}\n  plain all (ms): {fmt(times['plain'], 1e3, 1)}")
    return row(f"checkpoint save {name} ({size / 2**20:.2f} MiB): write_checkpoint / plain write "
               f"({med['atomic'] * 1e3:.1f} / {med['plain'] * 1e3:.1f} ms)", ratio, "ratio",
               atomic_s=med["atomic"], plain_s=med["plain"], paired=paired, bytes=size,
               atomic_all_s=times["atomic"], plain_all_s=times["plain"],
               runs=f"medians of {repeats}, alternating, os.sync() between writes")


def checkpoint_rows(args: argparse.Namespace) -> list[dict]:
    start = time.perf_counter()
    inputs = checkpoint_inputs()
    print(f"checkpoint inputs built in {time.perf_counter() - start:.1f} s (micro-base loaded, AdamW stepped once)")
    fs = subprocess.run(["df", "-T", str(HOME)], capture_output=True, text=True).stdout.splitlines()[-1:]
    print(f"writes go to {HOME} ({' '.join(fs[0].split()[:2]) if fs else 'file system unknown'})")
    return [checkpoint_row(name, *values, args.save_repeats) for name, values in inputs.items()]


def log_text(steps: int) -> str:
    record = {"step": 0, "loss": 0.6931, "lr": 1e-5, "grad_norm": 0.123, "implicit_acc": 0.5, "reward_margin": 0.01,
              "model_err_w": 0.1, "model_err_l": 0.1, "ref_err_w": 0.1, "ref_err_l": 0.1, "weight_mean": 0.5,
              "weight_max": 0.9, "seconds": 0.25}
    return "".join(json.dumps({**record, "step": i + 1}) + "\n" for i in range(steps))


def text_row(name: str, text: str, folder: Path, repeats: int, replace: bool) -> dict:
    """`replace`: each write replaces the file the previous one left (as the trainer rewrites its log); otherwise
    each write makes a new file (a first report), removed untimed afterwards."""
    def target(variant: str, i: int) -> Path:
        return folder / (f"{variant}.txt" if replace else f"{variant}-{i}.txt")

    if replace:
        atomic_write(target("atomic_write", 0), text)
        target("write_text", 0).write_text(text, encoding="utf-8")
        os.sync()
    times = alternate({"atomic_write": lambda i: atomic_write(target("atomic_write", i), text),
                       "write_text": lambda i: target("write_text", i).write_text(text, encoding="utf-8")},
                      repeats, lambda variant, i: None if replace else target(variant, i).unlink())
    med = {k: median(v) for k, v in times.items()}
    ratio = med["atomic_write"] / med["write_text"]
    size = len(text.encode())
    how = "replacing the file" if replace else "new file"
    print(f"text write, {name} ({size / 1e3:.0f} kB, {how}): atomic_write {med['atomic_write'] * 1e3:.2f} ms, "
          f"write_text {med['write_text'] * 1e3:.3f} ms (medians of {repeats}); atomic_write / write_text = "
          f"{ratio:.1f}")
    for path in folder.iterdir():
        path.unlink()
    return row(f"text write {name} ({size / 1e3:.0f} kB, {how}): atomic_write / Path.write_text "
               f"({med['atomic_write'] * 1e3:.2f} / {med['write_text'] * 1e3:.3f} ms)", ratio, "ratio",
               atomic_s=med["atomic_write"], plain_s=med["write_text"], bytes=size,
               atomic_all_s=times["atomic_write"], plain_all_s=times["write_text"],
               runs=f"medians of {repeats}, alternating, os.sync() between writes")


def text_rows(args: argparse.Namespace) -> list[dict]:
    report = "\n".join(f"| micro-base | micro-oracle | prompt {i} | {0.5 + i / 1e4:.4f} | [0.49, 0.51] |"
                       for i in range(400))[:20_000]
    folder = HOME / "texts"
    folder.mkdir()
    return [text_row("a report", report, folder, args.text_repeats, replace=False),
            text_row("the train log at step 400", log_text(400), folder, args.text_repeats, replace=True)]


def main(args: argparse.Namespace) -> list[dict]:
    from rpo_bench.core.errors import BadInputError

    for name in ("--prompts", "--seeds", "--repeats", "--save-repeats", "--text-repeats"):
        positive(name, getattr(args, name[2:].replace("-", "_")))
    available = len(load_prompt_set("micro-train").prompts)
    if args.prompts > available:
        raise BadInputError(f"--prompts {args.prompts}: micro-train has {available} prompts; accepted: 1 to "
                            f"{available}")
    print(f"home: {HOME}  device: {args.device}  cpus: {os.cpu_count()}  evaluate threads: {args.threads or 'default'}")
    start = time.perf_counter()
    rows = evaluate_rows(args)
    print(f"evaluate part: {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    rows += checkpoint_rows(args) + text_rows(args)
    print(f"write part: {time.perf_counter() - start:.0f} s")
    return rows


if __name__ == "__main__":
    try:
        raise SystemExit(run_script(main, parser()))
    finally:
        shutil.rmtree(HOME, ignore_errors=True)
