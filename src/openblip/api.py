"""The top-level entry points: :func:`load`, :func:`create_model`, :func:`list_models`, :func:`list_pretrained`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from openblip.checkpoint import LoadReport, load_model
from openblip.config import BlipConfig, get_arch_config, list_architectures
from openblip.models.blip import BlipBase
from openblip.models.blip import create_model as _create_from_config


def list_models() -> list[str]:
    """Named architectures (``blip-base``, ``blip-large``, ``blip-tiny``)."""
    return list_architectures()


def list_pretrained(task: str | None = None) -> list[str]:
    """Names of every released checkpoint (official files and Hugging Face repos), optionally for one task."""
    from openblip.pretrained import list_pretrained as _list

    return _list(task)


def create_model(arch: str = "blip-base", task: str = "caption", **overrides: Any) -> BlipBase:
    """A randomly initialised task model of a named architecture (see :func:`openblip.config.get_arch_config`)."""
    return _create_from_config(get_arch_config(arch, task, **overrides))


def resolve(name_or_path: str | Path, progress: bool = True) -> tuple[Path, str | None, int | None]:
    """A local path for ``name_or_path``, downloading registry names; also the entry's task and image size."""
    path = Path(name_or_path)
    if path.exists():
        return path, None, None
    from openblip.pretrained import UnknownModelError, download, get_pretrained

    try:
        entry = get_pretrained(str(name_or_path))
    except UnknownModelError as e:
        raise FileNotFoundError(
            f"{name_or_path!r} is neither an existing file/directory nor a known checkpoint name. {e}"
        ) from e
    return download(entry.name, progress=progress), entry.task, entry.image_size


def load(
    name_or_path: str | Path,
    task: str | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    config: BlipConfig | str | Path | None = None,
    image_size: int | None = None,
    strict: bool = True,
    for_training: bool = False,
    return_report: bool = False,
    progress: bool = True,
) -> BlipBase | tuple[BlipBase, LoadReport]:
    """Load a BLIP model by registry name or from a local checkpoint in any layout.

    Args:
        name_or_path: a name from :func:`list_pretrained` (downloaded into the Hugging Face cache, honouring
            ``HF_HOME`` and ``HF_HUB_OFFLINE``), or a local official ``.pth``, Hugging Face directory, or
            openblip directory.
        task: which task model to build; detected from the checkpoint when omitted.
        device, dtype: placement; e.g. ``dtype="bfloat16"``.
        config: a config (or its JSON path) when detection is not enough (e.g. other head counts).
        image_size: run at another resolution (position embedding resized bicubically, as the original).
        strict: any missing/unexpected/mismatched tensor is an error naming the keys.
        for_training: keep momentum encoders and queues in the returned report.
        return_report: also return the :class:`~openblip.checkpoint.LoadReport`.
        progress: show a download progress bar.

    Example:
        >>> model = openblip.load("blip-base-caption-coco")          # doctest: +SKIP
        >>> model = openblip.load("./model_base_retrieval_coco.pth")  # doctest: +SKIP
    """
    path, entry_task, entry_size = resolve(name_or_path, progress=progress)
    task = task or entry_task
    if image_size is None and entry_size is not None and config is None:
        image_size = entry_size
    return load_model(
        path,
        task=task,
        config=config,
        device=device,
        dtype=dtype,
        image_size=image_size,
        strict=strict,
        for_training=for_training,
        return_report=return_report,
    )
