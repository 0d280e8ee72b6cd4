"""VQA v2 fine-tuning (``train_vqa.py`` + ``configs/vqa.yaml``).

Launch (16 GPUs, as the original: two nodes of 8)::

    torchrun --nnodes=2 --nproc_per_node=8 ... -m openblip.train.main --recipe vqa --data-root /data/coco \\
        --set vg_root=/data/visual-genome --init blip-base-pretrain-capfilt-l --out runs/vqa

Annotations from ``<data-root>/annotation``: ``vqa_train.json``, ``vqa_val.json``, ``vg_qa.json`` (training, as the
original ``train_files``), ``vqa_test.json`` and ``answer_list.json``. ``--data-root`` (``vqa_root``) holds
``train2014/``, ``val2014/``, ``test2015/``; ``vg_root`` the Visual Genome ``image/`` folder.

Original settings: ViT-B/16 at **480 px**, drop-path 0.1, from ``model_base_capfilt_large.pth``; questions
``pre_question(., 50)``, tokenized ``longest``/``max_length=35`` with ``[ENC]``; answers ``longest`` with
``[DEC]``; per-answer label-smoothed LM loss summed over tokens, weighted (VQA: answer count / 10; VG: 0.2) and
divided by the batch size; batch 16 per GPU x 16 (test 32), AdamW lr 2e-5, weight decay 0.05, per-epoch cosine
to 0 over 10 epochs, crop ``min_scale`` 0.5. A checkpoint every epoch; no validation during training; the final
model answers ``vqa_test.json`` by **rank** inference over the answer list (``k_test`` 128), written to
``vqa_result_test.json`` for the EvalAI server.

Expected (paper, spec §5.2, CapFilt-L init): test-dev **78.25**, test-std **78.32** (14M: 77.54 / 77.62; 129M:
78.24 / 78.17). The paper has no ViT-L VQA model (no ``large`` variant).

Multi-GPU note: every rank holds the same number of questions, so the per-rank ``sum(w * loss) / B`` averaged by
DDP equals the single-process loss over the global batch.

Variant ``smoke``: blip-tiny at 32 px on the synthetic world (``vqa_train.json``), rank accuracy on 4 questions
of ``vqa_val.json`` at each epoch end.
"""

from __future__ import annotations

from typing import Any

from openblip.train.recipes._common import make, smoke

NAME = "vqa"
TASK = "vqa"

EXPECTED = {"base (CapFilt-L init)": {"test-dev": 78.25, "test-std": 78.32}}


def get_config(arg: str | None = None) -> dict[str, Any]:
    """The recipe: ``None`` (ViT-B) or ``"smoke"``."""
    cfg = make(
        NAME,
        TASK,
        init="blip-base-pretrain-capfilt-l",
        image_size=480,
        drop_path_rate=0.1,
        train_files=["vqa_train.json", "vqa_val.json", "vg_qa.json"],
        val_file=None,
        test_file="vqa_test.json",
        answer_list="answer_list.json",
        vqa_root=None,  # default: data_root
        vg_root=None,  # default: data_root
        max_text_length=35,
        batch_size=16,
        batch_size_test=32,
        lr=2e-5,
        min_lr=0.0,
        epochs=10,
        min_scale=0.5,
        k_test=128,
        eval_kind="vqa",
        test_at_end=True,
        expected=EXPECTED["base (CapFilt-L init)"],
    )
    if arg in (None, "", "base"):
        return cfg
    if arg == "smoke":
        return smoke(
            cfg,
            train_files=["vqa_train.json"],
            val_file="vqa_val.json",
            test_file="vqa_test.json",
            lr=1e-4,
            k_test=8,
            expected=None,
        )
    raise ValueError(f"unknown variant {arg!r} of {NAME}; use None or 'smoke' (the paper has no ViT-L VQA model)")
