"""``openblip demo``: pre-train a small BLIP from scratch on a synthetic world on the CPU, fine-tune VQA, and show
what it learned (metrics beside chance baselines, a gallery, a saved model that ``openblip caption`` runs).

Entry points: :func:`run_demo` with a :class:`DemoConfig` (or :func:`preset_config` for ``quick``/``default``/
``long``). Submodules: :mod:`~openblip.demo.settings`, :mod:`~openblip.demo.data`, :mod:`~openblip.demo.train`,
:mod:`~openblip.demo.evaluate`, :mod:`~openblip.demo.report`, :mod:`~openblip.demo.run`.
"""

from __future__ import annotations

from openblip.demo.settings import METRIC_KEYS, PRESETS, DemoConfig, preset_config

__all__ = ["METRIC_KEYS", "PRESETS", "DemoConfig", "preset_config", "run_demo"]


def run_demo(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - lazy import of the heavy modules
    """See :func:`openblip.demo.run.run_demo`."""
    from openblip.demo.run import run_demo as _run

    return _run(*args, **kwargs)
