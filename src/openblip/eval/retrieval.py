"""Image-text retrieval recall metrics, as BLIP's ``train_retrieval.itm_eval``.

Scale: percent (0-100), like every metric in :mod:`openblip.eval` and the BLIP paper's tables.

* Text retrieval (image -> text, ``txt_r*``): each image's texts are sorted by descending score; the image's rank
  is the best (lowest, 0-based) position among **all** of its ground-truth captions, and TR@K is the percentage
  of images whose rank is ``< K``.
* Image retrieval (text -> image, ``img_r*``): each text's images are sorted by descending score; IR@K is the
  percentage of texts whose single ground-truth image is ranked ``< K``.
* ``txt_r_mean`` / ``img_r_mean`` average R@1/5/10; ``r_mean`` averages those two (BLIP picks its best epoch
  by validation ``r_mean``).

Rows are sorted exactly as the original does (``np.argsort(row)[::-1]`` on the matrix's own dtype), so ties
break the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["retrieval_metrics", "recall_at_k", "ground_truth_ranks"]


def _to_numpy(scores: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(scores, torch.Tensor):
            scores = scores.detach().cpu()
            if scores.dtype in (torch.bfloat16, torch.float16):
                # numpy has no bfloat16; the original evaluated float32 matrices (the ITM logits + cosine).
                scores = scores.float()
            scores = scores.numpy()
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    arr = np.asarray(scores)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D score matrix, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _plain(value: Any) -> Any:
    """A torch tensor or numpy array/scalar as plain Python (``.tolist()``); anything else unchanged."""
    if isinstance(value, (np.ndarray, np.generic)) or type(value).__module__.startswith("torch"):
        tolist = getattr(value, "tolist", None)
        if callable(tolist):
            return tolist()
    return value


def _as_index(value: Any, n_items: int, where: str) -> int:
    """One ground-truth index: an integer (or an integral float, e.g. from a float tensor) in ``[0, n_items)``."""
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where} must be an integer index, got {type(value).__name__} {value!r}")
    if isinstance(value, (float, np.floating)):
        if not float(value).is_integer():
            raise ValueError(f"{where} = {value!r} is not an integer index")
    i = int(value)
    if not 0 <= i < n_items:
        raise ValueError(f"{where} = {i} is out of range for {n_items} candidates")
    return i


def _as_index_list(gt: Any, n: int, n_items: int, name: str, multi: bool) -> list[list[int]]:
    """Ground truth per query as a list of index lists (``multi=False``: exactly one index per query).

    ``gt`` is a sequence with one entry per query, a mapping whose keys are exactly the query indices
    ``0..n-1``, or a tensor/array (converted with ``.tolist()``). Every index must lie in ``[0, n_items)``.
    """
    gt = _plain(gt)
    if isinstance(gt, Mapping):
        keys = set(gt)
        missing = sorted(set(range(n)) - keys)
        extra = keys - set(range(n))
        if missing:
            raise ValueError(f"{name} has no entry for query {missing[0]} (the score matrix has {n} rows)")
        if extra:
            shown = ", ".join(repr(k) for k in sorted(extra, key=repr)[:5])
            raise ValueError(
                f"{name} has {len(extra)} key(s) outside the score matrix's {n} rows (0..{n - 1}): {shown}"
            )
        entries = [gt[i] for i in range(n)]
    elif isinstance(gt, Iterable) and not isinstance(gt, (str, bytes)):
        entries = list(gt)
        if len(entries) != n:
            raise ValueError(f"{name} has {len(entries)} entries but the score matrix has {n} rows")
    else:
        raise TypeError(f"{name} must be a sequence, a mapping or a tensor/array, got {type(gt).__name__}")
    out: list[list[int]] = []
    for q, entry in enumerate(entries):
        entry = _plain(entry)
        is_many = isinstance(entry, Iterable) and not isinstance(entry, (str, bytes))
        if multi and is_many:
            idx = [_as_index(i, n_items, f"{name}[{q}]") for i in entry]
        elif is_many:
            raise TypeError(f"{name}[{q}] must be a single index, got {type(entry).__name__}")
        else:
            idx = [_as_index(entry, n_items, f"{name}[{q}]")]
        if not idx:
            raise ValueError(f"{name}[{q}] lists no ground-truth item")
        out.append(idx)
    return out


def _best_ranks(scores: np.ndarray, gt: list[list[int]]) -> np.ndarray:
    ranks = np.empty(scores.shape[0], dtype=np.int64)
    positions = np.empty(scores.shape[1], dtype=np.int64)
    arange = np.arange(scores.shape[1])
    for q, row in enumerate(scores):
        order = np.argsort(row)[::-1]  # the original's ordering, ties included
        positions[order] = arange
        ranks[q] = positions[gt[q]].min()
    return ranks


def ground_truth_ranks(scores: Any, gt: Any) -> np.ndarray:
    """0-based rank of the best-ranked ground-truth item for each query (row) of ``scores``.

    Args:
        scores: ``[n_queries, n_items]`` array or tensor, higher is better.
        gt: Per query, one item index or a list of indices: a sequence with one entry per row, a mapping whose keys
            are exactly the row indices ``0..n-1``, or a tensor/array. Indices must be in ``[0, n_items)``.

    Returns:
        ``int64`` array of shape ``[n_queries]``.
    """
    arr = _to_numpy(scores, "scores")
    return _best_ranks(arr, _as_index_list(gt, arr.shape[0], arr.shape[1], "gt", multi=True))


def recall_at_k(scores: Any, gt: Any, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Percentage of queries whose best-ranked ground-truth item is in the top ``k``, for each ``k`` in ``ks``.

    Args:
        scores: ``[n_queries, n_items]`` array or tensor, higher is better.
        gt: Per query, one item index or a list of indices: a sequence with one entry per row, a mapping whose keys
            are exactly the row indices ``0..n-1``, or a tensor/array. Indices must be in ``[0, n_items)``.
        ks: Cut-offs (positive ints).

    Returns:
        ``{k: recall_in_percent}``.
    """
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"every k must be a positive int, got {k!r}")
    ranks = ground_truth_ranks(scores, gt)
    if ranks.size == 0:
        raise ValueError("no queries to evaluate")
    return {int(k): 100.0 * float(np.count_nonzero(ranks < k)) / ranks.size for k in ks}


