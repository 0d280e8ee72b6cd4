"""NLVR2 fine-tuning (``train_nlvr.py`` + ``configs/nlvr.yaml``).

Launch (16 GPUs, as the original)::

    torchrun --nnodes=2 --nproc_per_node=8 ... -m openblip.train.main --recipe nlvr --data-root /data/nlvr2 \\
        --init blip-base-pretrain --out runs/nlvr

Annotations ``nlvr_train.json``, ``nlvr_dev.json`` (val), ``nlvr_test.json`` (test-P) from
``<data-root>/annotation``; image pairs under the data root.

Original settings: ``BLIP_NLVR`` (two cross-attentions per text layer, both initialised from the checkpoint's one;
``merge_layer`` and ``cls_head`` random) at 384 px, drop-path 0.1, from ``model_base.pth``; sentences
``pre_caption(., 40)``, tokenized ``longest``; training swaps the two images (and left/right in the sentence) with
probability 0.5; batch 16 per GPU x 16 (test 64), AdamW lr 3e-5, weight decay 0.05, per-epoch cosine to 0 over 15
epochs, crop ``min_scale`` 0.5; accuracy on dev and test-P each epoch, best epoch by dev accuracy.

Expected (paper, spec §5.2, 129M init): dev **82.48**, test-P **83.09** (14M: 82.67 / 82.30; CapFilt-L:
82.15 / 82.24). No ViT-L model was trained (no ``large`` variant).

Multi-GPU note: the cross-entropy is a mean over equally many sentences on every rank, so DDP's average equals
the single-process loss over the global batch.

Variant ``smoke``: blip-tiny at 32 px on the synthetic world's ``nlvr_{train,val}.json``.
"""

from __future__ import annotations

from typing import Any

from openblip.train.recipes._common import make, smoke

NAME = "nlvr"
TASK = "nlvr"

EXPECTED = {"base (129M init)": {"dev": 82.48, "test-P": 83.09}}


def get_config(arg: str | None = None) -> dict[str, Any]:
    """The recipe: ``None`` (ViT-B) or ``"smoke"``."""
    cfg = make(
        NAME,
        TASK,
        init="blip-base-pretrain",
        image_size=384,
        drop_path_rate=0.1,
        train_files=["nlvr_train.json"],
        val_file="nlvr_dev.json",
        test_file="nlvr_test.json",
        max_words=40,
        batch_size=16,
        batch_size_test=64,
        lr=3e-5,
        min_lr=0.0,
        epochs=15,
        min_scale=0.5,
        eval_kind="nlvr",
        best_metric="val/acc",
        expected=EXPECTED["base (129M init)"],
    )
    if arg in (None, "", "base"):
        return cfg
    if arg == "smoke":
        return smoke(
            cfg,
            train_files=["nlvr_train.json"],
            val_file="nlvr_val.json",
            test_file="nlvr_test.json",
            lr=1e-4,
            best_metric=None,
            expected=None,
        )
    raise ValueError(f"unknown variant {arg!r} of {NAME}; use None or 'smoke' (the paper has no ViT-L NLVR2 model)")
