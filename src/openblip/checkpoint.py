"""Reading, detecting, loading and saving BLIP checkpoints in every released layout.

Layouts:

* **official** — salesforce/BLIP ``.pth``: ``{'model': state_dict, ...}`` or a bare state dict, official key names.
  Read with ``torch.load(weights_only=True)`` only: a file whose unpickling would run code is refused.
* **hf** — a transformers directory: ``config.json`` (``model_type: blip``) + ``model.safetensors`` (possibly
  sharded) or ``pytorch_model.bin``.
* **openblip** — ours: ``config.json`` (``"format": "openblip"``) + ``model.safetensors`` with official names.

Loading is strict: missing, unexpected or wrongly shaped tensors raise :class:`CheckpointError` naming the keys,
unless the caller passes ``strict=False`` and takes the :class:`LoadReport`. (The original ``load_checkpoint``
silently deletes shape-mismatched tensors; we never do.) The one deliberate transformation is the ViT position
embedding, resized (bicubic, as the original ``interpolate_pos_embed``) when the configured image size differs
from the checkpoint's; the report lists it.

When no config is given, the task and architecture are detected from the keys and tensor shapes. Head counts
cannot be read from shapes: when the shapes are those of a named architecture (``blip-base``, ``blip-large``,
``blip-tiny``) its head counts are used, otherwise head size 64 is assumed (true for every released model); pass
``config=`` (ours, or an official ``med_config.json`` through :func:`config_from_official`) for anything else.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from openblip.config import (
    BlipConfig,
    ConfigError,
    TextConfig,
    VisionConfig,
    get_arch_config,
    list_architectures,
    original_drop_path_rate,
)
from openblip.convert import hf as hfconv
from openblip.layers.vit_layers import resize_pos_embed
from openblip.models.blip import BlipBase, create_model

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names the file and the keys."""


@dataclass
class KeyReport:
    """How a state dict fitted a module: keys missing, unexpected, of the wrong shape, resized on the way in."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)

    #: how shape mismatches name the two sides in :meth:`problems`
    sides = ("checkpoint", "model")

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {_short(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): {_short(self.unexpected)}")
        if self.mismatched:
            given, expected = self.sides
            shown = ", ".join(f"{k}: {given} {list(a)} vs {expected} {list(b)}" for k, a, b in self.mismatched[:10])
            parts.append(f"shape mismatches ({len(self.mismatched)}): {shown}")
        return "; ".join(parts)


@dataclass
class LoadReport(KeyReport):
    """What loading did. Empty lists mean a perfect, strict fit."""

    filled: list[str] = field(default_factory=list)  # keys given a default value (e.g. HF files have no `temp`)
    training_keys: list[str] = field(default_factory=list)  # momentum copies / queues set aside
    training_state: dict[str, torch.Tensor] = field(default_factory=dict)  # those tensors, when for_training


def _short(keys: list[str], n: int = 10) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


# --------------------------------------------------------------------------------------------------------------
# reading raw state dicts


def read_torch_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from an official ``.pth`` or a ``pytorch_model.bin``, with ``weights_only=True``."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to unpickle: the file holds objects other than tensors and plain containers "
            f"(only weights_only loading is allowed, so nothing in it was executed). Detail: {str(e)[:300]}"
        ) from e
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: {e}") from e
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: expected a state dict (or {{'model': state_dict}}), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {_short([str(b) for b in bad])}")
    return dict(obj)


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from e


def _read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / "model.safetensors.index.json"
    if (directory / WEIGHTS_NAME).is_file():
        return read_safetensors(directory / WEIGHTS_NAME)
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_safetensors(directory / shard))
        return state
    if (directory / "pytorch_model.bin").is_file():
        return read_torch_file(directory / "pytorch_model.bin")
    raise CheckpointError(f"{directory}: no model.safetensors, sharded safetensors or pytorch_model.bin")


@dataclass
class RawCheckpoint:
    """A state dict in official/openblip names, with what its file told us about the model."""

    state: dict[str, torch.Tensor]
    layout: str  # "official" | "hf" | "openblip"
    config: BlipConfig | None = None
    temp: float | None = None  # HF layout: the ITC temperature stored in config.json, if any
    source: str = ""


def read_checkpoint(path: str | Path, task: str | None = None) -> RawCheckpoint:
    """Read any supported layout from a file or directory into official/openblip key names."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        cfg_path = path / CONFIG_NAME
        if not cfg_path.is_file():
            raise CheckpointError(f"{path}: a model directory needs a {CONFIG_NAME}")
        try:
            data = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cfg_path}: invalid JSON: {e}") from e
        if data.get("format") == "openblip":
            try:
                config = BlipConfig.from_dict(data)
            except (ConfigError, TypeError) as e:
                raise CheckpointError(f"{cfg_path}: {e}") from e
            if task and task != config.task and not (task == "itm" and config.task == "retrieval"):
                config = config.replace(task=task)
            return RawCheckpoint(read_safetensors(path / WEIGHTS_NAME), "openblip", config, source=str(path))
        if data.get("model_type") == "blip":
            try:
                config, temp = hfconv.from_hf_config(data, task)
            except hfconv.ConversionError as e:
                raise CheckpointError(f"{cfg_path}: {e}") from e
            try:
                state = hfconv.from_hf_state_dict(_read_hf_weights(path))
            except hfconv.ConversionError as e:
                raise CheckpointError(f"{path}: {e}") from e
            return RawCheckpoint(state, "hf", config, temp, source=str(path))
        raise CheckpointError(f"{cfg_path}: neither an openblip config nor a Hugging Face BLIP config (model_type)")
    if path.suffix == ".safetensors":
        state = read_safetensors(path)
    else:
        state = read_torch_file(path)
    if any(k.startswith("vision_model.") for k in state):
        try:
            return RawCheckpoint(hfconv.from_hf_state_dict(state), "hf", source=str(path))
        except hfconv.ConversionError as e:
            raise CheckpointError(f"{path}: {e}") from e
    return RawCheckpoint(state, "official", source=str(path))