def retrieval_metrics(
    score_i2t: Any,
    score_t2i: Any,
    txt2img: Sequence[int] | Mapping[int, int],
    img2txt: Sequence[Sequence[int]] | Mapping[int, Sequence[int]],
) -> dict[str, float]:
    """Recall@1/5/10 for text and image retrieval, exactly as BLIP's ``itm_eval``.

    Args:
        score_i2t: ``[n_images, n_texts]`` scores (array or tensor), higher is better.
        score_t2i: ``[n_texts, n_images]`` scores.
        txt2img: The ground-truth image index of each text.
        img2txt: The ground-truth text indices of each image (a list or mapping, as BLIP's datasets store it).
            Either may be a sequence with one entry per row of its score matrix, a mapping whose keys are exactly
            ``0..n-1`` (no missing or extra keys), or a tensor/array (``.tolist()``); every index must be in range.
            Anything else raises a ``ValueError`` (``TypeError`` for a non-integer type) naming the argument.

    Returns:
        ``txt_r1, txt_r5, txt_r10, txt_r_mean, img_r1, img_r5, img_r10, img_r_mean, r_mean``, in percent.
    """
    i2t = _to_numpy(score_i2t, "score_i2t")
    t2i = _to_numpy(score_t2i, "score_t2i")
    n_img, n_txt = i2t.shape
    if t2i.shape != (n_txt, n_img):
        raise ValueError(f"score_t2i must have shape {(n_txt, n_img)} (transpose of score_i2t), got {t2i.shape}")
    if n_img == 0 or n_txt == 0:
        raise ValueError("no images or texts to evaluate")
    tr = recall_at_k(i2t, _as_index_list(img2txt, n_img, n_txt, "img2txt", multi=True))
    ir = recall_at_k(t2i, _as_index_list(txt2img, n_txt, n_img, "txt2img", multi=False))
    tr_mean = (tr[1] + tr[5] + tr[10]) / 3
    ir_mean = (ir[1] + ir[5] + ir[10]) / 3
    return {
        "txt_r1": tr[1],
        "txt_r5": tr[5],
        "txt_r10": tr[10],
        "txt_r_mean": tr_mean,
        "img_r1": ir[1],
        "img_r5": ir[5],
        "img_r10": ir[10],
        "img_r_mean": ir_mean,
        "r_mean": (tr_mean + ir_mean) / 2,
    }
