"""The demo's settings: one dataclass and the three presets (``quick``, ``default``, ``long``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openblip.config import BlipConfig, TextConfig, VisionConfig

#: Keys every ``metrics.json`` holds (fractions in [0, 1] except ``train_steps``/``train_seconds``; see README).
METRIC_KEYS = (
    "caption_exact",
    "caption_token_acc",
    "bleu4",
    "cider",
    "itc_i2t_r1",
    "itc_t2i_r1",
    "itc_i2t_r5",
    "itc_t2i_r5",
    "itm_i2t_r1",
    "itm_t2i_r1",
    "itm_hardneg_acc",
    "vqa_acc",
    "vqa_color_acc",
    "train_steps",
    "train_seconds",
)


@dataclass
class DemoConfig:
    """Everything the demo does, in one place. The presets below change the step budget and the from-scratch
    schedule (see :data:`PRESETS`).

    Model: a small BLIP (ViT 64 px / patch 8 / width 128 / depth 3; MED text width 128, 2 layers, the full
    30,524-token BERT vocabulary; ITC width ``embed_dim``), pre-trained from scratch with ITC (momentum
    distillation + queue) + ITM (hard negatives) + LM, then a ``BlipVQA`` initialised from it is fine-tuned.
    """

    out: Path = Path("demo_out")
    seed: int = 0
    threads: int | None = 2
    preset: str = "default"

    # world (openblip.data.synthetic)
    n_train: int = 5000
    n_test: int = 640  # enough held-out scenes for 500 distinct captions
    image_size: int = 64
    n_retrieval: int = 500  # retrieval is scored on this many test scenes with distinct captions

    # model
    vision_width: int = 128
    vision_depth: int = 3
    patch_size: int = 8
    text_width: int = 128
    text_layers: int = 2
    num_heads: int = 4
    embed_dim: int = 128
    text_dropout: float = 0.1  # BERT's hidden and attention-probability dropout (the original's 0.1; default: 0)
    # the ViT's position embedding at step 0: "sincos" (fixed 2-D sine-cosine values, still learned; see
    # openblip.train.init_weights.sincos_pos_embed_) or "timm" (N(0, 0.02), the original's random init, which BLIP
    # itself never trains from: it starts from an ImageNet ViT)
    pos_init: str = "sincos"
    pos_init_scale: float = 1.0  # multiplies the sine-cosine table

    # the supervised ViT stage before pre-training (openblip.demo.train.pretrain_vit; 0: none): naming each object's
    # shape, colour and size from the patch tokens under it. BLIP starts from an ImageNet-trained ViT; from random
    # weights the demo's ViT learns colour and size but not shape in the pre-training budgets (README)
    vit_steps: int = 0
    # which patches name an object in that stage (openblip.demo.train.object_pooling): "box", those under its
    # bounding box, or "core", those within 0.75 of its radius from its centre (measured on the default: better on
    # seed 0, not on seeds 1 and 2; README)
    vit_pool: str = "box"

    # pre-training (ITC + ITM + LM, PretrainObjective)
    steps: int = 800
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_frac: float = 0.05
    weight_decay: float = 0.05
    queue_size: int = 512  # a multiple of batch_size (the original asserts it)
    # EMA coefficient of the momentum encoders. None: min(0.995, 1 - 15 / steps), i.e. the EMA horizon 1 / (1 - m)
    # is 1/15 of the schedule, capped at the original 0.995 (reached at 3000 steps). The original's 0.995 is a
    # 200-step horizon in a run of ~100k steps; in 300 steps at lr 1e-3 it leaves the momentum encoders (the ITC
    # keys) far behind the online ones and ITC does not learn (R@1 0.014 measured, see README).
    momentum: float | None = None
    alpha: float = 0.4
    alpha_ramp_frac: float = 0.2  # alpha ramps from 0 over this fraction of the steps (original: 2 of 20 epochs)
    # BLIP starts from an ImageNet ViT and BERT. From scratch every feature is nearly the same vector at first, and
    # then momentum targets and a queue of stale features stall ITC or make it collapse (measured; see README).
    # For the first `itc_warmup_frac` of the steps (at most `itc_warmup_max`; None: no cap) the demo trains ITC
    # in-batch with the momentum encoders tracking the online ones exactly (momentum 0, alpha 0); then the
    # original ITC (momentum distillation against [batch ; queue]). ITM (hard negatives) joins after
    # `itm_warmup_frac` of the steps (same cap; None: with the end of the ITC warm-up); LM throughout. The short
    # presets stay in-batch for the whole run (`itc_warmup_frac=1`): measured at 300 steps, switching to the queue
    # after 60 steps gave ITC R@1 0.17 (seed 0) or 0.004 (collapse, a variant), staying in-batch 0.30.
    itc_warmup_frac: float = 0.2
    itc_warmup_max: int | None = 100
    itm_warmup_frac: float | None = None
    # The LM also trains on the scene's other reference caption in each step (ITC/ITM see one caption per scene, as
    # BLIP). Off: measured on the default (seed 0), 800 steps gave caption exact 0.142, ITC R@1 0.58 / 0.60, VQA
    # 0.59 but 12 minutes of training (the second pass through the 30,524-way LM head costs 1.5x per step); in the
    # default's time (600 steps) exact fell to 0.078
    lm_all_captions: bool = False
    flip: bool = True  # horizontal flip with "left"/"right" swapped in the text

    # VQA: `vqa_steps` of fine-tuning (the original's recipe) of a BlipVQA initialised from the pre-trained model.
    # joint_vqa (off; measured worse at 300 steps: ITC R@1 0.08 instead of 0.30, VQA 0.40 instead of 0.43): from the
    # step ITM starts, every pre-training step also takes the VQA loss of one question per scene of the batch, on a
    # BlipVQA that shares the ViT and the question (text) encoder, its answer decoder copied from the pre-trained
    # decoder.
    joint_vqa: bool = False
    # VQA is under-trained long before it over-fits: from the same pre-trained model (default, seed 0) 300 steps
    # gave 0.34 ("how many ...?" answered "no"), 900 steps 0.55, 1200 steps 0.56
    vqa_steps: int = 900
    vqa_batch_size: int = 64  # questions per step
    # questions per scene in a step (1: the original's independent questions; k: batch / k scenes, k questions each,
    # one ViT pass per scene). 4 (all of a scene's questions): 0.43 after 250 steps where 1 gave 0.34 (count
    # questions collapsed) on the same pre-trained model, in less time.
    vqa_questions_per_image: int = 4
    # 1e-3 for 150 steps collapsed to the answer prior (0.25); 5e-4 for 300 steps: 0.44 (colour 0.56)
    vqa_lr: float = 5e-4
    vqa_warmup_frac: float = 0.0  # the original fine-tunes without warm-up; 0.1 measured worse (0.23 vs 0.41)
    # the ViT's learning rate in VQA fine-tuning, as a multiple of vqa_lr (0: frozen). The original fine-tunes the
    # whole model at one rate (2e-5, from a ViT-B that has seen 129M images); the demo's rate is 25x that
    vqa_vit_lr_scale: float = 1.0

    # evaluation
    num_beams: int = 3
    max_length: int = 20  # counts the [DEC] start token, as the original
    min_length: int = 5
    itm_k: int = 16  # ITC top-k re-scored by ITM
    coco_metrics: bool = True  # BLEU/CIDEr through pycocoevalcap (Java)
    gallery: bool = True
    log_every: int = 25

    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ema_momentum(self) -> float:
        """The momentum actually used (see ``momentum``)."""
        if self.momentum is not None:
            return float(self.momentum)
        return max(0.0, min(0.995, 1.0 - 15.0 / max(1, self.steps)))

    @property
    def phases(self) -> tuple[int, int]:
        """``(queue_from, itm_from)``: the steps at which the original ITC (momentum encoders, queue,
        distillation) and ITM start (``steps``: never)."""
        cap = self.steps if self.itc_warmup_max is None else self.itc_warmup_max
        itm_frac = self.itc_warmup_frac if self.itm_warmup_frac is None else self.itm_warmup_frac
        return min(int(round(self.itc_warmup_frac * self.steps)), cap), min(int(round(itm_frac * self.steps)), cap)

    def describe_objective(self) -> str:
        """One line saying which objective runs when."""
        queue_from, itm_from = self.phases
        itc = (
            "ITC in-batch (momentum 0)"
            if queue_from >= self.steps
            else f"ITC in-batch for {queue_from} steps, then with queue {self.queue_size}, momentum "
            f"{self.ema_momentum:.3f}, alpha {self.alpha}"
        )
        itm = f"ITM from step {itm_from}" if itm_from < self.steps else "no ITM"
        return f"{itc}; {itm}; LM"

    def replace(self, **changes: Any) -> DemoConfig:
        return dataclasses.replace(self, **changes)

    def blip_config(self, task: str = "pretrain") -> BlipConfig:
        """The model's :class:`BlipConfig`. The prompt is empty: BLIP pre-trains its LM without one, and the saved
        model captions with ``openblip caption`` from ``[DEC]`` alone."""
        return BlipConfig(
            task=task,
            arch="blip-demo",
            vision=VisionConfig(
                image_size=self.image_size,
                patch_size=self.patch_size,
                width=self.vision_width,
                depth=self.vision_depth,
                num_heads=self.num_heads,
            ),
            text=TextConfig(
                hidden_size=self.text_width,
                num_layers=self.text_layers,
                num_heads=self.num_heads,
                intermediate_size=4 * self.text_width,
                hidden_dropout=self.text_dropout,
                attention_dropout=self.text_dropout,
            ),
            embed_dim=self.embed_dim,
            prompt="",
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        return d


#: Step budgets, sized on 2 CPU cores (see the README's "The demo" section for the measured times).
PRESETS: dict[str, dict[str, Any]] = {
    # --quick keeps timm's random position embedding: at 300 steps the sine-cosine start gave ITC R@1 0.09 (seeds 0
    # and 1) against 0.30 (seed 0); over the default's 800 steps it is better on every metric (README)
    "quick": {
        "steps": 300,
        "vqa_steps": 250,  # 350 gave the same VQA (0.444 vs 0.44, seed 0) and 4.0 instead of 3.8 minutes
        "itc_warmup_frac": 1.0,
        "itc_warmup_max": None,
        "itm_warmup_frac": 0.2,
        "pos_init": "timm",
    },
    # the default trains its text transformers without dropout: over seeds 0, 1 and 2 caption exact match 0.12 /
    # 0.12 / 0.12 against 0.10 / 0.10 / 0.08 with the original's 0.1, the other metrics within the seed-to-seed
    # spread (README); --quick collapsed without it (ITC R@1 0.02 against 0.30, seed 0)
    "default": {
        "steps": 800,
        # 1500 VQA steps with the frozen ViT: 0.638/0.624/0.596 (seeds 0/1/2) against 0.624/0.584/0.584 at 900
        "vqa_steps": 1500,
        "itc_warmup_frac": 1.0,
        "itc_warmup_max": None,
        "itm_warmup_frac": 0.075,
        "text_dropout": 0.0,
        # seeds 0/1/2: caption exact 0.148/0.139/0.103 against 0.109-0.122/0.116/0.117 without the stage, ITC R@1
        # (image to text) 0.54/0.60/0.55 against 0.40/0.40/0.50, VQA 0.50/0.50/0.54 against 0.52-0.58 (both with the
        # ViT trained in VQA fine-tuning); one more minute
        "vit_steps": 600,
        # VQA fine-tuning with the ViT frozen: from the same pre-trained models (seeds 0/1/2) VQA 0.624/0.584/0.584
        # against 0.499/0.496/0.535 with the ViT trained at vqa_lr (0.1x that rate: 0.614 on seed 0), 25 s faster
        "vqa_vit_lr_scale": 0.0,
    },
    "long": {"steps": 3000, "vqa_steps": 1200},
}


def preset_config(name: str = "default", **overrides: Any) -> DemoConfig:
    """A :class:`DemoConfig` for preset ``name`` with ``overrides`` (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    if "out" in values:
        values["out"] = Path(values["out"])
    return DemoConfig(preset=name, **values)
