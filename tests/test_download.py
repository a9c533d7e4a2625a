"""`rpo-bench download`: against a local stand-in for the Hub (tests/hub_server.py) driven by the real
huggingface_hub client, with a private HF cache and a private rpo-bench home per test."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rpo_bench.core.errors import MissingWeightsError, UnknownNameError
from rpo_bench.hub.availability import missing_file_message
from rpo_bench.hub.hub_files import DownloadError, HubFiles
from rpo_bench.metrics.base import Metric
from rpo_bench.workflows.download import download, plan_downloads
from rpo_bench.workflows.entries import hub_files_for
from tests.hub_server import FakeHub, FakeRepo


def _blob(seed: int, size: int = 50_000) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32)


PIPELINE_WANTED = {
    "model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
    "unet/config.json": b'{"sample_size": 8}',
    "unet/diffusion_pytorch_model.safetensors": _blob(1),
    "vae/config.json": b'{"latent_channels": 4}',
    "vae/diffusion_pytorch_model.safetensors": _blob(2),
    "text_encoder/config.json": b'{"hidden_size": 8}',
    "text_encoder/model.safetensors": _blob(3),
    "tokenizer/vocab.json": b'{"a": 0}',
    "tokenizer/merges.txt": b"#version: 0.2\n",
    "scheduler/scheduler_config.json": b'{"steps_offset": 1}',
    "feature_extractor/preprocessor_config.json": b'{"crop_size": 8}',
}
PIPELINE_UNWANTED = {  # what a diffusers repo also holds and the loader never reads
    "README.md": b"# fake",
    "v1-5-pruned.ckpt": _blob(4),
    "unet/diffusion_pytorch_model.fp16.safetensors": _blob(5),
    "unet/diffusion_pytorch_model.non_ema.safetensors": _blob(6),
    "unet/diffusion_pytorch_model.bin": _blob(7),
    "text_encoder/model.fp16.safetensors": _blob(8),
    "safety_checker/config.json": b'{"safe": 1}',
    "safety_checker/model.safetensors": _blob(9),
}
SCORER_FILES = {"scorer.pt": _blob(10, 20_000), "config.json": b'{"dim": 4}'}
PROMPT_FILES = {"bench/animals.json": json.dumps(["a cat", "a dog"]).encode(),
                "bench/food.json": json.dumps(["a pear"]).encode(), "README.md": b"# prompts"}

REGISTRY = """
[models.fake-sd]
family = "sd15"
repo = "me/fake-sd"

[models.smoke]
family = "sd15"
repo = "me/fake-sd"

[models.ghost]
family = "sd15"
repo = "me/ghost"

[metrics.fake-scorer]
target = "tests.test_download:PinnedScorer"

[prompts.fake-prompts]
hf_dataset = "me/fake-prompts"
hf_files = ["bench/animals.json", "bench/food.json"]

[prompts.fake-split]
hf_dataset = "me/fake-split"
split = "train"
"""


class PinnedScorer(Metric):
    """A metric whose checkpoint is pinned by sha256; `fake-scorer:wrong-pin` pins other bytes."""

    name = "fake-scorer"
    version = "1"

    def load(self, device, dtype) -> None:
        pass

    def score(self, images, prompts) -> list[float]:
        return [0.0] * len(images)

    def hub_files(self) -> list[HubFiles]:
        pin = "0" * 64 if self.arg == "wrong-pin" else hashlib.sha256(SCORER_FILES["scorer.pt"]).hexdigest()
        return [HubFiles("me/fake-scorer", patterns=("scorer.pt", "config.json"), sha256={"scorer.pt": pin},
                         what="fake scorer checkpoint")]


def _reset_registries() -> None:
    from rpo_bench.core.registry import reset_all_user_entries

    reset_all_user_entries()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private rpo-bench home whose registry.toml names the fake Hub's repositories."""
    root = tmp_path / "home"
    root.mkdir()
    (root / "registry.toml").write_text(REGISTRY, encoding="utf-8")
    monkeypatch.setenv("RPO_BENCH_HOME", str(root))
    _reset_registries()
    yield root
    _reset_registries()


