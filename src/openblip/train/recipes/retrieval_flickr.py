"""Flickr30k image-text retrieval fine-tuning (``train_retrieval.py`` + ``configs/retrieval_flickr.yaml``).

Launch (8 GPUs)::

    torchrun --nproc_per_node=8 -m openblip.train.main --recipe retrieval_flickr --data-root /data/flickr30k \\
        --init blip-base-pretrain --out runs/retrieval_flickr

Annotations ``flickr30k_{train,val,test}.json`` from ``<data-root>/annotation``.

As :mod:`~openblip.train.recipes.retrieval_coco` except: ITM negatives from the local batch only
(``negative_all_rank: False``), ``k_test`` 128, ViT-L gradient checkpointing of 10 blocks. ViT-B: batch 32 (test
64), lr 1e-5, 6 epochs, grad-ckpt 4 blocks; ViT-L: batch 16 (test 32), lr 5e-6.

Expected (paper, Flickr 1k test, spec §5.2; 129M init): TR@1/5/10 **97.3 / 99.9 / 100.0**, IR@1/5/10 **87.3 / 97.6 /
98.9** (ViT-L: 97.4/99.8/99.9, 87.6/97.7/99.0). Zero-shot Flickr numbers use the COCO-finetuned model instead
(``openblip eval``), not this recipe.

Multi-GPU note: ITC and ITM (local negatives) differ by design between multi- and single-process runs.

Variant ``smoke``: blip-tiny on the synthetic world, queue 16, k_test 4.
"""

from __future__ import annotations

from typing import Any

from openblip.train.recipes.retrieval_coco import base_config, select_variant

NAME = "retrieval_flickr"
TASK = "retrieval"

EXPECTED = {
    "base (129M init)": {
        "test/txt_r1": 97.3,
        "test/txt_r5": 99.9,
        "test/txt_r10": 100.0,
        "test/img_r1": 87.3,
        "test/img_r5": 97.6,
        "test/img_r10": 98.9,
    },
    "large": {
        "test/txt_r1": 97.4,
        "test/txt_r5": 99.8,
        "test/txt_r10": 99.9,
        "test/img_r1": 87.6,
        "test/img_r5": 97.7,
        "test/img_r10": 99.0,
    },
}


def get_config(arg: str | None = None) -> dict[str, Any]:
    """The recipe: ``None`` (ViT-B), ``"large"`` (ViT-L) or ``"smoke"``."""
    cfg = base_config(
        NAME,
        False,
        128,
        {
            "train_files": ["flickr30k_train.json"],
            "val_file": "flickr30k_val.json",
            "test_file": "flickr30k_test.json",
        },
    )
    return select_variant(NAME, cfg, arg, EXPECTED, large_grad_ckpt_layers=10)