# --------------------------------------------------------------------------------------------------------------
# detecting task and architecture from keys and shapes


def _max_index(state: dict[str, torch.Tensor], pattern: str) -> int:
    found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    return max(found) + 1 if found else 0


def detect_task(state: dict[str, torch.Tensor]) -> str:
    """The task whose model class owns exactly these modules (training-only keys ignored)."""
    heads = {k.split(".", 1)[0] for k in state if not hfconv.is_training_only_key(k)}
    if "visual_encoder" not in heads:
        raise CheckpointError("not a BLIP checkpoint: no visual_encoder.* keys")
    if "cls_head" in heads:
        return "nlvr"
    if "itm_head" in heads:
        return "pretrain" if "text_decoder" in heads else "retrieval"
    if "text_decoder" in heads:
        return "vqa" if "text_encoder" in heads else "caption"
    if "text_encoder" in heads:
        return "feature"
    raise CheckpointError(f"cannot tell the task from the top-level modules {sorted(heads)}")


def detect_config(state: dict[str, torch.Tensor], task: str | None = None) -> BlipConfig:
    """A :class:`BlipConfig` from tensor shapes. Head counts assume head size 64 (all released models)."""
    task = task or detect_task(state)
    try:
        pos = state["visual_encoder.pos_embed"]
        patch_w = state["visual_encoder.patch_embed.proj.weight"]
    except KeyError as e:
        raise CheckpointError(f"cannot detect the vision architecture: missing {e}") from e
    width, patch = pos.shape[-1], patch_w.shape[-1]
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    depth = _max_index(state, r"visual_encoder\.blocks\.(\d+)\.")
    mlp = state.get("visual_encoder.blocks.0.mlp.fc1.weight")
    vision = VisionConfig(
        image_size=grid * patch,
        patch_size=patch,
        width=width,
        depth=depth,
        num_heads=max(1, width // 64),
        mlp_ratio=(mlp.shape[0] / width) if mlp is not None else 4.0,
        drop_path_rate=original_drop_path_rate(width, task),
    )
    prefix = next(
        (p for p in ("text_encoder.", "text_decoder.bert.") if f"{p}embeddings.word_embeddings.weight" in state), None
    )
    if prefix is None:
        raise CheckpointError("cannot detect the text architecture: no word embeddings found")
    words = state[f"{prefix}embeddings.word_embeddings.weight"]
    hidden = words.shape[1]
    text = TextConfig(
        vocab_size=words.shape[0],
        hidden_size=hidden,
        num_layers=_max_index(state, re.escape(prefix) + r"encoder\.layer\.(\d+)\."),
        num_heads=max(1, hidden // 64),
        intermediate_size=state[f"{prefix}encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state[f"{prefix}embeddings.position_embeddings.weight"].shape[0],
    )
    extra: dict[str, Any] = {}
    if "vision_proj.weight" in state:
        extra["embed_dim"] = state["vision_proj.weight"].shape[0]
    if task == "nlvr":
        merged = [
            int(m.group(1)) for k in state if (m := re.match(r"text_encoder\.encoder\.layer\.(\d+)\..*merge_layer", k))
        ]
        extra["nlvr_merge_from_layer"] = min(merged) if merged else text.num_layers
    # a named architecture with exactly these shapes supplies its head counts; otherwise head size 64
    arch = "custom"
    shape = (width, depth, patch, vision.mlp_ratio, hidden, text.num_layers, text.intermediate_size)
    for name in list_architectures():
        named = get_arch_config(name)
        v, t = named.vision, named.text
        if shape == (v.width, v.depth, v.patch_size, v.mlp_ratio, t.hidden_size, t.num_layers, t.intermediate_size):
            arch = name
            vision.num_heads, text.num_heads = v.num_heads, t.num_heads
            break
    return BlipConfig(task=task, arch=arch, vision=vision, text=text, **extra)


def config_from_official(
    med_config: str | Path | dict, vit: str = "base", image_size: int = 384, **kw: Any
) -> BlipConfig:
    """A config from an official ``med_config.json`` (path or dict) plus the ViT settings of the recipe YAML."""
    data = json.loads(Path(med_config).read_text()) if not isinstance(med_config, dict) else med_config
    cfg = get_arch_config(f"blip-{vit}", image_size=image_size, **kw)
    return cfg.replace(text=TextConfig.from_med_config(data))


# --------------------------------------------------------------------------------------------------------------
# fitting a state dict to a model


def tied_groups(model: nn.Module) -> list[list[str]]:
    """Groups of state-dict keys that name the same tensor (tied LM head, encoder/decoder sharing)."""
    by_ptr: dict[tuple[int, int], list[str]] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        by_ptr.setdefault((value.data_ptr(), value.numel()), []).append(key)
    return [keys for keys in by_ptr.values() if len(keys) > 1]


def check_position_ids(state: dict[str, torch.Tensor], error: type[Exception], source: str) -> None:
    """Drop ``*.embeddings.position_ids`` (stored by official files) after checking each is the identity arange."""
    for key in [k for k in state if k.endswith("embeddings.position_ids")]:
        value = state.pop(key)
        if not torch.equal(value.flatten().long().cpu(), torch.arange(value.numel())):
            raise error(f"{source}: {key} is not 0..{value.numel() - 1}; position ids were modified")


def compare_keys(
    own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], report: KeyReport, pos_embed_key: str
) -> None:
    """Fill ``report`` with how ``state`` fits ``own``, first resizing ``pos_embed_key`` to the module's grid.

    The ViT position embedding is the one tensor resized rather than refused (bicubic, CLS row kept, as the
    original ``interpolate_pos_embed``); every other difference is reported.
    """
    key = pos_embed_key
    if key in state and key in own and state[key].shape != own[key].shape and state[key].ndim == 3:
        if state[key].shape[-1] == own[key].shape[-1]:
            old = list(state[key].shape)
            state[key] = resize_pos_embed(state[key], own[key].shape[1] - 1)
            report.resized.append(f"{key}: {old} -> {list(state[key].shape)} (bicubic)")
    report.missing = sorted(k for k in own if k not in state)
    report.unexpected = sorted(k for k in state if k not in own)
    report.mismatched = [
        (k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state and state[k].shape != own[k].shape
    ]


def fit_state_dict(
    model: BlipBase,
    state: dict[str, torch.Tensor],
    strict: bool = True,
    for_training: bool = False,
    source: str = "checkpoint",
) -> LoadReport:
    """Load ``state`` (official names) into ``model`` and report exactly what happened.

    Training-only tensors are set aside (kept in ``report.training_state`` when ``for_training``).
    ``*.embeddings.position_ids`` buffers of official files must be the identity ``arange`` and are dropped.
    """
    report = LoadReport()
    state = dict(state)
    for key in list(state):
        if hfconv.is_training_only_key(key):
            value = state.pop(key)
            report.training_keys.append(key)
            if for_training:
                report.training_state[key] = value

    check_position_ids(state, CheckpointError, source)
    own = model.state_dict()
    # tied tensors: one stored copy is enough; several stored copies must agree
    for group in tied_groups(model):
        present = [k for k in group if k in state]
        if not present:
            continue
        first = state[present[0]]
        for other in present[1:]:
            if state[other].shape != first.shape or not torch.equal(state[other], first):
                raise CheckpointError(
                    f"{source}: {present[0]} and {other} are tied in the model but differ in the file"
                )
        for k in group:
            state.setdefault(k, first)

    compare_keys(own, state, report, "visual_encoder.pos_embed")
    if strict and not report.ok:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__} ({model.config.task}): {report.problems()}"
        )
    good = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    with torch.no_grad():
        model.load_state_dict(good, strict=False)
    return report


# --------------------------------------------------------------------------------------------------------------
# public entry points


def load_model(
    path: str | Path,
    task: str | None = None,
    config: BlipConfig | str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    image_size: int | None = None,
    strict: bool = True,
    for_training: bool = False,
    return_report: bool = False,
) -> BlipBase | tuple[BlipBase, LoadReport]:
    """Load a local checkpoint (any layout) into its task model.

    Args:
        path: an official ``.pth``, a ``.safetensors``/``.bin`` file, an HF directory or an openblip directory.
        task: the task model to build; detected from the keys when omitted. A ``pretrain`` checkpoint can be
            loaded as ``caption``, ``retrieval``, ``vqa`` or ``feature`` (the other modules are then reported
            as unexpected, so pass ``strict=False``), as fine-tuning starts do.
        config: a :class:`BlipConfig` or the path of one; detected when omitted (head size 64 assumed).
        device, dtype: where and in which floating dtype the model lives.
        image_size: run at another image size (the position embedding is resized, as the original does).
        strict: raise on any missing/unexpected/mismatched tensor. With ``False`` the caller gets the report.
        for_training: keep momentum copies and queues in ``report.training_state``.
        return_report: return ``(model, report)``.
    """
    raw = read_checkpoint(path, task)
    if isinstance(config, (str, Path)):
        config = BlipConfig.from_json(config)
    if config is None:
        config = raw.config
        if config is None:
            config = detect_config(raw.state, task if task not in (None, "itm") else None)
    if task and config.task != task:
        config = config.replace(task=task)
    if image_size is not None and image_size != config.vision.image_size:
        config = config.replace(vision=VisionConfig(**{**config.vision.__dict__, "image_size": image_size}))
    model = create_model(config)
    state = raw.state
    report = LoadReport()
    if "temp" in dict(model.named_parameters()) and "temp" not in state:
        state = {**state, "temp": torch.tensor(raw.temp if raw.temp is not None else config.temp)}
        if raw.temp is None:
            report.filled.append(
                f"temp = {config.temp} (the file has no ITC temperature; 0.07 is BLIP's initial value)"
            )
    fitted = fit_state_dict(model, state, strict=strict, for_training=for_training, source=raw.source)
    fitted.filled = report.filled + fitted.filled
    model.eval()
    set_precision(model, dtype, device)
    return (model, fitted) if return_report else model


#: ``dtype`` names that keep the text side in float32 and run only the image encoder in a 16-bit dtype.
VISION_ONLY_DTYPES = {
    "bfloat16-vision": torch.bfloat16,
    "bf16-vision": torch.bfloat16,
    "float16-vision": torch.float16,
    "fp16-vision": torch.float16,
}


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
        "half": torch.float16,
    }
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names) + sorted(VISION_ONLY_DTYPES)}")
    return names[dtype]


