"""Shared defaults of the recipes and the smoke variant's synthetic world."""

from __future__ import annotations

import copy
from typing import Any

#: Keys every recipe config has, with the values the original scripts use unless a recipe says otherwise.
BASE: dict[str, Any] = {
    # model
    "arch": "blip-base",
    "drop_path_rate": None,  # None: the architecture's (0 for ViT-B, always 0.1 for ViT-L)
    "text_dropout": None,  # None: 0.1 (med_config.json)
    "grad_ckpt_layers": 0,  # vit_ckpt_layer: gradient checkpointing of the last N ViT blocks
    "init": None,  # BLIP checkpoint to fine-tune (registry name or path)
    "init_text": None,  # BERT checkpoint (pre-training from scratch)
    "init_vision": None,  # DeiT/timm ViT checkpoint (pre-training from scratch)
    # data (paths relative to data_root / ann_root unless absolute; see openblip.train.recipes.resolve_paths)
    "data_root": None,
    "ann_root": "annotation",
    "image_root": None,  # default: data_root
    "train_files": [],
    "val_file": None,
    "test_file": None,
    "min_scale": 0.5,  # RandomResizedCrop scale=(min_scale, 1)
    "randaug": True,
    "max_words": 30,
    "num_workers": 4,
    "strict": False,
    # optimisation
    "batch_size": 32,  # per process (per GPU), as the original configs
    "batch_size_test": 64,
    "grad_accum": 1,
    "lr": 1e-5,
    "min_lr": 0.0,
    "weight_decay": 0.05,
    "schedule": "cosine_epoch",
    "epochs": 5,
    "max_steps": None,
    "clip_grad_norm": None,
    "bf16": False,
    "seed": 42,
    "deterministic": False,
    "device": "auto",
    "num_threads": None,  # torch.set_num_threads (None: torch's default)
    # evaluation
    "eval_kind": None,
    "eval_every": None,
    "eval_at_epoch_end": True,
    "eval_max_items": None,
    "test_at_end": True,
    "best_metric": None,
    # checkpoints and logging
    "save_every": None,
    "save_at_epoch_end": True,
    "keep_last": 3,
    "tensorboard": False,
    "progress": True,
}

#: The synthetic world a smoke run trains on (generated into the data root when it holds none).
SMOKE_WORLD = {"n_train": 16, "n_val": 4, "n_test": 4, "image_size": 64, "seed": 0}

#: Settings every smoke variant shares: blip-tiny at 32 px, batches of 4, a few steps, no workers, no init.
SMOKE: dict[str, Any] = {
    "arch": "blip-tiny",
    "image_size": 32,
    "init": None,
    "ann_root": "annotations",
    "batch_size": 4,
    "batch_size_test": 8,
    "num_workers": 0,
    "epochs": 2,
    "eval_max_items": 4,
    "k_test": 4,
    "test_at_end": False,
    "keep_last": 2,
    "grad_ckpt_layers": 0,
    "num_threads": 1,  # tiny tensors: one thread is fastest (and immune to a busy machine)
    "smoke_world": SMOKE_WORLD,
}


def make(recipe: str, task: str, **values: Any) -> dict[str, Any]:
    """A config: :data:`BASE` updated with ``values``."""
    cfg = copy.deepcopy(BASE)
    cfg.update(recipe=recipe, task=task)
    cfg.update(copy.deepcopy(values))
    return cfg


def smoke(cfg: dict[str, Any], **values: Any) -> dict[str, Any]:
    """The smoke variant of ``cfg``: :data:`SMOKE` plus recipe-specific ``values``."""
    out = copy.deepcopy(cfg)
    out.update(copy.deepcopy(SMOKE))
    out.update(copy.deepcopy(values))
    out["variant"] = "smoke"
    return out