@pytest.fixture
def hub(tmp_path, monkeypatch, home):
    """The fake Hub, online, with an empty private HF cache. huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE and
    HF_HUB_OFFLINE once at import (tests/conftest.py imports it offline), so its constants are patched too."""
    from huggingface_hub import constants

    from rpo_bench.hub import availability as hub_preflight
    server = FakeHub().start()
    server.add(FakeRepo("me/fake-sd", PIPELINE_WANTED | PIPELINE_UNWANTED))
    server.add(FakeRepo("me/fake-scorer", dict(SCORER_FILES)))
    server.add(FakeRepo("me/fake-prompts", dict(PROMPT_FILES), repo_type="dataset"))
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_preflight, "_PROBED", {})  # a port refused in an earlier test may be this server's now
    yield server
    server.stop()


def go_offline(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def cached(repo: str, filename: str, repo_type: str = "model") -> str | None:
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo, filename, revision="main", repo_type=repo_type)
    return path if isinstance(path, str) else None


def blob_files(cache_root: Path) -> list[Path]:
    return [p for p in cache_root.rglob("blobs/*") if p.is_file()]


# -- what a name needs ------------------------------------------------------------------------------------------
def test_models_need_the_pipeline_files_minus_overrides_and_tiny_or_local_models_need_nothing():
    (base,) = hub_files_for("sd15-base")
    assert base.repo == "stable-diffusion-v1-5/stable-diffusion-v1-5" and base.revision == "main"
    assert {"model_index.json", "unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
            "tokenizer/*.txt", "scheduler/*.json", "feature_extractor/*.json"} <= set(base.patterns)
    assert not [p for p in base.patterns if p.startswith("safety_checker") or "fp16" in p or p.endswith(".bin")]

    base, unet, vae = hub_files_for("sdxl-dpo")
    assert "text_encoder_2/model.safetensors" in base.patterns and "tokenizer_2/*.json" in base.patterns
    assert not [p for p in base.patterns if p.startswith(("unet/", "vae/"))]  # overridden: never read from base
    assert (unet.repo, unet.patterns) == ("mhdang/dpo-sdxl-text2image-v1",
                                          ("unet/config.json", "unet/diffusion_pytorch_model.safetensors"))
    assert (vae.repo, vae.patterns) == ("madebyollin/sdxl-vae-fp16-fix",
                                        ("config.json", "diffusion_pytorch_model.safetensors"))
    assert hub_files_for("tiny-sd15") == [] and hub_files_for("micro-base") == []


def test_prompt_sets_and_metrics_declare_their_files():
    from rpo_bench.workflows.entries import entry_files

    (files,) = hub_files_for("hpsv2-bench")
    assert (files.repo, files.repo_type) == ("zhwang/HPDv2", "dataset") and len(files.patterns) == 4
    split = entry_files("pickapic-val")
    assert split.files == () and "datasets library" in split.note and split.prompt_set is not None
    assert hub_files_for("smoke", kind="prompts") == [] and hub_files_for("tiny-clip") == []


def test_unknown_and_ambiguous_names_fail_with_one_line(home):
    with pytest.raises(UnknownNameError, match="did you mean tiny-sd15"):
        hub_files_for("tiny-sd16")
    with pytest.raises(DownloadError, match="--kind models or --kind prompts") as info:
        hub_files_for("smoke")  # a user model named like the built-in prompt set
    assert "\n" not in str(info.value)
    assert hub_files_for("smoke", kind="models")[0].repo == "me/fake-sd"


# -- dry run ------------------------------------------------------------------------------------------------------
def test_dry_run_lists_every_needed_file_with_sizes_and_downloads_nothing(hub, tmp_path):
    (plan,) = plan_downloads(["fake-sd"])
    (repo,) = plan.repos
    assert repo.commit == hub.repos[("model", "me/fake-sd")].commit
    assert {f.filename: f.size for f in repo.remote} == {name: len(data) for name, data in PIPELINE_WANTED.items()}
    assert all(f.cached is None for f in repo.remote) and len(plan.missing) == len(PIPELINE_WANTED)
    checks = {f.filename: f.source for f in repo.remote}
    assert checks["unet/diffusion_pytorch_model.safetensors"] == "LFS sha256"
    assert checks["model_index.json"] == "git blob id"
    assert hub.downloads() == [] and blob_files(tmp_path / "hf-cache") == []