def set_precision(model: nn.Module, dtype: torch.dtype | str | None, device: str | torch.device | None = None):
    """Move ``model`` to ``device`` and ``dtype``, in place; returns it.

    ``dtype`` is a torch dtype or a name (``float32``, ``bfloat16``, ``float16``; ``None`` keeps the current one),
    or one of :data:`VISION_ONLY_DTYPES` (``"bfloat16-vision"``): the image encoder in that 16-bit dtype and
    everything else in float32. The ViT is about 80% of a beam-3 caption's FLOPs at 384 px (111 of ~143 GFLOP), so
    this keeps part of the bfloat16 speed-up (base model, beam 3: 1.30x float32 against 1.52x; against MKL float32,
    before the float32 linears moved to oneDNN, 1.70x against 2.35x) while the step-by-step
    decoder, whose arg-max over close beams a 16-bit rounding can flip, stays in float32 (measured on the demo's
    trained models: captions identical to float32's on 0.98-0.99 of the test scenes against 0.91-0.96 for a
    whole-model bfloat16; see ``benchmarks/README.md``). :meth:`BlipBase.encode_image` hands the text side its
    tokens in the text side's dtype.
    """
    if isinstance(dtype, str) and dtype in VISION_ONLY_DTYPES:
        model.to(device=device, dtype=torch.float32)
        vision = getattr(model, "visual_encoder", None)
        if vision is None:
            raise ValueError(f"dtype {dtype!r} needs a model with an image encoder, got {type(model).__name__}")
        vision.to(dtype=VISION_ONLY_DTYPES[dtype])
        _warn_if_emulated(vision, VISION_ONLY_DTYPES[dtype], dtype)
        return model
    target = _dtype(dtype)
    model = model.to(device=device, dtype=target)
    if target is not None:
        _warn_if_emulated(model, target, dtype)
    return model


