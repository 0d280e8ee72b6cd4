"""Training support for BLIP: objectives with their stateful parts, and distributed helpers.

* :mod:`openblip.train.objectives` — training wrappers around the task models: :class:`PretrainObjective`
  (ITC + ITM + LM), :class:`RetrievalObjective` (idx-aware ITC + ITM), :class:`CaptionObjective`,
  :class:`VQAObjective`, :class:`NLVRObjective`. The momentum encoders and feature queues of the original
  ``BLIP_Pretrain``/``BLIP_Retrieval`` live here, under their official names, never in the models users load.
* :mod:`openblip.train.distributed` — ``concat_all_gather`` / ``all_gather_with_grad`` that work without
  ``torch.distributed`` (single process: identity).
* The loss formulas themselves are pure functions in :mod:`openblip.losses`.
"""