def test_a_repo_the_hub_does_not_have_is_one_line(hub):
    with pytest.raises(DownloadError) as info:
        plan_downloads(["ghost"])
    assert str(info.value) == "ghost: me/ghost (revision main) does not exist on the Hub, or is private and needs " \
                              "`hf auth login`"


def test_a_declared_file_missing_from_the_repo_is_named(hub):
    del hub.repos[("model", "me/fake-scorer")].files["config.json"]
    with pytest.raises(DownloadError, match=r"me/fake-scorer \(revision main\) has no file matching config.json"):
        plan_downloads(["fake-scorer"])


# -- download -----------------------------------------------------------------------------------------------------
def test_download_fills_the_hf_cache_and_a_rerun_downloads_nothing(hub, home):
    (result,) = download(["fake-sd"], progress=False)
    for name, data in PIPELINE_WANTED.items():
        assert Path(cached("me/fake-sd", name)).read_bytes() == data, name
    for name in PIPELINE_UNWANTED:
        assert cached("me/fake-sd", name) is None, name
    assert sorted(hub.downloaded_files()) == sorted(PIPELINE_WANTED)  # each exactly once
    (repo,) = result.repos
    assert all(o.fetched for o in repo.outcomes) and repo.commit == hub.repos[("model", "me/fake-sd")].commit
    record = json.loads(result.record.read_text())
    assert record["repos"][0]["commit"] == repo.commit
    unet = record["repos"][0]["files"]["unet/diffusion_pytorch_model.safetensors"]
    assert unet["sha256"] == hashlib.sha256(PIPELINE_WANTED["unet/diffusion_pytorch_model.safetensors"]).hexdigest()

    before = len(hub.downloads())
    (again,) = download(["fake-sd"], progress=False)
    assert len(hub.downloads()) == before
    assert not any(o.fetched for o in again.repos[0].outcomes)
    (plan,) = plan_downloads(["fake-sd"])
    assert plan.missing == [] and all(f.cached for f in plan.remote)


def test_wrong_bytes_are_refused_and_not_left_in_the_cache(hub, tmp_path):
    name = "unet/diffusion_pytorch_model.safetensors"
    good = PIPELINE_WANTED[name]
    hub.repos[("model", "me/fake-sd")].served[name] = bytes(len(good))  # same size, other bytes
    with pytest.raises(DownloadError) as info:
        download(["fake-sd"], progress=False)
    message = str(info.value)
    assert "\n" not in message and f"me/fake-sd/{name}" in message
    assert f"expected {hashlib.sha256(good).hexdigest()}" in message
    assert f"got {hashlib.sha256(bytes(len(good))).hexdigest()}" in message
    assert cached("me/fake-sd", name) is None
    names = [p.name for p in blob_files(tmp_path / "hf-cache")]  # LFS blobs are named by their sha256
    assert not [n for n in names if n.startswith(hashlib.sha256(good).hexdigest()) or n.endswith(".incomplete")]


def test_a_pinned_sha256_wins_over_the_hub_hash(hub):
    (result,) = download(["fake-scorer"], progress=False)
    checks = {o.remote.filename: o.remote.source for o in result.repos[0].outcomes}
    assert checks == {"scorer.pt": "pinned sha256", "config.json": "git blob id"}

    with pytest.raises(DownloadError, match=f"expected {'0' * 64}"):
        download(["fake-scorer:wrong-pin"], progress=False)  # the cached copy is checked against the pin too
    assert cached("me/fake-scorer", "scorer.pt") is None


def test_an_interrupted_download_is_continued_with_a_range_request(hub, tmp_path):
    name = "unet/diffusion_pytorch_model.safetensors"
    data = PIPELINE_WANTED[name]
    partial = tmp_path / "hf-cache" / "models--me--fake-sd" / "blobs" / f"{hashlib.sha256(data).hexdigest()}.incomplete"
    repo = hub.repos[("model", "me/fake-sd")]
    repo.served[name] = data[:20_000]  # the connection drops after 20 kB
    with pytest.raises(DownloadError, match="run the same command again to continue"):
        download(["fake-sd"], progress=False)
    assert partial.read_bytes() == data[:20_000] and cached("me/fake-sd", name) is None

    del repo.served[name]
    (result,) = download(["fake-sd"], progress=False)
    gets = [r for r in hub.downloads() if r.path.endswith(name)]
    assert [r.range for r in gets] == [None, "bytes=20000-"]
    assert Path(cached("me/fake-sd", name)).read_bytes() == data
    assert not partial.exists()
    (outcome,) = [o for o in result.repos[0].outcomes if o.remote.filename == name]
    assert outcome.resumed_from == 20_000


