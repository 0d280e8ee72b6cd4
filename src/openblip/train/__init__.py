"""Training support for BLIP: objectives with their stateful parts, and distributed helpers.

* :mod:`openblip.train.objectives` — training wrappers around the task models: :class:`PretrainObjective`
  (ITC + ITM + LM), :class:`RetrievalObjective` (idx-aware ITC + ITM), :class:`CaptionObjective`,
  :class:`VQAObjective`, :class:`NLVRObjective`. The momentum encoders and feature queues of the original
  ``BLIP_Pretrain``/``BLIP_Retrieval`` live here, under their official names, never in the models users load.
* :mod:`openblip.train.distributed` — ``concat_all_gather`` / ``all_gather_with_grad`` that work without
  ``torch.distributed`` (single process: identity).
* The loss formulas themselves are pure functions in :mod:`openblip.losses`.

The training program around them:

* :mod:`openblip.train.recipes` — the original hyper-parameters per task (``pretrain``, ``caption_coco``,
  ``retrieval_coco``, ``retrieval_flickr``, ``vqa``, ``nlvr``; ``large`` and ``smoke`` variants).
* :mod:`openblip.train.loop` — :class:`~openblip.train.loop.Trainer`: one process or ``torchrun`` DDP,
  gradient accumulation, bf16, gradient checkpointing, metrics, evaluation hooks, exact resume.
* :mod:`openblip.train.main` — ``python -m openblip.train.main`` / ``openblip train``.
* :mod:`openblip.train.optim` (AdamW, schedules), :mod:`openblip.train.checkpointing` (atomic checkpoints),
  :mod:`openblip.train.data` (global-batch sampler, per-sample seeding), :mod:`openblip.train.steps` (per-task
  batches), :mod:`openblip.train.hooks` (evaluation), :mod:`openblip.train.init_weights` (BLIP/BERT/ViT init).
"""
