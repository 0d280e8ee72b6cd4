"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is one ``torch.save`` file ``checkpoint_<global step, 8 digits>.pt`` holding a plain dictionary
(readable with ``torch.load(..., weights_only=True)``: only tensors, numbers, strings, lists, tuples and dicts):

==================  ==================================================================================
key                 content
==================  ==================================================================================
``format``          ``"openblip-train-checkpoint"``; ``version`` 1
``model``           the task model's tensors under official names, one entry per tied group (the layout of
                    ``model.safetensors``; :func:`openblip.checkpoint.fit_state_dict` restores the ties)
``objective``       the objective's training state: momentum encoders and queues (``{}`` when stateless)
``optimizer``       ``optimizer.state_dict()``
``schedule``        :meth:`openblip.train.optim.Schedule.state_dict`
``epoch``           the epoch to continue in
``global_step``     optimizer steps done
``batches_done``    micro-batches of ``epoch`` already consumed (0 at an epoch boundary)
``rng``             one entry per rank: python ``random``, numpy, torch CPU, every CUDA device (if any), and the
                    ``torch.Generator`` objects the loop owns, all as tensors/lists
``config``          the resolved recipe dictionary
``metrics``         evaluation history and the last training record
``rank_fingerprints`` per rank, sha256 of the model's and of the objective's tensors (equal on every rank of a
                    healthy data-parallel run; a mismatch is logged)
``failures``        images that failed to load so far (all ranks)
``world_size``      number of processes that wrote it
==================  ==================================================================================

Writes go to a temporary file in the same directory, are flushed and ``fsync``-ed, then ``os.replace``-d onto the
final name (and the directory entry is synced), so a crash leaves either the previous checkpoint or the new one,
never a torn file. :func:`prune_checkpoints` keeps the newest ``K``.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "openblip-train-checkpoint"
VERSION = 1
_NAME = re.compile(r"^checkpoint_(\d+)\.pt$")


def checkpoint_name(global_step: int) -> str:
    return f"checkpoint_{int(global_step):08d}.pt"


# ------------------------------------------------------------------------------------------------------------
# RNG state as tensors


def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Python ``random``, numpy's global RNG, torch CPU (and every CUDA device) and the given generators."""
    version, py_state, gauss = random.getstate()
    np_key, np_array, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "key": str(np_key),
            "state": torch.from_numpy(np.asarray(np_array, dtype=np.int64).copy()),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "generators": {k: g.get_state().cpu() for k, g in (generators or {}).items()},
    }
    return state


def restore_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng_state` (generators missing from ``state`` are left as they are)."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["key"],
            npst["state"].numpy().astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    saved = state.get("generators") or {}
    for name, gen in (generators or {}).items():
        if name in saved:
            gen.set_state(saved[name].to(gen.get_state().device))


# ------------------------------------------------------------------------------------------------------------
# files


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, fsync, then ``os.replace`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Complete checkpoint files in ``directory``, oldest (lowest step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest checkpoint in ``directory`` (or in ``directory/checkpoints``), or ``None``."""
    directory = Path(directory)
    found = list_checkpoints(directory)
    if not found and (directory / "checkpoints").is_dir():
        found = list_checkpoints(directory / "checkpoints")
    return found[-1] if found else None


def prune_checkpoints(directory: str | os.PathLike, keep_last: int | None) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (``None`` or < 1 keeps everything)."""
    if not keep_last or keep_last < 1:
        return []
    old = list_checkpoints(directory)[:-keep_last]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def save_checkpoint(
    directory: str | os.PathLike,
    state: Mapping[str, Any],
    keep_last: int | None = None,
) -> Path:
    """Write ``state`` (see the module docstring) as ``directory/checkpoint_<step>.pt`` atomically; prune.

    ``state`` must hold ``global_step``; ``format``/``version`` are added.
    """
    if "global_step" not in state:
        raise ValueError("a training checkpoint needs a global_step")
    path = Path(directory) / checkpoint_name(int(state["global_step"]))
    atomic_torch_save({"format": FORMAT, "version": VERSION, **state}, path)
    prune_checkpoints(directory, keep_last)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint (a file, or a directory: its newest) with ``weights_only=True``."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint_*.pt in {path}")
        path = found
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not an openblip training checkpoint")
    if int(state.get("version", 0)) > VERSION:
        raise ValueError(f"{path}: checkpoint version {state.get('version')} is newer than this openblip ({VERSION})")
    state["path"] = str(path)
    return state