def test_a_dataset_prompt_set_is_fetched_and_then_works_offline(hub, monkeypatch):
    from rpo_bench.evaluation.prompts import load_prompt_set

    (result,) = download(["fake-prompts"], progress=False)
    assert result.prompts == 3 and result.repos[0].files.repo_type == "dataset"
    assert cached("me/fake-prompts", "README.md", "dataset") is None
    go_offline(monkeypatch)
    prompts = load_prompt_set("fake-prompts").prompts
    assert [(p.text, p.category) for p in prompts] == [("a cat", "animals"), ("a dog", "animals"), ("a pear", "food")]


def test_a_split_prompt_set_is_fetched_by_the_existing_loader(hub, monkeypatch):
    import rpo_bench.evaluation.prompts as prompts_module

    fetched = []
    monkeypatch.setattr(prompts_module, "_fetch_hub_prompts",
                        lambda spec: fetched.append(spec.name) or [prompts_module.Prompt(0, "a red cube")])
    (result,) = download(["fake-split"], progress=False)
    assert fetched == ["fake-split"] and result.prompts == 1 and result.repos == []
    assert prompts_module.cached_prompts_path("fake-split").is_file()


def test_a_style_download_fetches_its_clip_and_keeps_its_references(hub, home, capsys):
    """A Hub-dataset style: its CLIP's files come from the Hub; references already streamed are counted, not
    fetched again (the datasets library's streaming needs the real Hub)."""
    from rpo_bench.metrics.clip_score import HF_CLIP_FILES
    from rpo_bench.style.registry import CAPTIONS_FILE, dataset_folder, get_style

    hub.add(FakeRepo("me/fake-clip", {name: _blob(20 + i, 1_000) for i, name in enumerate(HF_CLIP_FILES)}))
    (home / "registry.toml").write_text(REGISTRY + '\n[styles.fake-art]\ndataset = "me/fake-art"\nprompts = "smoke"\n'
                                        'embedding = "me/fake-clip"\nreferences = 20\ncaption = "a painting"\n')
    _reset_registries()
    folder = dataset_folder(get_style("fake-art"))
    folder.mkdir(parents=True)
    _reference_images(folder, 20)

    (result,) = download(["fake-art"], progress=False)
    assert result.entry.kind == "styles" and result.references == (20, folder)
    assert sorted(hub.downloaded_files()) == sorted(HF_CLIP_FILES)
    assert all(cached("me/fake-clip", name) for name in HF_CLIP_FILES)
    assert (folder / CAPTIONS_FILE).is_file()

    code, out, _ = run_cli(capsys, "fake-art")
    assert code == 0 and "fake-art: 20 reference images in" in " ".join(out.split())


def _reference_images(folder: Path, count: int) -> None:
    from PIL import Image

    lines = []
    for index in range(count):
        Image.new("RGB", (16, 16), (index * 12, 80, 160)).save(folder / f"{index:05d}.png")
        lines.append(json.dumps({"file": f"{index:05d}.png", "caption": "a painting"}) + "\n")
    (folder / "captions.jsonl").write_text("".join(lines), encoding="utf-8")


# -- offline ------------------------------------------------------------------------------------------------------
def test_offline_download_needs_the_network_and_missing_files_name_the_command(home, monkeypatch):
    from rpo_bench.evaluation.prompts import load_prompt_set
    from rpo_bench.models.catalog import MODELS
    from rpo_bench.models.loader import model_fingerprint

    with pytest.raises(DownloadError, match="needs the network and HF_HUB_OFFLINE is set") as info:
        download(["fake-sd"], progress=False)
    assert "\n" not in str(info.value)

    expected = ("fake-sd: me/fake-sd/model_index.json (revision main) is not on this machine and HF_HUB_OFFLINE is "
                "set; fetch it with `rpo-bench download fake-sd`")
    assert missing_file_message("fake-sd", HubFiles("me/fake-sd"), "model_index.json") == expected
    with pytest.raises(MissingWeightsError) as info:
        model_fingerprint(MODELS.get("fake-sd"))
    assert str(info.value) == expected
    with pytest.raises(MissingWeightsError, match="fetch it with `rpo-bench download fake-prompts`"):
        load_prompt_set("fake-prompts")


