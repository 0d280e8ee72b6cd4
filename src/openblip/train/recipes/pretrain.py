"""Pre-training: ITC + ITM + LM (``pretrain.py`` + ``configs/pretrain.yaml``).

Launch (the config's 8 GPUs; the paper used 2 nodes x 16)::

    torchrun --nproc_per_node=8 -m openblip.train.main --recipe pretrain --data-root / \\
        --ann-root /data/blip/annotation --out runs/pretrain

``train_files`` (``--set train_files='["coco_karpathy_train.json", "vg_caption.json", "cc3m.json"]'``) are lists
of ``{"image": path, "caption": str}`` (relative to ``--ann-root``); image paths are joined to ``--data-root``
(absolute paths stay as they are). ``--set laion_path=DIR`` cycles one LAION json shard per epoch, as the
original.

Original settings: ViT-B/16 at **224 px** initialised from DeiT-base (``deit_base_patch16_224-b5f2ef4d.pth``),
text encoder and decoder from ``bert-base-uncased`` (vocabulary resized to 30524; cross-attention random;
decoder shares all but self-attention with the encoder); crop ``min_scale`` **0.2**; captions
``pre_caption(., 30)`` padded to ``max_length`` 30; batch 75 per GPU x 8 = 600 (the paper: 2880 = 90 x 32, issue
#42); AdamW weight decay 0.05; learning rate warm-up 1e-6 -> **3e-4** over 3000 steps in epoch 0, then per-epoch
``max(1e-6, 3e-4 * 0.9**epoch)`` (the paper says "linear decay, rate 0.85": the code's exponential 0.9 is used);
20 epochs; queues of 57600, momentum 0.995, alpha 0.4 ramped from 0 over the first **2** epochs; fp32; no
evaluation; a checkpoint every epoch. Variant ``large``: ViT-L initialised from timm ``vit_large_patch16_224_in21k``
(an ImageNet-21k ``.npz``), lr 2e-4 (paper; batch 2400), gradient checkpointing (its ViT-L drop-path is 0.1).

Initial weights: ``init_text`` / ``init_vision`` take a local file or directory, an ``https://`` URL (cached in
``$OPENBLIP_CACHE/init``) or a Hugging Face repo id (``bert-base-uncased``); see
:mod:`openblip.train.init_weights`. ``--init blip-base-pretrain`` continues from a released checkpoint instead.

Expected: the released ``model_base.pth`` (129M images) is the reference; the fine-tuned numbers of the other
recipes' docstrings follow from it. Issue #19 has the maintainer's per-epoch loss log.

**Multi-GPU exception (by design, as the original):** ITC contrasts each rank's batch with its *local* momentum
features plus the queue (which all ranks fill identically with all-gathered features), and ITM hard negatives are
sampled within each rank's *local* batch. A run on ``N`` processes is therefore not the same computation as one
process holding the whole global batch (unlike captioning, VQA and NLVR2); the queues stay identical on every
rank.

Variant ``smoke``: blip-tiny at 32 px from random init on the synthetic world's ``pretrain.json``, queue 16,
warm-up over 4 steps.
"""

from __future__ import annotations

from typing import Any

from openblip.train.recipes._common import make, smoke

NAME = "pretrain"
TASK = "pretrain"

DEIT_BASE_URL = "https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth"
#: timm 0.4.12's ``vit_large_patch16_224_in21k`` weights (Google's AugReg ImageNet-21k release; from memory).
VIT_LARGE_IN21K_URL = (
    "https://storage.googleapis.com/vit_models/augreg/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1.npz"
)


def get_config(arg: str | None = None) -> dict[str, Any]:
    """The recipe: ``None`` (ViT-B), ``"large"`` (ViT-L) or ``"smoke"``."""
    cfg = make(
        NAME,
        TASK,
        init=None,
        init_text="bert-base-uncased",
        init_vision=DEIT_BASE_URL,
        image_size=224,
        train_files=["coco_karpathy_train.json", "vg_caption.json"],
        laion_path=None,
        max_words=30,
        max_text_length=30,
        batch_size=75,
        lr=3e-4,
        min_lr=1e-6,
        schedule="pretrain",
        warmup_steps=3000,
        warmup_lr=1e-6,
        lr_decay_rate=0.9,
        epochs=20,
        min_scale=0.2,
        queue_size=57600,
        momentum=0.995,
        alpha=0.4,
        alpha_warmup_epochs=2,
        test_at_end=False,
        expected=None,
    )
    if arg in (None, "", "base"):
        return cfg
    if arg == "large":
        cfg.update(arch="blip-large", init_vision=VIT_LARGE_IN21K_URL, lr=2e-4, grad_ckpt_layers=12)
        return cfg
    if arg == "smoke":
        return smoke(
            cfg,
            init_text=None,
            init_vision=None,
            train_files=["pretrain.json"],
            queue_size=16,
            warmup_steps=4,
        )
    raise ValueError(f"unknown variant {arg!r} of {NAME}; use None, 'large' or 'smoke'")
