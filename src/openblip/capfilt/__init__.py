"""CapFilt, the "bootstrapping" of BLIP: caption and filter a noisy web corpus, then pre-train on the result.

* :mod:`openblip.capfilt.pipeline`: the stages (``finetune-captioner``, ``finetune-filter``, ``caption``, ``filter``,
  ``build``), each resumable shard by shard, and :func:`run` for all of them;
* :mod:`openblip.capfilt.finetune`: fine-tuning the captioner (LM) and the filter (ITC + ITM) on the clean set;
* :mod:`openblip.capfilt.store`: atomic shard files with ``.done`` markers;
* :mod:`openblip.capfilt.demo`: the proof on the synthetic world (``openblip capfilt --demo``).

Example::

    from openblip.capfilt import CapFiltConfig, run
    summary = run(CapFiltConfig(web="web.json", clean="coco_karpathy_train.json", init="blip-base-pretrain",
                                image_root="/data", out="capfilt_out"))
"""

from __future__ import annotations

from typing import Any

from openblip.capfilt.config import CapFiltConfig

__all__ = ["CapFiltConfig", "run", "run_stage", "run_demo"]


def run(*args: Any, **kwargs: Any) -> Any:
    """See :func:`openblip.capfilt.pipeline.run`."""
    from openblip.capfilt.pipeline import run as _run

    return _run(*args, **kwargs)


def run_stage(*args: Any, **kwargs: Any) -> Any:
    """See :func:`openblip.capfilt.pipeline.run_stage`."""
    from openblip.capfilt.pipeline import run_stage as _run_stage

    return _run_stage(*args, **kwargs)


def run_demo(*args: Any, **kwargs: Any) -> Any:
    """See :func:`openblip.capfilt.demo.run_demo`."""
    from openblip.capfilt.demo import run_demo as _run_demo

    return _run_demo(*args, **kwargs)
