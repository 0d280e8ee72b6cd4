"""Initial weights for training: BLIP checkpoints, or BERT + ViT checkpoints for pre-training from scratch.

**From a BLIP checkpoint** (:func:`init_from_blip`): any layout :func:`openblip.load` reads (registry name, official
``.pth``, Hugging Face or openblip directory). Fine-tuning starts as the original ``load_checkpoint`` does: the
position embedding is resized bicubically to the recipe's image size, modules the task model does not have are
ignored (e.g. the pre-training decoder when fine-tuning retrieval), momentum encoders and queues are returned as
the training state for the objective. Unlike the original, a tensor whose shape does not fit is an error naming
the key (the original drops it silently). For NLVR2 the single cross-attention of the checkpoint is copied into
both cross-attentions (``crossattention.self.* -> self0/self1``, ``crossattention.output.dense -> dense0/dense1``)
as ``blip_nlvr.load_checkpoint`` does; ``merge_layer`` and ``cls_head`` start random.

**From BERT and ViT checkpoints** (pre-training from scratch, ``BLIP_Pretrain.__init__``); the original used:

* ViT-B/16: DeiT-base ``deit_base_patch16_224-b5f2ef4d.pth`` (ImageNet-1k;
  ``https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth``), loaded with ``strict=False``;
* ViT-L/16: timm ``vit_large_patch16_224_in21k`` (ImageNet-21k; the original loads timm's JAX ``.npz`` with
  ``load_custom_pretrained``). :func:`vit_state_from_npz` converts such a file as timm's ``_load_weights`` does
  (written from timm's documented layout, not checked against the real file here); a PyTorch state dict of the
  same model (``timm.create_model(..., pretrained=True).state_dict()``) works too;
* text: Hugging Face ``bert-base-uncased`` (``BertModel`` for the encoder, ``BertLMHeadModel`` for the decoder).

Key mapping (best effort, documented):

* **ViT** (:func:`vit_state_from_timm`): timm/DeiT names equal ours without prefix (``cls_token``, ``pos_embed``,
  ``patch_embed.proj.*``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``, ``norm.*``); a
  ``{"model": ...}`` wrapper is removed; classifier and distillation parts (``head*``, ``pre_logits.*``,
  ``fc_norm.*``, ``dist_token``, the distillation row of ``pos_embed``) are dropped; ``pos_embed`` is resized
  bicubically when the grid differs.
* **BERT** (:func:`bert_state_from_hf`): the prefix ``bert.`` (``BertForMaskedLM``/``BertForPreTraining``/
  ``BertLMHeadModel``) or none (``BertModel``) is removed; old TF names ``LayerNorm.gamma/beta`` become
  ``weight/bias``. ``embeddings.{word,position}_embeddings``, ``embeddings.LayerNorm``,
  ``encoder.layer.N.attention.{self.{query,key,value},output.{dense,LayerNorm}}``, ``intermediate.dense``,
  ``output.{dense,LayerNorm}`` go into every text transformer of the model (``text_encoder`` and
  ``text_decoder.bert``); BERT has no cross-attention, so ``crossattention.*`` stays at its random init, as in
  the original. ``cls.predictions.{transform.dense,transform.LayerNorm,bias}`` become the decoder's LM head (its
  ``decoder.weight`` is tied to the word embeddings). Dropped: ``token_type_embeddings`` (MED has none),
  ``pooler.*``, ``cls.seq_relationship.*``, ``position_ids``.
* **Vocabulary**: BERT has 30522 tokens; BLIP adds ``[DEC]`` and ``[ENC]`` (30524). As transformers 4.15's
  ``resize_token_embeddings``, the two new embedding rows are drawn from ``N(0, initializer_range)`` and the LM
  bias is padded with zeros.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from openblip.checkpoint import LoadReport, fit_state_dict, read_checkpoint, read_safetensors, read_torch_file
from openblip.layers.vit_layers import resize_pos_embed
from openblip.models.blip import BlipBase
from openblip.models.text import BertLMHeadModel, BertModel
from openblip.models.vision import VisionTransformer


class InitError(ValueError):
    """Initial weights cannot be used; the message names the file and the keys."""


@dataclass
class InitReport:
    """What an initialisation from BERT/ViT weights did."""

    source: str
    loaded: list[str] = field(default_factory=list)  # model keys set from the file
    random: list[str] = field(default_factory=list)  # model keys of the target module left at random init
    ignored: list[str] = field(default_factory=list)  # file keys with no use here
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.source}: {len(self.loaded)} tensors loaded, {len(self.random)} left random"
        if self.ignored:
            more = ", ..." if len(self.ignored) > 4 else ""
            text += f", {len(self.ignored)} ignored ({', '.join(self.ignored[:4])}{more})"
        return text + "".join(f"; {n}" for n in self.notes)


def sincos_pos_embed_(visual_encoder: VisionTransformer, scale: float = 1.0) -> VisionTransformer:
    """Set the (still learned) ``pos_embed`` of a ViT trained from random weights to fixed 2-D sine-cosine values
    (half the channels encode the column, half the row, each as sin/cos at ``width / 4`` frequencies
    ``1 / 10000^(k / (width/4))``, as MAE and MoCo v3 do for from-scratch ViTs); the ``[CLS]`` row is zero.

    BLIP never trains its ViT from scratch (it starts from DeiT/ImageNet weights, whose position embedding is
    already trained); timm's random ``N(0, 0.02)`` start is ~50x weaker than the patch embeddings of these
    synthetic scenes, and then the model localises slowly. Measured on the demo's world (a ViT 64 px / patch 8 /
    width 128 / depth 3 trained 300 steps to name the colour and shape of the leftmost object): colour 0.98 with
    this start against 0.70 with timm's. Returns ``visual_encoder``.
    """
    pos = visual_encoder.pos_embed
    width = pos.shape[-1]
    if width % 4:
        raise ValueError(f"a 2-D sine-cosine position embedding needs a width divisible by 4, got {width}")
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    if grid * grid != pos.shape[1] - 1:
        raise ValueError(f"pos_embed has {pos.shape[1] - 1} patch rows, not a square grid")
    quarter = width // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )

    def encode(coord: torch.Tensor) -> torch.Tensor:
        angles = coord.flatten()[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([encode(cols), encode(rows)], dim=1) * scale  # patches in row-major order, as PatchEmbed
    with torch.no_grad():
        pos[0, 0].zero_()
        pos[0, 1:].copy_(table.to(pos.dtype))
    return visual_encoder


def read_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A flat tensor dict from ``.pth``/``.bin`` (``weights_only``; ``{"model": ...}`` unwrapped), ``.safetensors``
    or a directory holding ``model.safetensors`` (possibly sharded) or ``pytorch_model.bin``."""
    path = Path(path)
    if path.is_dir():
        if (path / "model.safetensors").is_file():
            return read_safetensors(path / "model.safetensors")
        index = path / "model.safetensors.index.json"
        if index.is_file():
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
                state.update(read_safetensors(path / shard))
            return state
        if (path / "pytorch_model.bin").is_file():
            return read_torch_file(path / "pytorch_model.bin")
        raise InitError(f"{path}: no model.safetensors or pytorch_model.bin")
    if not path.exists():
        raise InitError(f"{path}: no such file")
    if path.suffix == ".npz":
        return vit_state_from_npz(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return read_torch_file(path)


def fetch_init_file(spec: str | os.PathLike) -> Path:
    """A local path for ``spec``: an existing path as is; an ``http(s)://`` URL downloaded once into
    ``$OPENBLIP_CACHE/init`` (default ``~/.cache/openblip/init``); otherwise a Hugging Face repo id
    (``bert-base-uncased``) fetched with ``huggingface_hub`` (honours ``HF_HUB_OFFLINE``)."""
    text = os.fspath(spec)
    path = Path(text)
    if path.exists():
        return path
    if text.startswith(("http://", "https://")):
        cache = Path(os.environ.get("OPENBLIP_CACHE", Path.home() / ".cache" / "openblip")) / "init"
        target = cache / text.rstrip("/").rsplit("/", 1)[-1]
        if not target.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(target.suffix + ".part")
            torch.hub.download_url_to_file(text, str(tmp), progress=True)
            os.replace(tmp, target)
        return target
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", text):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, allow_patterns=["*.safetensors", "*.bin", "*.json", "*.txt"]))
        except Exception as e:  # noqa: BLE001 - one clear message for any hub failure
            raise InitError(
                f"{text!r} is not a local file and could not be fetched from the Hugging Face hub: {e}"
            ) from e
    raise InitError(f"{text}: no such file")


def _as_state(src: str | os.PathLike | dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(src, dict):
        state = dict(src)
        if "model" in state and isinstance(state["model"], dict):
            state = dict(state["model"])
        return state, "<state dict>"
    path = fetch_init_file(src)
    if path.is_dir() and (path / "model.safetensors").is_file() and (path / "pytorch_model.bin").is_file():
        return read_safetensors(path / "model.safetensors"), str(src)
    return read_state_file(path), str(src)


# ------------------------------------------------------------------------------------------------------------
# ViT


_VIT_DROP = re.compile(r"^(head(_dist)?\.|pre_logits\.|fc_norm\.|dist_token$)")


def vit_state_from_timm(state: dict[str, torch.Tensor], num_patches: int | None = None) -> dict[str, torch.Tensor]:
    """timm/DeiT ViT names -> ours (see the module docstring); ``pos_embed`` resized to ``num_patches``."""
    state = dict(state)
    for prefix in ("module.", "visual_encoder."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    distilled = "dist_token" in state
    out = {k: v for k, v in state.items() if not _VIT_DROP.match(k)}
    pos = out.get("pos_embed")
    if pos is not None:
        if distilled:  # DeiT-distilled: [CLS, DIST, patches] -> drop the distillation row
            pos = torch.cat([pos[:, :1], pos[:, 2:]], dim=1)
        if num_patches is not None and pos.shape[1] - 1 != num_patches:
            pos = resize_pos_embed(pos, num_patches)
        out["pos_embed"] = pos
    return out


def vit_state_from_npz(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A Google/JAX ViT ``.npz`` (``vit_large_patch16_224_in21k`` in timm 0.4.12) in timm names, with the key and
    layout conversion of timm's ``_load_weights`` (kernels transposed to ``[out, in]``, q/k/v stacked into ``qkv``;
    ``opt/target/`` prefixes accepted). Classifier and pre-logits weights are not read."""
    import numpy as np

    w = np.load(os.fspath(path))
    prefix = "opt/target/" if "opt/target/embedding/kernel" in w else ""

    def t(name: str, transpose: bool = True) -> torch.Tensor:
        a = w[prefix + name]
        if a.ndim == 4 and a.shape[0] == a.shape[1] == a.shape[2] == 1:
            a = a.flatten()
        if transpose:
            if a.ndim == 4:
                a = a.transpose([3, 2, 0, 1])
            elif a.ndim == 3:
                a = a.transpose([2, 0, 1])
            elif a.ndim == 2:
                a = a.transpose([1, 0])
        return torch.from_numpy(np.ascontiguousarray(a))

    if prefix + "embedding/kernel" not in w:
        raise InitError(f"{path}: not a ViT .npz (no embedding/kernel)")
    out = {
        "patch_embed.proj.weight": t("embedding/kernel"),
        "patch_embed.proj.bias": t("embedding/bias"),
        "cls_token": t("cls", transpose=False),
        "pos_embed": t("Transformer/posembed_input/pos_embedding", transpose=False),
        "norm.weight": t("Transformer/encoder_norm/scale"),
        "norm.bias": t("Transformer/encoder_norm/bias"),
    }
    i = 0
    while f"{prefix}Transformer/encoderblock_{i}/LayerNorm_0/scale" in w:
        bp = f"Transformer/encoderblock_{i}/"
        mha = bp + "MultiHeadDotProductAttention_1/"
        out[f"blocks.{i}.norm1.weight"] = t(bp + "LayerNorm_0/scale")
        out[f"blocks.{i}.norm1.bias"] = t(bp + "LayerNorm_0/bias")
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat(
            [t(f"{mha}{n}/kernel", transpose=False).flatten(1).T for n in ("query", "key", "value")]
        )
        out[f"blocks.{i}.attn.qkv.bias"] = torch.cat(
            [t(f"{mha}{n}/bias", transpose=False).reshape(-1) for n in ("query", "key", "value")]
        )
        out[f"blocks.{i}.attn.proj.weight"] = t(mha + "out/kernel").flatten(1)
        out[f"blocks.{i}.attn.proj.bias"] = t(mha + "out/bias")
        for r in range(2):
            out[f"blocks.{i}.mlp.fc{r + 1}.weight"] = t(f"{bp}MlpBlock_3/Dense_{r}/kernel")
            out[f"blocks.{i}.mlp.fc{r + 1}.bias"] = t(f"{bp}MlpBlock_3/Dense_{r}/bias")
        out[f"blocks.{i}.norm2.weight"] = t(bp + "LayerNorm_2/scale")
        out[f"blocks.{i}.norm2.bias"] = t(bp + "LayerNorm_2/bias")
        i += 1
    return out


def load_vit_weights(visual_encoder: VisionTransformer, src: str | os.PathLike | dict[str, torch.Tensor]) -> InitReport:
    """Load timm/DeiT ViT weights into ``visual_encoder`` (``strict=False`` as the original, but shape
    mismatches are errors and the report lists what stayed random)."""
    raw, source = _as_state(src)
    num_patches = visual_encoder.pos_embed.shape[1] - 1
    state = vit_state_from_timm(raw, num_patches)
    own = visual_encoder.state_dict()
    bad = [
        f"{k}: file {list(v.shape)} vs model {list(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad:
        raise InitError(f"{source}: ViT weights do not fit the model's vision tower: {'; '.join(bad[:5])}")
    usable = {k: v for k, v in state.items() if k in own}
    if not usable:
        raise InitError(f"{source}: no ViT tensors found (expected timm names like blocks.0.attn.qkv.weight)")
    with torch.no_grad():
        visual_encoder.load_state_dict(usable, strict=False)
    report = InitReport(source)
    report.loaded = sorted(f"visual_encoder.{k}" for k in usable)
    report.random = sorted(f"visual_encoder.{k}" for k in own if k not in usable)
    report.ignored = sorted(k for k in raw if k not in usable and k not in ("pos_embed",))
    return report


# ------------------------------------------------------------------------------------------------------------
# BERT


def _rename_bert_key(key: str) -> str:
    key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    return key


def bert_state_from_hf(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """Split a Hugging Face BERT state dict into ``(transformer, lm_head, ignored keys)`` in our names.

    ``transformer`` keys are ``BertModel`` keys (``embeddings.*``, ``encoder.layer.N.*``); ``lm_head`` keys are
    relative to ``cls.predictions`` (``transform.dense.*``, ``transform.LayerNorm.*``, ``bias``).
    """
    bert: dict[str, torch.Tensor] = {}
    head: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in state.items():
        k = _rename_bert_key(key)
        if k.startswith("bert."):
            k = k[len("bert.") :]
        if k.startswith("cls.predictions."):
            sub = k[len("cls.predictions.") :]
            if sub in ("decoder.weight", "decoder.bias"):
                ignored.append(key)  # tied to the word embeddings / the bias
            else:
                head[sub] = value
        elif k.startswith(("embeddings.", "encoder.layer.")):
            if k.endswith(("token_type_embeddings.weight", "position_ids")):
                ignored.append(key)
            else:
                bert[k] = value
        else:
            ignored.append(key)  # pooler, cls.seq_relationship, ...
    if not bert:
        raise InitError("no BERT transformer tensors found (expected keys like bert.encoder.layer.0.*)")
    return bert, head, ignored


def _resize_rows(weight: torch.Tensor, rows: int, std: float | None) -> torch.Tensor:
    """Pad (``N(0, std)`` rows, or zeros when ``std`` is None) or cut a ``[V, ...]`` tensor to ``rows``."""
    if weight.shape[0] == rows:
        return weight
    if weight.shape[0] > rows:
        return weight[:rows].clone()
    extra_shape = (rows - weight.shape[0], *weight.shape[1:])
    extra = torch.zeros(extra_shape, dtype=weight.dtype)
    if std is not None:
        extra.normal_(mean=0.0, std=std)
    return torch.cat([weight, extra], dim=0)


def _text_transformers(model: nn.Module) -> list[tuple[str, BertModel]]:
    out = []
    for name in ("text_encoder", "text_decoder"):
        module = getattr(model, name, None)
        if isinstance(module, BertModel):
            out.append((name, module))
        elif isinstance(module, BertLMHeadModel):
            out.append((f"{name}.bert", module.bert))
    return out


def load_bert_weights(model: BlipBase, src: str | os.PathLike | dict[str, torch.Tensor]) -> InitReport:
    """Initialise every text transformer of ``model`` (and the decoder's LM head) from BERT weights."""
    raw, source = _as_state(src)
    try:
        bert, head, ignored = bert_state_from_hf(raw)
    except InitError as e:
        raise InitError(f"{source}: {e}") from e
    report = InitReport(source, ignored=sorted(ignored))
    targets = _text_transformers(model)
    if not targets:
        raise InitError(f"{type(model).__name__} has no text transformer to initialise from BERT")
    std = model.config.text.initializer_range
    vocab = model.config.text.vocab_size
    word_key = "embeddings.word_embeddings.weight"
    if word_key in bert and bert[word_key].shape[0] != vocab:
        report.notes.append(f"word embeddings resized {bert[word_key].shape[0]} -> {vocab} (new rows ~ N(0, {std}))")
        bert[word_key] = _resize_rows(bert[word_key], vocab, std)
    loaded: set[str] = set()
    for prefix, module in targets:
        own = module.state_dict()
        bad = [
            f"{k}: file {list(v.shape)} vs model {list(own[k].shape)}"
            for k, v in bert.items()
            if k in own and v.shape != own[k].shape
        ]
        if bad:
            raise InitError(f"{source}: BERT weights do not fit {prefix}: {'; '.join(bad[:5])}")
        usable = {k: v for k, v in bert.items() if k in own}
        with torch.no_grad():
            module.load_state_dict(usable, strict=False)
        loaded.update(f"{prefix}.{k}" for k in usable)
        report.random += [f"{prefix}.{k}" for k in own if k not in usable and not k.endswith("position_ids")]
    decoder = getattr(model, "text_decoder", None)
    if isinstance(decoder, BertLMHeadModel) and head:
        pred = decoder.cls.predictions
        if "bias" in head and head["bias"].shape[0] != vocab:
            head["bias"] = _resize_rows(head["bias"], vocab, None)
        own = {k: v for k, v in pred.state_dict().items() if not k.startswith("decoder.")}
        bad = [
            f"{k}: {list(v.shape)} vs {list(own[k].shape)}"
            for k, v in head.items()
            if k in own and v.shape != own[k].shape
        ]
        if bad:
            raise InitError(f"{source}: BERT LM head does not fit text_decoder.cls: {'; '.join(bad)}")
        usable = {k: v for k, v in head.items() if k in own}
        with torch.no_grad():
            pred.load_state_dict(usable, strict=False)
        loaded.update(f"text_decoder.cls.predictions.{k}" for k in usable)
        decoder.tie_weights()
    report.loaded = sorted(loaded)
    report.random = sorted(set(report.random) - loaded)
    return report


# ------------------------------------------------------------------------------------------------------------
# BLIP checkpoints


def nlvr_state_from_blip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``blip_nlvr.load_checkpoint``'s renaming: one cross-attention -> the two of NLVR2 (copies)."""
    out = dict(state)
    for key, value in state.items():
        if ".crossattention.self." in key:
            out[key.replace(".crossattention.self.", ".crossattention.self0.")] = value
            out[key.replace(".crossattention.self.", ".crossattention.self1.")] = value
            del out[key]
        elif ".crossattention.output.dense." in key:
            out[key.replace(".crossattention.output.dense.", ".crossattention.output.dense0.")] = value
            out[key.replace(".crossattention.output.dense.", ".crossattention.output.dense1.")] = value
            del out[key]
    return out


def init_from_blip(model: BlipBase, name_or_path: str | os.PathLike, progress: bool = True) -> LoadReport:
    """Load a BLIP checkpoint into ``model`` (built from the recipe's config) for fine-tuning / continuing.

    Returns the :class:`~openblip.checkpoint.LoadReport`; ``report.training_state`` holds momentum encoders and
    queues for :meth:`openblip.train.objectives.MomentumQueues.load_training_state`. Raises
    :class:`InitError` on shape mismatches (other than the resized position embedding) and when nothing fits.
    """
    from openblip.api import resolve

    path, _, _ = resolve(name_or_path, progress=progress)
    raw = read_checkpoint(path, model.config.task)
    state = raw.state
    if model.config.task == "nlvr" and not any(".crossattention.self0." in k for k in state):
        state = nlvr_state_from_blip(state)
    report = fit_state_dict(model, state, strict=False, for_training=True, source=raw.source or str(path))
    if report.mismatched:
        shown = "; ".join(f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in report.mismatched[:5])
        raise InitError(
            f"{path}: {len(report.mismatched)} tensor(s) do not fit the {model.config.arch} {model.config.task} model "
            f"(wrong architecture for this recipe?): {shown}"
        )
    own = model.state_dict()
    if len(report.missing) >= len(own):
        raise InitError(f"{path}: no tensor of the checkpoint fits the {model.config.task} model")
    return report


def describe_load(report: LoadReport) -> str:
    """One line: what a BLIP-checkpoint initialisation left random / ignored."""
    parts = []
    if report.missing:
        parts.append(
            f"{len(report.missing)} tensor(s) left at random init ({', '.join(report.missing[:4])}"
            f"{', ...' if len(report.missing) > 4 else ''})"
        )
    if report.unexpected:
        heads = sorted({k.split(".", 1)[0] for k in report.unexpected})
        parts.append(f"{len(report.unexpected)} checkpoint tensor(s) unused ({', '.join(heads)})")
    if report.resized:
        parts.append("; ".join(report.resized))
    if report.training_state:
        parts.append(f"{len(report.training_state)} training-state tensor(s) (momentum encoders / queues)")
    return "; ".join(parts) if parts else "exact fit"
