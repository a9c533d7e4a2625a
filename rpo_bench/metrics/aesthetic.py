"""The LAION improved aesthetic predictor: an MLP on L2-normalised OpenAI CLIP ViT-L/14 image embeddings.

As its simple_inference.py: OpenAI CLIP's preprocessing, `encode_image`, L2 normalisation, MLP
(sac+logos+ava1-l14-linearMSE.pth), a 1-10 rating (SD1.5 averages about 5.4). The prompt is not used. The CLIP is
the transformers port of the same OpenAI weights (openai/clip-vit-large-patch14); only its vision tower loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from rpo_bench.core.errors import BadInputError
from rpo_bench.core.progress import silence_library_progress
from rpo_bench.hub.file_checks import check_transformers_folder
from rpo_bench.hub.hub_files import HubFiles
from rpo_bench.metrics.checkpoints import check_keys, check_shapes, nested_state_dict, read_state_dict
from rpo_bench.metrics.mlp_head import PreferenceMLP
from rpo_bench.metrics.official import OfficialScorer, fetch_hub_file, transformers_errors_only
from rpo_bench.metrics.preprocess import clip_image_transform, stack_pixels

HEAD_FILE = "sac+logos+ava1-l14-linearMSE.pth"
CLIP_FILES = ("config.json", "model.safetensors")
CLIP_SUBFOLDER = "clip"  # in a local folder argument: the CLIP beside the head
ACCEPTED = f"the LAION {HEAD_FILE} (Linear 768-1024-128-64-16-1, keys layers.0..7)"


class AestheticScore(OfficialScorer):
    name = "aesthetic"
    higher_is_better = True
    value_range = (float("-inf"), float("inf"))  # trained on 1-10 ratings; a linear head can leave that range
    summary = "LAION improved aesthetic predictor on CLIP ViT-L/14 (about 5-6.5 for SD); ignores the prompt"
    uses_prompt = False
    accepted_local = (f"{HEAD_FILE}, or a folder holding it and optionally a `{CLIP_SUBFOLDER}/` transformers "
                      "CLIP ViT-L/14 folder")
    hub = HubFiles("camenduru/improved-aesthetic-predictor", patterns=(HEAD_FILE,),
                   what="LAION aesthetic MLP (Hub mirror of the GitHub release)")
    clip_hub = HubFiles("openai/clip-vit-large-patch14", patterns=CLIP_FILES, what="OpenAI CLIP ViT-L/14")

    def hub_files(self) -> list[HubFiles]:
        local = self.local_source()
        if local is None:
            return self.all_hub_files()
        return [] if local.is_dir() and (local / CLIP_SUBFOLDER / "config.json").is_file() else [self.clip_hub]

    def all_hub_files(self) -> list[HubFiles]:
        return [self.hub, self.clip_hub]

    def weights_file(self, filename: str, files: HubFiles | None = None) -> Path:
        local = self.local_source()
        if local is not None and not local.is_dir() and local.suffix not in (".pth", ".pt", ".safetensors"):
            raise BadInputError(f"{self.key}: {local} is not a checkpoint; accepted: {self.accepted_local}")
        return super().weights_file(filename, files)

    def _clip_folder(self) -> Path:
        local = self.local_source()
        if local is not None and local.is_dir() and (local / CLIP_SUBFOLDER / "config.json").is_file():
            return local / CLIP_SUBFOLDER
        paths = [fetch_hub_file(self.name, self.clip_hub, f) for f in CLIP_FILES]
        return paths[0].parent

    def build(self) -> None:
        from safetensors import SafetensorError  # noqa: PLC0415 - safetensors pulls torch: on first use
        from transformers import CLIPVisionModelWithProjection  # noqa: PLC0415 - transformers loads in seconds: on first use


        head_path = self.weights_file(HEAD_FILE)
        state = nested_state_dict(read_state_dict(head_path, self.key), head_path, self.key)
        head = PreferenceMLP.sized_for(state)
        check_keys(state, head.state_dict(), head_path, self.key, ACCEPTED)
        check_shapes(state, head.state_dict(), head_path, self.key, ACCEPTED)
        head.load_state_dict(state)

        silence_library_progress()
        clip_folder = self._clip_folder()
        clip_accepted = f"a CLIP ViT-L/14 folder like {self.clip_hub.repo} (config.json, model.safetensors)"
        # a local folder or a Hub cache entry alike: a truncated download is named here, not by safetensors
        check_transformers_folder(clip_folder, self.key, clip_accepted, model_types=("clip", "clip_vision_model"),
                                  label="CLIP")
        try:
            with transformers_errors_only():  # a full CLIPModel's text tower is "unexpected" here, by design
                clip, info = CLIPVisionModelWithProjection.from_pretrained(str(clip_folder), dtype=self.dtype,
                                                                           output_loading_info=True)
        except (RuntimeError, ValueError, OSError, SafetensorError) as exc:  # e.g. sizes that do not fit the weights
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise BadInputError(f"{self.key}: {clip_folder} is not a loadable CLIP ({type(exc).__name__}: {detail}); "
                                f"accepted: {clip_accepted}") from exc
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise BadInputError(f"{self.key}: {clip_folder} lacks {len(missing)} CLIP vision weight(s), e.g. "
                                f"{', '.join(missing[:3])}; accepted: a CLIP ViT-L/14 like {self.clip_hub.repo}")
        if clip.config.projection_dim != head.layers[0].in_features:
            raise BadInputError(f"{self.key}: the CLIP embeds in {clip.config.projection_dim} dimensions but "
                                f"{head_path.name} expects {head.layers[0].in_features}; accepted: {ACCEPTED}")
        # the official head runs in float32 on float32 embeddings, whatever the CLIP's dtype
        self.model = torch.nn.ModuleDict({"clip": clip.to(self.device), "head": head.to(self.device).float()}).eval()
        self.transform = clip_image_transform(clip.config.image_size)

    def prepare(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        return {"pixels": stack_pixels(self.transform, images).to(self.device, self.dtype)}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        embeddings = self.model["clip"](pixel_values=pixels).image_embeds.float()
        # simple_inference.py's normalized(): L2 norm with zero norms left as 1
        norms = embeddings.norm(dim=-1, keepdim=True)
        embeddings = embeddings / torch.where(norms == 0, torch.ones_like(norms), norms)
        return self.model["head"](embeddings).squeeze(-1)