class SlowPrecisionWarning(UserWarning):
    """A 16-bit dtype was asked for on a CPU that has no native instructions for it (it will be slower)."""


def cpu_supports(dtype: torch.dtype) -> bool:
    """Whether this CPU multiplies ``dtype`` matrices natively (oneDNN: AVX-512 BF16 / AMX for bfloat16, AVX-512
    FP16 / AMX-FP16 for float16). Without them PyTorch falls back to kernels far slower than float32."""
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if dtype == torch.float16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return True


def _warn_if_emulated(module: nn.Module, dtype: torch.dtype, name: object) -> None:
    param = next(module.parameters(), None)
    if param is None or param.device.type != "cpu" or cpu_supports(dtype):
        return
    warnings.warn(
        f"dtype {name!r}: this CPU has no native {str(dtype).removeprefix('torch.')} matrix multiply (AVX-512 BF16 / "
        "AMX / AVX-512 FP16), so PyTorch emulates it and the model runs many times slower than in float32 (a "
        "1024 x 1024 bfloat16 matmul measured 0.8 GFLOP/s against float32's 93 on a 2-core AVX2 machine); use "
        "float32 here",
        SlowPrecisionWarning,
        stacklevel=3,
    )


def _unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with one entry per tied group (safetensors refuses shared storage)."""
    state = model.state_dict()
    for group in tied_groups(model):
        for key in group[1:]:
            state.pop(key, None)
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_pretrained(model: BlipBase, path: str | Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (openblip layout) into directory ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(_unique_state(model), tmp, metadata={"format": "pt"}))
    _atomic_write(path / CONFIG_NAME, lambda tmp: model.config.to_json(tmp))
    return path


def save_official(model: BlipBase, path: str | Path) -> Path:
    """Write an official-layout ``.pth`` (``{'model': state_dict}``, with the ``position_ids`` buffers)."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # remove_duplicate=False: a pretrain model shares one embeddings module between text_encoder and
    # text_decoder.bert, and the official file stores the buffer under both names
    for name, module in model.named_modules(remove_duplicate=False):
        if hasattr(module, "position_ids") and name.endswith("embeddings"):
            state[f"{name}.position_ids"] = module.position_ids.detach().cpu().clone()
    _atomic_write(path, lambda tmp: torch.save({"model": state}, tmp))
    return path


