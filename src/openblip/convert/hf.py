"""Hugging Face ``transformers`` BLIP layout <-> openblip (= official salesforce/BLIP names).

Explicit, table-driven key maps (spec §9). Text-side names are identical in both layouts; only the vision
tower is renamed. transformers is never imported: these functions work on plain state dicts and JSON configs.

Differences handled here, each deliberately:

* ``position_ids`` buffers: persistent in official ``med.py`` (and stored in official checkpoints), absent in
  HF files and in our state dicts.
* ``temp`` (ITC temperature): in official retrieval/pre-training checkpoints; HF has no such weight. On export
  we keep it in ``config.json`` as ``itc_temp`` (transformers keeps unknown config fields and ignores them);
  on import we read it back, or fall back to the 0.07 initial value and say so in the load report.
* Vision LayerNorm eps: a model loaded from the HF layout runs with the eps its ``config.json`` states (1e-5
  in the released hub configs), so it reproduces transformers; the original ``.pth`` files run with 1e-6.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from openblip.config import BlipConfig, TextConfig, VisionConfig, original_drop_path_rate

HF_ARCHITECTURES = {
    "caption": "BlipForConditionalGeneration",
    "retrieval": "BlipForImageTextRetrieval",
    "itm": "BlipForImageTextRetrieval",
    "vqa": "BlipForQuestionAnswering",
}
_TASK_OF_ARCH = {
    "BlipForConditionalGeneration": "caption",
    "BlipForImageTextRetrieval": "retrieval",
    "BlipForQuestionAnswering": "vqa",
}

# (openblip regex, HF template) for the vision tower; applied to keys under the prefixes below.
_VISION_RULES = [
    (r"cls_token", "embeddings.class_embedding"),
    (r"pos_embed", "embeddings.position_embedding"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embedding.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.layers.\1.layer_norm1.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.layers.\1.layer_norm2.\2"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.layers.\1.self_attn.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.\1.self_attn.projection.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"encoder.layers.\1.mlp.\2.\3"),
    (r"norm\.(weight|bias)", r"post_layernorm.\1"),
]
_VISION_RULES_BACK = [
    (r"embeddings\.class_embedding", "cls_token"),
    (r"embeddings\.position_embedding", "pos_embed"),
    (r"embeddings\.patch_embedding\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (r"encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (r"encoder\.layers\.(\d+)\.self_attn\.qkv\.(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    (r"encoder\.layers\.(\d+)\.self_attn\.projection\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layers\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"post_layernorm\.(weight|bias)", r"norm.\1"),
]


class ConversionError(ValueError):
    """A state dict or config cannot be mapped between layouts; the message names the keys."""


def _apply(rules: list[tuple[str, str]], name: str) -> str | None:
    for pattern, repl in rules:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, repl, name)
    return None


def vision_key_to_hf(key: str) -> str:
    """``visual_encoder.blocks.0.attn.qkv.weight`` -> ``vision_model.encoder.layers.0.self_attn.qkv.weight``."""
    if not key.startswith("visual_encoder."):
        raise ConversionError(f"not a vision key: {key}")
    new = _apply(_VISION_RULES, key[len("visual_encoder.") :])
    if new is None:
        raise ConversionError(f"no Hugging Face name for vision key {key}")
    return "vision_model." + new


def vision_key_from_hf(key: str) -> str:
    if not key.startswith("vision_model."):
        raise ConversionError(f"not a Hugging Face vision key: {key}")
    new = _apply(_VISION_RULES_BACK, key[len("vision_model.") :])
    if new is None:
        raise ConversionError(f"unknown Hugging Face vision key {key}")
    return "visual_encoder." + new


def is_training_only_key(key: str) -> bool:
    """Momentum copies and feature queues: used by training, never by inference."""
    head = key.split(".", 1)[0]
    return head.endswith("_m") or head in ("image_queue", "text_queue", "idx_queue", "ptr_queue", "queue_ptr")


def to_hf_state_dict(state: dict[str, torch.Tensor], task: str) -> dict[str, torch.Tensor]:
    """openblip/official state dict -> HF layout for ``task`` (caption, retrieval/itm or vqa).

    ``temp``, ``position_ids`` and training-only tensors are not part of the HF layout and are left out.
    """
    if task not in HF_ARCHITECTURES:
        raise ConversionError(f"transformers has no BLIP class for task {task!r} (only {sorted(HF_ARCHITECTURES)})")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "temp" or key.endswith("embeddings.position_ids") or is_training_only_key(key):
            continue
        out[vision_key_to_hf(key) if key.startswith("visual_encoder.") else key] = value
    return out


def from_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF layout -> openblip/official names. Unknown HF keys raise :class:`ConversionError` naming them."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key.startswith("vision_model."):
            try:
                out[vision_key_from_hf(key)] = value
            except ConversionError:
                unknown.append(key)
        elif key.endswith("embeddings.position_ids"):
            continue
        elif key.split(".", 1)[0] in ("text_encoder", "text_decoder", "vision_proj", "text_proj", "itm_head"):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(f"unknown Hugging Face BLIP keys (BlipModel is not supported): {sorted(unknown)[:20]}")
    return out


def to_hf_config(config: BlipConfig, temp: float | None = None) -> dict[str, Any]:
    """An HF ``config.json`` dict (``model_type: blip``) for ``config``."""
    if config.task not in HF_ARCHITECTURES:
        raise ConversionError(f"transformers has no BLIP class for task {config.task!r}")
    v, t = config.vision, config.text
    text_encoder_width = t.hidden_size if config.task == "vqa" else v.width
    data: dict[str, Any] = {
        "architectures": [HF_ARCHITECTURES[config.task]],
        "model_type": "blip",
        "image_text_hidden_size": config.embed_dim,
        "projection_dim": 512,
        "vision_config": {
            "model_type": "blip_vision_model",
            "hidden_size": v.width,
            "intermediate_size": int(v.width * v.mlp_ratio),
            "num_hidden_layers": v.depth,
            "num_attention_heads": v.num_heads,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "layer_norm_eps": v.layer_norm_eps,
            "hidden_act": "gelu",
        },
        "text_config": {
            "model_type": "blip_text_model",
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "encoder_hidden_size": text_encoder_width,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_layers,
            "num_attention_heads": t.num_heads,
            "max_position_embeddings": t.max_position_embeddings,
            "layer_norm_eps": t.layer_norm_eps,
            "hidden_dropout_prob": t.hidden_dropout,
            "attention_probs_dropout_prob": t.attention_dropout,
            "initializer_range": t.initializer_range,
            "pad_token_id": t.pad_token_id,
            "bos_token_id": 30522,
            "sep_token_id": 102,
            "eos_token_id": 2,
            "hidden_act": "gelu",
        },
        "openblip_arch": config.arch,
    }
    if temp is not None:
        data["itc_temp"] = float(temp)
    return data


def from_hf_config(data: dict[str, Any], task: str | None = None) -> tuple[BlipConfig, float | None]:
    """Our config from an HF ``config.json`` dict, plus the stored ITC temperature if any.

    ``task`` overrides the task read from ``architectures``. The vision LayerNorm eps is taken from the file
    (transformers' value), not the original 1e-6.
    """
    archs = data.get("architectures") or []
    task = task or next((_TASK_OF_ARCH[a] for a in archs if a in _TASK_OF_ARCH), None)
    if task is None:
        raise ConversionError(f"unsupported Hugging Face architecture {archs}; supported: {sorted(_TASK_OF_ARCH)}")
    vc, tc = data.get("vision_config", {}), data.get("text_config", {})
    width = vc.get("hidden_size", 768)
    vision = VisionConfig(
        image_size=vc.get("image_size", 384),
        patch_size=vc.get("patch_size", 16),
        width=width,
        depth=vc.get("num_hidden_layers", 12),
        num_heads=vc.get("num_attention_heads", 12),
        mlp_ratio=vc.get("intermediate_size", 4 * width) / width,
        layer_norm_eps=vc.get("layer_norm_eps", 1e-5),
        drop_path_rate=original_drop_path_rate(width, task),  # HF configs have none (inference ignores it)
    )
    text = TextConfig(
        vocab_size=tc.get("vocab_size", 30524),
        hidden_size=tc.get("hidden_size", 768),
        num_layers=tc.get("num_hidden_layers", 12),
        # transformers' class default is 8 heads; every released hub config states 12 (transformers#22625)
        num_heads=tc.get("num_attention_heads", 8),
        intermediate_size=tc.get("intermediate_size", 3072),
        max_position_embeddings=tc.get("max_position_embeddings", 512),
        layer_norm_eps=tc.get("layer_norm_eps", 1e-12),
        hidden_dropout=tc.get("hidden_dropout_prob", 0.0),
        attention_dropout=tc.get("attention_probs_dropout_prob", 0.0),
        initializer_range=tc.get("initializer_range", 0.02),
        pad_token_id=tc.get("pad_token_id", 0),
    )
    arch = data.get("openblip_arch") or ("blip-large" if width == 1024 else "blip-base" if width == 768 else "custom")
    config = BlipConfig(
        task=task, arch=arch, vision=vision, text=text, embed_dim=data.get("image_text_hidden_size", 256)
    )
    return config, data.get("itc_temp")