def test_a_missing_name_in_two_registries_gets_a_download_command_with_its_kind(home):
    from rpo_bench.evaluation.preflight import require_fetchable

    with pytest.raises(MissingWeightsError) as info:
        require_fetchable(models=["smoke", "fake-sd"])  # smoke: a user model named like the built-in prompt set
    assert "`rpo-bench download fake-sd` and `rpo-bench download --kind models smoke`" in str(info.value)


# -- the command ----------------------------------------------------------------------------------------------------
def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    from rpo_bench.cli import main

    code = main(["download", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_dry_run_download_and_errors(hub, capsys, monkeypatch):
    code, out, _ = run_cli(capsys, "fake-sd", "fake-scorer", "tiny-sd15", "--dry-run")
    assert code == 0
    assert "unet/diffusion_pytorch_model.safetensors" in out and "safety_checker" not in out
    assert "tiny-sd15 (model): a tiny model" in out and "all: 13 files" in out
    assert hub.downloads() == []

    code, out, _ = run_cli(capsys, "fake-scorer")
    assert code == 0 and "me/fake-scorer" in out and "2 of 2" in out

    code, out, _ = run_cli(capsys, "smoke", "--kind", "prompts", "--dry-run")
    assert code == 0 and "smoke (prompt set): a file" in out

    code, _, err = run_cli(capsys, "fake-sd", "tiny-clp")
    assert code == 2 and "did you mean tiny-clip" in err and len(err.strip().splitlines()) == 1
    go_offline(monkeypatch)
    code, _, err = run_cli(capsys, "fake-sd")
    assert code == 2 and "needs the network" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run_cli(capsys, "fake-sd", "--dry-run")  # offline, the declared patterns are still listed
    assert code == 0 and "model_index.json" in out


# -- end to end: a real pipeline, downloaded, then loaded offline -------------------------------------------------
@pytest.mark.slow
def test_a_downloaded_pipeline_loads_offline_and_a_missing_weight_is_named(hub, home, session_home, monkeypatch):
    """The patterns are checked against what diffusers really reads: the tiny SD1.5 pipeline, served with
    the extras a real repo holds (a safety checker, fp16 copies), must load offline from the HF cache alone."""
    from rpo_bench.models.catalog import MODELS
    from rpo_bench.models.loader import load_pipeline, model_fingerprint
    from rpo_bench.models.tiny import ensure_tiny_model

    folder = ensure_tiny_model("tiny-sd15", 0, session_home / "models")
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
             if p.is_file() and not p.name.startswith(".")}
    index = json.loads(files["model_index.json"])
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    files["model_index.json"] = json.dumps(index).encode()
    files |= {"safety_checker/config.json": b"not json", "safety_checker/model.safetensors": b"junk",
              "unet/diffusion_pytorch_model.fp16.safetensors": b"junk"}
    hub.add(FakeRepo("me/tiny-sd", files))
    (home / "registry.toml").write_text(REGISTRY + '\n[models.hub-tiny]\nfamily = "sd15"\nrepo = "me/tiny-sd"\n')
    _reset_registries()

    download(["hub-tiny"], progress=False)
    go_offline(monkeypatch)
    spec = MODELS.get("hub-tiny")
    assert load_pipeline(spec).unet is not None
    assert len(model_fingerprint(spec)) == 64

    Path(cached("me/tiny-sd", "unet/diffusion_pytorch_model.safetensors")).unlink()
    with pytest.raises(MissingWeightsError) as info:
        load_pipeline(spec)
    assert str(info.value) == missing_file_message("hub-tiny", HubFiles("me/tiny-sd"),
                                                   "unet/diffusion_pytorch_model.safetensors")
