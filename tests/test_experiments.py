"""The experiment scripts behind docs/style-recipe.md's limits still run and print their tables."""

import numpy as np
from PIL import Image

from experiments.micro_vae_styles import main as vae_styles
from experiments.probe_features import MICRO_CLIP, feature_sets
from rpo_bench.micro.scenes import STYLES


def test_vae_styles_prints_a_row_per_vae_with_a_probability_per_style(tmp_path, capsys):
    vae_styles(["--channels", "8", "--steps", "1", "--renders", "2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    style_table, rest = out.split("Lowest content accuracy")
    content_table, perturbed_table = rest.split("Plain renders decoded from latents plus noise")
    for table in (style_table, content_table):
        lines = [line for line in table.splitlines() if line.startswith("|")]  # not progress lines
        assert lines[0] == "| VAE | " + " | ".join(STYLES) + " |"
        names = [line.split(" | ")[0] for line in lines[2:]]
        assert names == ["| micro-base's VAE", "| 8x8x8 latents, 50% styled, 1 steps"]
        for line in lines[2:]:  # style: a probability; content: the lowest accuracy and its attribute
            values = [float(v.split(" (")[0]) for v in line.strip(" |").split(" | ")[1:]]
            assert len(values) == len(STYLES) and all(0 <= v <= 1 for v in values)
    # decoded perturbed latents: background noise in levels and the lowest content accuracy, per noise share
    lines = [line for line in perturbed_table.splitlines() if line.startswith("|")]
    assert lines[0] == "| VAE | noise 0 | noise 0.1 | noise 0.2 | noise 0.3 |"
    assert [line.split(" | ")[0] for line in lines[2:]] == names
    for line in lines[2:]:
        pairs = [cell.split(" / ") for cell in line.strip(" |").split(" | ")[1:]]
        assert len(pairs) == 4 and all(float(noise) >= 0 and 0 <= float(content) <= 1 for noise, content in pairs)
    assert (tmp_path / "vae-c8-styled0.5-steps1.safetensors").is_file()  # kept, and reused by the next run


def test_probe_features_gives_every_feature_set_one_row_per_image():
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(MICRO_CLIP).float().eval()
    images = [Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)) for i in range(3)]
    dims = {name: features.shape for name, features in feature_sets(model, images).items()}
    assert dims == {"projected embedding": (3, 64), "patch-token means, every layer": (3, 256),
                    "patch-token means and stds, every layer": (3, 512),
                    "patch-token means and stds, first two layers": (3, 256), "raw pixels": (3, 3072)}


def test_unet_cost_prints_each_design_with_its_ratio(capsys):
    from experiments.micro_unet_cost import main as unet_cost

    unet_cost(["--batch", "2", "--rounds", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]  # not the header
    assert [row.split(" | ")[0] for row in rows] == [
        "| today's UNet, 8x8 latents", "| today's UNet, 16x16 latents", "| three levels, 16x16 latents",
        "| world v2's UNet (three levels, widths 32/64/64), 16x16"]
    assert rows[0].endswith("| 1.00 |")
