"""Crash-safe files for the CapFilt stages: atomic writes and shards with ``.done`` markers.

A shard's rows are written to a temporary file in the same folder, flushed and ``fsync``-ed, renamed over
``shard_NNNNN.jsonl`` (atomic on POSIX), the folder is ``fsync``-ed, and only then is ``shard_NNNNN.done`` written
(the same way), holding the row count and the SHA-256 of the shard file. So a shard with a marker is complete; a
shard without one (a crash before the marker, a partial temporary file) is redone by the next run, and a shard whose
file no longer matches its marker is redone too (with a warning).

A stage folder also holds ``params.json``: the settings its shards were produced with. Resuming with different
settings (another model, seed, shard size, ...) is refused instead of silently mixing shards of two runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class StageMismatchError(RuntimeError):
    """A stage folder holds work done with other settings."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (temp file, fsync, rename, fsync of the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=indent, ensure_ascii=False) + "\n").encode("utf-8"))


def jsonl_bytes(rows: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ShardStore:
    """The shards of one stage: ``<folder>/shard_NNNNN.jsonl`` + ``shard_NNNNN.done``.

    Args:
        folder: the stage folder (created).
        params: the settings the shards depend on; checked against (or written to) ``params.json``.
        stage: a name for messages.
    """

    def __init__(self, folder: str | os.PathLike, params: Mapping[str, Any], stage: str) -> None:
        self.folder = Path(folder)
        self.stage = stage
        self.folder.mkdir(parents=True, exist_ok=True)
        self.params = json.loads(json.dumps(dict(params)))  # normalised through JSON (tuples -> lists, ...)
        path = self.folder / "params.json"
        if path.is_file():
            old = json.loads(path.read_text(encoding="utf-8"))
            if old != self.params:
                diff = sorted(k for k in set(old) | set(self.params) if old.get(k) != self.params.get(k))
                shown = "; ".join(f"{k}: {old.get(k)!r} -> {self.params.get(k)!r}" for k in diff[:6])
                raise StageMismatchError(
                    f"{self.folder} holds {stage} shards made with other settings ({shown}); use another output "
                    f"folder, or delete {self.folder} to redo the stage"
                )
        else:
            atomic_write_json(path, self.params)

    def path(self, index: int) -> Path:
        return self.folder / f"shard_{index:05d}.jsonl"

    def marker(self, index: int) -> Path:
        return self.folder / f"shard_{index:05d}.done"

    def is_done(self, index: int) -> bool:
        """Whether shard ``index`` is complete: marker present and the file matches it."""
        marker = self.marker(index)
        if not marker.is_file():
            return False
        try:
            info = json.loads(marker.read_text(encoding="utf-8"))
            return self.path(index).is_file() and file_sha256(self.path(index)) == info["sha256"]
        except (OSError, ValueError, KeyError):
            return False

    def has_stale_marker(self, index: int) -> bool:
        return self.marker(index).is_file() and not self.is_done(index)

    def write(self, index: int, rows: list[Mapping[str, Any]]) -> None:
        """Write shard ``index`` completely, then its marker (see the module docstring)."""
        self.marker(index).unlink(missing_ok=True)
        data = jsonl_bytes(rows)
        atomic_write_bytes(self.path(index), data)
        atomic_write_json(self.marker(index), {"rows": len(rows), "sha256": sha256_bytes(data)}, indent=None)

    def read(self, index: int) -> list[dict[str, Any]]:
        if not self.is_done(index):
            raise FileNotFoundError(f"{self.stage} shard {self.path(index)} is missing or incomplete; run the stage")
        return read_jsonl(self.path(index))

    def done_count(self, n_shards: int) -> int:
        return sum(self.is_done(i) for i in range(n_shards))
