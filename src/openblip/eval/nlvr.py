"""NLVR2 accuracy (BLIP reports it on dev and test-P).

Scale: percent (0-100), like every metric in :mod:`openblip.eval` and the BLIP paper's tables.

The NLVR2 annotation files store labels as the strings ``"True"`` / ``"False"`` (BLIP's dataset maps
``"True"`` to class 1); both those strings and booleans (or 0/1 integers) are accepted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["nlvr_accuracy", "as_bool_label"]

_STRINGS = {"true": True, "false": False}


def as_bool_label(value: Any) -> bool:
    """``True``/``False``, ``"True"``/``"False"`` (any case, surrounding spaces ignored) or 0/1 -> ``bool``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        key = value.strip().lower()
        if key in _STRINGS:
            return _STRINGS[key]
        raise ValueError(f"NLVR2 label must be 'True' or 'False', got {value!r}")
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(int(value))
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # 0-d tensor / array
        return as_bool_label(value.item())
    raise ValueError(f"NLVR2 label must be a bool, 0/1 or 'True'/'False', got {value!r}")


def nlvr_accuracy(predictions: Sequence[Any], labels: Sequence[Any]) -> float:
    """Percentage of ``predictions`` equal to ``labels``.

    Args:
        predictions: One boolean per example (``True`` = the statement holds); ``"True"``/``"False"`` strings,
            0/1 integers, and 1-D arrays or tensors of them are accepted too.
        labels: The ground truth, in the same forms (typically the dataset's ``"True"``/``"False"`` strings).

    Returns:
        Accuracy in percent.

    Raises:
        ValueError: On mismatched lengths, empty input or an unrecognised label.
    """
    if isinstance(predictions, str) or isinstance(labels, str):
        raise TypeError("predictions and labels must be sequences, not a single str")
    preds = [as_bool_label(p) for p in predictions]
    gts = [as_bool_label(y) for y in labels]
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} labels")
    if not preds:
        raise ValueError("no predictions to evaluate")
    return 100.0 * sum(p == y for p, y in zip(preds, gts, strict=True)) / len(preds)