def save_hf(model: BlipBase, path: str | Path) -> Path:
    """Write a transformers-loadable directory (``config.json`` + ``model.safetensors``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    task = "retrieval" if model.config.task == "itm" else model.config.task
    try:
        temp = float(model.temp.detach()) if hasattr(model, "temp") else None
        hf_config = hfconv.to_hf_config(model.config, temp)
        state = hfconv.to_hf_state_dict(_unique_state(model), task)
    except hfconv.ConversionError as e:
        raise CheckpointError(str(e)) from e
    _atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    _atomic_write(path / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(hf_config, indent=2) + "\n"))
    return path


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    to: str = "openblip",
    task: str | None = None,
    strict: bool = True,
    return_report: bool = False,
) -> Path | tuple[Path, LoadReport]:
    """Convert a checkpoint between layouts (``to`` = ``openblip``, ``hf`` or ``official``).

    Only the ``task`` model is written: momentum encoders and queues of a retrieval or pre-training file (training
    state) are left out, and listed in the report's ``training_keys``. ``strict=False`` also converts a part of a
    checkpoint (e.g. ``task="caption"`` of a pre-training file, as Hugging Face built
    ``Salesforce/blip-image-captioning-base`` from ``model_base_capfilt_large.pth``); the report's ``unexpected``
    lists what was left out. ``return_report``: return ``(path, report)``.
    """
    if to not in ("openblip", "hf", "official"):
        raise ValueError(f"unknown target layout {to!r}; use openblip, hf or official")
    model, report = load_model(src, task=task, strict=strict, return_report=True)
    if not strict and (report.missing or report.mismatched):  # a part may be left out, never made up
        raise CheckpointError(f"{src}: does not fit {type(model).__name__} ({model.config.task}): {report.problems()}")
    save = {"openblip": save_pretrained, "hf": save_hf, "official": save_official}[to]
    out = save(model, dst)
    return (out, report) if return_report else out
