"""`rpo-bench micro check`: the world's quality card is complete, measured (not copied from the build), the same
for the same seed, and refuses bad input in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rpo_bench.micro.render import render_batch
from rpo_bench.micro.scenes import CONTENT_ATTRIBUTES, STYLES, sample_scenes
from rpo_bench.style.registry import STYLES as STYLE_REGISTRY

N = 10


@pytest.fixture(scope="module")
def card_and_json(tmp_path_factory, session_home):
    """The card of micro-base through the function, and through the command line's --json with a style-trained
    run (2 SFT steps on 20 micro sketch renders, a user style) as --model; same seed."""
    from typer.testing import CliRunner

    from rpo_bench.cli import main
    from rpo_bench.cli.app import app
    from rpo_bench.workflows.micro_check import micro_check

    tmp_path = tmp_path_factory.mktemp("micro-check")
    home = tmp_path / "home"
    home.mkdir()
    (session_home / "models").mkdir(exist_ok=True)
    (home / "models").symlink_to(session_home / "models", target_is_directory=True)
    (home / "registry.toml").write_text(
        '[styles.mini-sketch]\nmicro = "sketch"\nprompts = "micro-style-sketch"\nbase_model = "micro-base"\n'
        'embedding = "micro-clip"\nreferences = 20\njudges = ["micro-style:sketch"]\ncsd = false\n',
        encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RPO_BENCH_HOME", str(home))
        STYLE_REGISTRY.reset_plugins()
        try:
            run = tmp_path / "run"
            assert main(["train", "--style", "mini-sketch", "--method", "sft", "--output", str(run), "--steps", "2",
                         "--pairs-per-device", "2", "--heldout-pairs", "0", "--quiet", "--device", "cpu"]) == 0
            direct = micro_check(seed=11, n=N, show_progress=False)
            result = CliRunner().invoke(app, ["micro", "check", "--seed", "11", "--n", str(N), "--json", "--model",
                                              str(run)])
        finally:
            STYLE_REGISTRY.reset_plugins()
    assert result.exit_code == 0, result.output
    return direct, json.loads(result.stdout), run  # stdout is the card alone: it pipes into a JSON reader


def test_card_has_the_documented_keys_and_plausible_values(card_and_json):
    card = card_and_json[0]
    for style in STYLES:
        assert 0.0 <= card["vae"][style]["style"] <= 1.0
        assert card["vae"][style]["render_style"] > 0.9  # the judge reads fresh renders: the check's own floor
        assert set(card["vae"][style]["content"]) == set(CONTENT_ATTRIBUTES)
        # the judge reads the renders' own content: the ceiling that the reconstructions' accuracy is read against
        assert min(card["vae"][style]["render_content"].values()) > 0.9
    assert 0.0 < card["base"]["recognisable"] <= 1.0
    assert card["base"]["recognisable"] == min(card["base"]["recognisable_by_attribute"].values())
    assert card["base"]["background_noise"] > 0.0  # micro-base is no renderer: its backgrounds vary a little
    for split in ("micro-train", "micro-test"):
        assert 0.0 <= card["base"]["micro_oracle"][split]["overall"] <= 1.0
    assert set(card["base"]["style"]) == set(STYLES) - {"plain"}
    for row in card["base"]["style"].values():  # a share above 0.5 bounds the mean and is bounded by it (p <= 1)
        assert (row["unasked"] - 0.5) / 0.5 - 1e-3 <= row["unasked_share"] <= row["unasked"] / 0.5 + 1e-3
    room = card["room"]
    assert room["losers_mean"] <= room["base_mean"] <= room["winners_mean"]  # top against bottom of each prompt
    assert room["winners_minus_base"] == pytest.approx(room["winners_mean"] - room["base_mean"], abs=1e-4)
    assert card["vae"]["psnr_db"] > 10
    assert card["build"]["world"] >= 1 and "micro-base" in card["build"]["wall_seconds"]


def test_same_seed_same_card(card_and_json):
    direct, from_cli, _ = card_and_json
    direct, from_cli = dict(direct), dict(from_cli)
    direct.pop("wall_seconds"), from_cli.pop("wall_seconds"), from_cli.pop("probe")
    assert json.loads(json.dumps(direct)) == from_cli  # --model adds the probe and changes nothing else


def test_probe_against_the_judge_on_a_style_trained_model(card_and_json):
    """--model adds the probe's agreement and ceiling for the style its run record names."""
    probe = card_and_json[1]["probe"]["sketch"]
    assert probe["style"] == "mini-sketch" and probe["images"] == 4 * N  # base and model, 2n prompts each
    assert 0.0 <= probe["agreement"] <= 1.0 and 0.0 <= probe["ceiling"] <= 1.0


def test_another_seed_draws_other_renders_and_prompts():
    from rpo_bench.micro.judge import MicroJudge
    from rpo_bench.workflows.micro_check import _Sampler, vae_card

    vae = _Sampler("micro-base").pipe.vae
    judge = MicroJudge.load()
    assert vae_card(vae, judge, N, 1) != vae_card(vae, judge, N, 2)


@pytest.mark.parametrize(("args", "fragment"), [
    (["--n", "5"], "--n 5; accepted: an integer >= 10"),
    (["--seed", "-1"], "--seed -1; accepted: an integer from 0"),
])
def test_bad_input_is_one_line_naming_the_value(args, fragment, capsys):
    from rpo_bench.cli import main

    assert main(["micro", "check", *args]) != 0
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_model_without_a_recorded_style_needs_style(tmp_path, capsys):
    from rpo_bench.cli import main

    assert main(["micro", "check", "--n", str(N), "--model", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "no style recorded for it" in err and "Traceback" not in err


def test_a_trained_run_records_the_world_of_its_base(card_and_json):
    from rpo_bench.models.catalog import resolve_model

    record = json.loads((card_and_json[2] / "rpo_bench.json").read_text())
    assert record["micro_world"] == resolve_model("micro-base").micro_world == card_and_json[0]["build"]["world"]


def test_background_noise_is_zero_on_renders_and_grows_with_texture():
    """The cleanliness line: plain renders have flat backgrounds; the same images with a texture painted over them
    (what a GAN decoder does with latent error) are measured as noisy, though the judge still reads them."""
    from rpo_bench.workflows.micro_check import background_noise

    renders = render_batch(sample_scenes(np.random.default_rng(3), 16, styles=("plain",)), list(range(16)))
    assert background_noise(renders) == 0.0
    texture = np.random.default_rng(4).normal(0, 12, size=renders.shape)
    noisy = np.clip(renders + texture, 0, 255).astype(np.uint8)
    assert 8 < background_noise(noisy) < 14
