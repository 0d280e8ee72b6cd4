"""COCO image-text retrieval fine-tuning (``train_retrieval.py`` + ``configs/retrieval_coco.yaml``).

Launch (8 GPUs)::

    torchrun --nproc_per_node=8 -m openblip.train.main --recipe retrieval_coco --data-root /data/coco \\
        --init blip-base-pretrain --out runs/retrieval_coco

Annotations ``coco_karpathy_{train,val,test}.json`` from ``<data-root>/annotation``; images under the data root.

Original settings: ITC (idx-aware targets, momentum distillation alpha 0.4 ramped from 0 over the first epoch,
queues of 57600) + ITM (hard negatives, never of the same image id, drawn from **all** ranks:
``negative_all_rank: True``); ViT-B/16 at 384 px with gradient checkpointing of the last 4 blocks; texts
``pre_caption(., 30)`` tokenized to ``max_length`` 35; batch 32 per GPU x 8 (test 64); AdamW lr 1e-5, weight decay
0.05, per-epoch cosine to 0 over 6 epochs; crop ``min_scale`` 0.5. Evaluation each epoch on Karpathy val and test:
ITC top-``k_test`` (256) re-ranked by ITM (score = ITM logit + cosine); best epoch by val ``r_mean``. The
pre-trained checkpoint's queues are loaded too (its ``idx_queue`` is missing and starts at -100), as the original.
Variant ``large``: ViT-L, batch 16 (test 32), lr 5e-6, gradient checkpointing of 12 blocks.

Expected (paper, COCO 5k test, spec §5.2; fine-tuned from the 129M ``model_base.pth``): TR@1/5/10 **81.9 / 95.4 /
97.8**, IR@1/5/10 **64.3 / 85.7 / 91.5** (14M: 80.6/95.2/97.6, 63.1/85.3/91.1; ViT-L: 82.4/95.4/97.9,
65.1/86.3/91.8).

Multi-GPU note: ITC uses each rank's momentum features plus the shared queue; ITM negatives come from all ranks
here, but the sampled indices depend on each rank's draws: multi-process trajectories differ from single-process
ones by design, as in the original.

Variant ``smoke``: blip-tiny at 32 px on the synthetic world, queue 16, k_test 4.
"""

from __future__ import annotations

from typing import Any

from openblip.train.recipes._common import make, smoke

NAME = "retrieval_coco"
TASK = "retrieval"

EXPECTED = {
    "base (129M init)": {
        "test/txt_r1": 81.9,
        "test/txt_r5": 95.4,
        "test/txt_r10": 97.8,
        "test/img_r1": 64.3,
        "test/img_r5": 85.7,
        "test/img_r10": 91.5,
    },
    "large": {
        "test/txt_r1": 82.4,
        "test/txt_r5": 95.4,
        "test/txt_r10": 97.9,
        "test/img_r1": 65.1,
        "test/img_r5": 86.3,
        "test/img_r10": 91.8,
    },
}


def base_config(name: str, negative_all_rank: bool, k_test: int, files: dict[str, Any]) -> dict[str, Any]:
    return make(
        name,
        TASK,
        init="blip-base-pretrain",
        image_size=384,
        **files,
        max_words=30,
        max_text_length=35,
        batch_size=32,
        batch_size_test=64,
        lr=1e-5,
        min_lr=0.0,
        epochs=6,
        min_scale=0.5,
        grad_ckpt_layers=4,
        queue_size=57600,
        momentum=0.995,
        alpha=0.4,
        alpha_warmup_epochs=1,
        negative_all_rank=negative_all_rank,
        k_test=k_test,
        eval_kind="retrieval",
        best_metric="val/r_mean",
    )


def smoke_variant(cfg: dict[str, Any]) -> dict[str, Any]:
    return smoke(
        cfg,
        train_files=["caption_train.json"],
        val_file="caption_val.json",
        test_file="caption_test.json",
        lr=1e-4,
        queue_size=16,
        best_metric=None,
        expected=None,
    )


def get_config(arg: str | None = None) -> dict[str, Any]:
    """The recipe: ``None`` (ViT-B), ``"large"`` (ViT-L) or ``"smoke"``."""
    cfg = base_config(
        NAME,
        True,
        256,
        {
            "train_files": ["coco_karpathy_train.json"],
            "val_file": "coco_karpathy_val.json",
            "test_file": "coco_karpathy_test.json",
        },
    )
    return select_variant(NAME, cfg, arg, EXPECTED, large_grad_ckpt_layers=12)


def select_variant(
    name: str, cfg: dict[str, Any], arg: str | None, expected: dict, large_grad_ckpt_layers: int
) -> dict[str, Any]:
    """The base, ``large`` or ``smoke`` variant of a retrieval recipe (shared by COCO and Flickr30k)."""
    cfg["expected"] = expected["base (129M init)"]
    if arg in (None, "", "base"):
        return cfg
    if arg == "large":
        cfg.update(
            arch="blip-large",
            init="blip-large-pretrain",
            batch_size=16,
            batch_size_test=32,
            lr=5e-6,
            grad_ckpt_layers=large_grad_ckpt_layers,
            expected=expected["large"],
        )
        return cfg
    if arg == "smoke":
        return smoke_variant(cfg)
    raise ValueError(f"unknown variant {arg!r} of {name}; use None, 'large' or 'smoke'")
