"""The build's VAE stage, in the build's own process or in a second one beside the judge and CLIP stages.

The VAE does not depend on the judge or the CLIP, and on the 2-core machine it is the longest of the three
(about 27 minutes against 7 and 10 on one core), so `micro build --jobs 2` trains it in a second process while the
first trains the other two: the stages before the base take the VAE's time instead of all three's. Each process
runs one thread, and the VAE's weights are the same bytes wherever it was trained (tests/test_micro_build.py).
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
from pathlib import Path

import torch

from rpo_bench.core.progress import silence_library_progress
from rpo_bench.micro.vae_train import train_micro_vae
from rpo_bench.micro.world import WorldRecipe


def train_vae_stage(tmp: Path, seed: int, steps: int, recipe: WorldRecipe, show_progress: bool) -> dict:
    """Train the recipe's VAE into `tmp` (the stage's temporary folder) and return its report. Kept in fp32 until
    the base stage has encoded its latents with it, so that a resumed build makes the same bytes."""
    vae, report = train_micro_vae(seed=seed, steps=steps, show_progress=show_progress, mix=recipe.vae_mix,
                                  downsampling=recipe.vae_downsampling, perceptual_weight=recipe.vae_perceptual,
                                  adversarial_weight=recipe.vae_adversarial, chroma_weight=recipe.vae_chroma,
                                  vivid_chroma_weight=recipe.vae_vivid_chroma, kl_weight=recipe.vae_kl)
    # atomic: `tmp` is the stage's temporary folder (build._stage, or the second process's), renamed as a whole
    vae.save_pretrained(tmp)
    return report


def _in_second_process(folder: str, seed: int, steps: int, recipe: WorldRecipe, threads: int) -> dict:
    torch.set_num_threads(threads)
    silence_library_progress()
    return train_vae_stage(Path(folder), seed, steps, recipe, show_progress=False)  # one progress display: the first


class VaeStageBeside:
    """The VAE stage started in a spawned process now; `collect` waits for it and hands its folder to the stage."""

    def __init__(self, out: Path, seed: int, steps: int, recipe: WorldRecipe, threads: int):
        self.began = time.perf_counter()
        self.folder = out / ".micro-vae.beside"
        if self.folder.exists():  # left by an interrupted build
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self.pool = multiprocessing.get_context("spawn").Pool(1)
        self.result = self.pool.apply_async(_in_second_process, (str(self.folder), seed, steps, recipe, threads))

    def collect(self, tmp: Path) -> dict:
        """The stage's build function (build._stage): the second process's report, its folder moved to `tmp`."""
        try:
            report = self.result.get()
        except BaseException:
            self.stop()
            raise
        self.pool.close()
        self.pool.join()
        shutil.rmtree(tmp)
        self.folder.rename(tmp)
        return report

    def stop(self) -> None:
        """The first process failed or was interrupted: end the second at once instead of waiting for it."""
        self.pool.terminate()
        self.pool.join()
        shutil.rmtree(self.folder, ignore_errors=True)
