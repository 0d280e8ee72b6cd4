"""Typed configuration for BLIP models.

Three small dataclasses describe a model completely:

* :class:`VisionConfig` — the ViT image encoder (salesforce/BLIP ``models/vit.py``).
* :class:`TextConfig` — the MED text transformer (salesforce/BLIP ``models/med.py`` + ``configs/med_config.json``).
* :class:`BlipConfig` — both towers plus the task and the task-level settings.

Unknown keys are rejected (a typo in a config file is an error, not a silently ignored field).
Named architectures live as JSON files in ``openblip/model_configs/``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

TASKS = ("caption", "retrieval", "itm", "vqa", "nlvr", "feature", "pretrain")


class ConfigError(ValueError):
    """A configuration is invalid: unknown field, wrong value, or an unknown architecture name."""


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known fields are {sorted(names)}")
    return cls(**data)


@dataclass
class VisionConfig:
    """ViT image encoder.

    Defaults are ViT-B/16 at 384 px, as in the released captioning and retrieval checkpoints.
    ``layer_norm_eps`` is 1e-6 as in the original (timm) ViT; Hugging Face configs say 1e-5 (spec §9.1).
    """

    image_size: int = 384
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    grad_ckpt_layers: int = 0  # checkpoint attn+mlp of the last N blocks (``vit_ckpt_layer``)

    def __post_init__(self) -> None:
        if self.width % self.num_heads:
            raise ConfigError(f"vision.width {self.width} is not divisible by vision.num_heads {self.num_heads}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"vision.image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VisionConfig:
        return _from_dict(cls, data, "vision config")


@dataclass
class TextConfig:
    """The MED (BERT-based) text transformer; defaults are ``configs/med_config.json`` (bert-base)."""

    vocab_size: int = 30524
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"text.hidden_size {self.hidden_size} is not divisible by text.num_heads {self.num_heads}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextConfig:
        return _from_dict(cls, data, "text config")

    @classmethod
    def from_med_config(cls, data: dict[str, Any]) -> TextConfig:
        """Read an official ``med_config.json`` / ``bert_config.json`` (BERT field names)."""
        return cls(
            vocab_size=data.get("vocab_size", 30524),
            hidden_size=data.get("hidden_size", 768),
            num_layers=data.get("num_hidden_layers", 12),
            num_heads=data.get("num_attention_heads", 12),
            intermediate_size=data.get("intermediate_size", 3072),
            max_position_embeddings=data.get("max_position_embeddings", 512),
            layer_norm_eps=data.get("layer_norm_eps", 1e-12),
            hidden_dropout=data.get("hidden_dropout_prob", 0.1),
            attention_dropout=data.get("attention_probs_dropout_prob", 0.1),
            initializer_range=data.get("initializer_range", 0.02),
            pad_token_id=data.get("pad_token_id", 0),
        )


@dataclass
class BlipConfig:
    """A complete BLIP model: architecture name, task, both towers and the task settings."""

    task: str = "caption"
    arch: str = "blip-base"
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 256  # ITC projection width
    temp: float = 0.07  # initial ITC temperature
    prompt: str = "a picture of "  # captioning prompt (BLIP_Decoder)
    nlvr_merge_from_layer: int = 6  # NLVR2: average the two cross-attentions below, merge from this layer on

    def __post_init__(self) -> None:
        if isinstance(self.vision, dict):
            self.vision = VisionConfig.from_dict(self.vision)
        if isinstance(self.text, dict):
            self.text = TextConfig.from_dict(self.text)
        if self.task not in TASKS:
            raise ConfigError(f"task {self.task!r} is not one of {TASKS}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlipConfig:
        data = dict(data)
        data.pop("format", None)
        data.pop("openblip_version", None)
        return _from_dict(cls, data, "BLIP config")

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"format": "openblip", **self.to_dict()}, indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> BlipConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from e
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> BlipConfig:
        return dataclasses.replace(self, **changes)


def original_drop_path_rate(vision_width: int, task: str) -> float:
    """The ViT's stochastic depth the original code builds for ``task``: ``create_vit`` gives ViT-L 0.1 always, and
    ``BLIP_VQA``/``BLIP_NLVR`` pass 0.1 for ViT-B too; every other ViT-B model has none. For configs read from a
    checkpoint without one (it only matters when training)."""
    return 0.1 if vision_width >= 1024 or task in ("vqa", "nlvr") else 0.0


def list_architectures() -> list[str]:
    """Names of the built-in architectures (``blip-base``, ``blip-large``, ``blip-tiny``)."""
    files = resources.files("openblip").joinpath("model_configs").iterdir()
    return sorted(p.name[: -len(".json")] for p in files if p.name.endswith(".json"))


def get_arch_config(arch: str, task: str = "caption", **overrides: Any) -> BlipConfig:
    """The config of a named architecture for ``task``.

    ``overrides`` may set any :class:`BlipConfig` field, and ``image_size`` as a shortcut for ``vision.image_size``.
    """
    path = resources.files("openblip").joinpath("model_configs", f"{arch}.json")
    if not path.is_file():
        raise ConfigError(f"unknown architecture {arch!r}; known: {list_architectures()}")
    data = json.loads(path.read_text())
    vision = VisionConfig.from_dict(data["vision"])
    text = TextConfig.from_dict(data["text"])
    image_size = overrides.pop("image_size", None)
    if image_size is not None:
        vision = dataclasses.replace(vision, image_size=image_size)
    drop_path_rate = overrides.pop("drop_path_rate", None)
    if drop_path_rate is not None:
        vision = dataclasses.replace(vision, drop_path_rate=drop_path_rate)
    extra = {k: v for k, v in data.items() if k not in ("vision", "text")}
    return BlipConfig(task=task, arch=arch, vision=vision, text=text, **{**extra, **overrides})
