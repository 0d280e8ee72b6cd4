"""Training recipes: the original BLIP hyper-parameters, one module per task.

==================  ==========  ======================================================================
recipe              task        original script / config
==================  ==========  ======================================================================
``pretrain``        pretrain    ``pretrain.py`` / ``configs/pretrain.yaml``
``caption_coco``    caption     ``train_caption.py`` / ``configs/caption_coco.yaml``
``retrieval_coco``  retrieval   ``train_retrieval.py`` / ``configs/retrieval_coco.yaml``
``retrieval_flickr`` retrieval  ``train_retrieval.py`` / ``configs/retrieval_flickr.yaml``
``vqa``             vqa         ``train_vqa.py`` / ``configs/vqa.yaml``
``nlvr``            nlvr        ``train_nlvr.py`` / ``configs/nlvr.yaml``
==================  ==========  ======================================================================

Each module has ``get_config(arg=None) -> dict``: ``None`` for the ViT-B recipe, ``"large"`` for ViT-L (where the
paper has one) and ``"smoke"`` for a seconds-long CPU run of the tiny architecture on the synthetic world
(:func:`openblip.data.synthetic.generate_world`). Its docstring gives the launch command and the paper's result.

A config is a flat dictionary (keys in :data:`openblip.train.recipes._common.BASE` plus the task's own);
:func:`resolve_paths` turns its relative data paths into real ones.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

RECIPES = ("pretrain", "caption_coco", "retrieval_coco", "retrieval_flickr", "vqa", "nlvr")

_PATH_KEYS_SINGLE = ("val_file", "test_file", "answer_list")
_ROOT_KEYS = ("vqa_root", "vg_root", "laion_path")
#: Every config key :func:`resolve_paths` rewrites (a data path or root).
PATH_KEYS = ("data_root", "ann_root", "image_root", "train_files", *_PATH_KEYS_SINGLE, *_ROOT_KEYS)

#: The values of a recipe's ``task`` and ``eval_kind`` (``openblip.train.loop.build_objective`` and
#: ``build_eval_hooks`` dispatch on them; ``openblip train`` validates settings against them before any work).
TRAIN_TASKS = ("pretrain", "retrieval", "caption", "vqa", "nlvr")
EVAL_KINDS = ("retrieval", "vqa", "nlvr", "caption_loss", "caption")

#: Keys the trainer reads (:mod:`openblip.train.loop`, ``steps``, ``optim``, ``main``) that a recipe need not set:
#: they are valid for every recipe, besides :data:`~openblip.train.recipes._common.BASE` and the recipe's own.
OPTIONAL_KEYS = ("warmup_steps", "warmup_lr", "lr_decay_rate", "dist_timeout_min", "caption_loss_reduction", "out")


def get_recipe(name: str) -> ModuleType:
    """The recipe module ``openblip.train.recipes.<name>``."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    return importlib.import_module(f"openblip.train.recipes.{name}")


def get_config(name: str, variant: str | None = None) -> dict[str, Any]:
    """``get_recipe(name).get_config(variant)``."""
    return get_recipe(name).get_config(variant)


def known_keys(name: str) -> set[str]:
    """The config keys a run of recipe ``name`` understands: those of :data:`~openblip.train.recipes._common.BASE`,
    of any variant of the recipe (base, ``large``, ``smoke``) and :data:`OPTIONAL_KEYS`."""
    from openblip.train.recipes._common import BASE

    module = get_recipe(name)
    keys = set(BASE) | set(OPTIONAL_KEYS)
    for variant in (None, "large", "smoke"):
        try:
            keys |= set(module.get_config(variant))
        except ValueError:  # the recipe has no such variant
            continue
    return keys


def _under(root: str | os.PathLike | None, path: str | os.PathLike | None) -> str | None:
    if path is None:
        return None
    path = os.fspath(path)
    if os.path.isabs(path) or root is None:
        return path
    return os.path.join(os.fspath(root), path)


def resolve_paths(
    config: dict[str, Any], data_root: str | os.PathLike | None = None, ann_root: str | os.PathLike | None = None
) -> dict[str, Any]:
    """A copy of ``config`` with absolute-or-cwd-relative data paths.

    * ``data_root``: the argument, else ``config["data_root"]``;
    * ``ann_root``: the argument (as given), else ``config["ann_root"]`` under ``data_root``;
    * ``train_files``, ``val_file``, ``test_file``, ``answer_list``: under ``ann_root`` unless absolute;
    * ``image_root`` (and ``vqa_root``/``vg_root`` for VQA): under ``data_root``, default ``data_root``.
    """
    cfg = dict(config)
    root = os.fspath(data_root) if data_root is not None else cfg.get("data_root")
    cfg["data_root"] = root
    ann = os.fspath(ann_root) if ann_root is not None else _under(root, cfg.get("ann_root"))
    cfg["ann_root"] = ann
    cfg["train_files"] = [_under(ann, f) for f in cfg.get("train_files") or []]
    for key in _PATH_KEYS_SINGLE:
        if cfg.get(key):
            cfg[key] = _under(ann, cfg[key])
    cfg["image_root"] = _under(root, cfg["image_root"]) if cfg.get("image_root") else root
    for key in _ROOT_KEYS:
        if cfg.get(key):
            cfg[key] = _under(root, cfg[key])
    return cfg


def ensure_smoke_world(config: dict[str, Any], data_root: str | os.PathLike) -> Path:
    """Generate the smoke variant's synthetic world into ``data_root`` unless a ``world.json`` is there."""
    root = Path(data_root)
    if (root / "world.json").is_file():
        return root
    from openblip.data.synthetic import generate_world

    spec = dict(config.get("smoke_world") or {})
    generate_world(root, **spec)
    return root


def check_paths(config: dict[str, Any]) -> list[str]:
    """Data files the config names that do not exist (empty when everything is there)."""
    missing = [f for f in config.get("train_files") or [] if not os.path.exists(f)]
    for key in _PATH_KEYS_SINGLE:
        if config.get(key) and not os.path.exists(config[key]):
            missing.append(config[key])
    return missing
