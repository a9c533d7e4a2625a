"""HPSv2 and HPSv2.1: the Human Preference Score, an OpenCLIP ViT-H-14 fine-tuned on human choices.

The official `hpsv2` package pins libraries that no longer install beside transformers 5, so we load its
checkpoints (`{"state_dict": ...}` for open_clip's ViT-H-14) into the maintained open_clip and compute what its
`score` does: its own preprocessing (longer side to 224, zero padding; no crop: see preprocess.py), then the dot
product of the L2-normalised image and text features, with no logit scale. The package
returns that cosine (about 0.20-0.33); papers print it x100 (23.79, 25.05, ...), and so do we. v2.0 and v2.1 are
different models and their numbers are not comparable; each is its own metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from rpo_bench.core.errors import BadInputError
from rpo_bench.hub.file_checks import read_json_object
from rpo_bench.hub.hub_files import HubFiles
from rpo_bench.metrics.checkpoints import check_keys, check_shapes, nested_state_dict, read_state_dict
from rpo_bench.metrics.official import OfficialScorer
from rpo_bench.metrics.preprocess import hps_image_transform, stack_pixels

HPS_FILES = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}
HPS_REPO = "xswu/HPSv2"
ARCH = "ViT-H-14"
ARCH_CONFIG_FILE = "open_clip_config.json"  # beside a checkpoint of another size (the tiny variant)


def open_clip_config(checkpoint: Path, what: str = "hpsv2") -> dict:
    """The architecture: ViT-H-14 from open_clip's registry, unless a config file sits beside the checkpoint."""
    beside = checkpoint.with_name(ARCH_CONFIG_FILE)
    if beside.exists():
        accepted = "an open_clip model config: a JSON object with a model_cfg object (embed_dim, vision_cfg, text_cfg)"
        config = read_json_object(beside, what, accepted).get("model_cfg")
        if not isinstance(config, dict) or not all(isinstance(config.get(k), dict) for k in ("vision_cfg", "text_cfg")):
            raise BadInputError(f"{what}: {beside} has no model_cfg with vision_cfg and text_cfg; accepted: {accepted}")
        return config
    import open_clip  # noqa: PLC0415 - open_clip loads in seconds: on first use

    return open_clip.get_model_config(ARCH)


def _hub(version: str) -> HubFiles:
    return HubFiles(HPS_REPO, patterns=(HPS_FILES[version],), what=f"HPS {version} checkpoint")


class HPSv2Score(OfficialScorer):
    name = "hpsv2"
    checkpoint_name = HPS_FILES["v2.0"]  # v2.0 and v2.1 are two files of the same repository
    hub = _hub("v2.0")
    accepted_local = f"the official {checkpoint_name} (or a folder holding it)"
    higher_is_better = True
    value_range = (-100.0, 100.0)
    summary = "HPS v2.0 (xswu/HPSv2), 100 x cosine as papers print it; hpsv2:<checkpoint.pt> for local weights"

    def build(self) -> None:
        import open_clip  # noqa: PLC0415 - open_clip loads in seconds: on first use

        path = self.weights_file(self.checkpoint_name)
        config = open_clip_config(path, self.key)
        try:
            model = open_clip.model.CLIP(**config)
        except (TypeError, ValueError, KeyError) as exc:  # a config beside the checkpoint with unknown or bad fields
            raise BadInputError(f"{self.key}: {path.with_name(ARCH_CONFIG_FILE)} does not describe an open_clip model "
                                f"({type(exc).__name__}: {exc}); accepted: open_clip's model_cfg fields") from exc
        state = nested_state_dict(read_state_dict(path, self.key), path, self.key, key="state_dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DistributedDataParallel
        expected = model.state_dict()
        accepted = f"an open_clip {ARCH} checkpoint like {self.checkpoint_name} of {HPS_REPO}"
        check_keys(state, expected, path, self.key, accepted)
        check_shapes(state, expected, path, self.key, accepted)
        model.load_state_dict(state)
        self.model = model.to(self.device, self.dtype).eval()
        self.transform = hps_image_transform(int(config["vision_cfg"].get("image_size", 224)))
        self.token_limit = int(config["text_cfg"].get("context_length", 77))
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=self.token_limit)

    def prepare(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        pixels = stack_pixels(self.transform, images).to(self.device, self.dtype)
        return {"pixels": pixels, "tokens": self.tokenizer(list(prompts)).to(self.device)}

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        image_features = self.model.encode_image(pixels, normalize=True)
        text_features = self.model.encode_text(tokens, normalize=True)
        return 100.0 * (image_features.float() * text_features.float()).sum(dim=-1)

    def count_truncated(self, prompts: Sequence[str]) -> int:
        # start and end tokens take two of the context's places
        return sum(len(self.tokenizer.encode(p)) > self.token_limit - 2 for p in prompts)


class HPSv21Score(HPSv2Score):
    name = "hpsv2.1"
    checkpoint_name = HPS_FILES["v2.1"]
    hub = _hub("v2.1")
    accepted_local = f"the official {checkpoint_name} (or a folder holding it)"
    summary = "HPS v2.1 (xswu/HPSv2), 100 x cosine; not comparable with v2.0; hpsv2.1:<checkpoint.pt> for local"

