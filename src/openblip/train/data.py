"""Deterministic training data: global-batch sampling and per-sample seeded augmentation.

Two properties make runs reproducible and independent of the number of processes and loader workers:

* **Global batches.** :class:`GlobalBatchSampler` draws a seeded permutation of the dataset per epoch
  (``seed``, ``epoch``), cuts it into *global* batches of ``batch_size x world_size`` samples (an incomplete last
  batch is dropped, as the original ``drop_last=True`` training loaders), and rank ``r`` takes the contiguous
  slice ``[r * batch_size, (r + 1) * batch_size)`` of each. A run on ``W`` processes with ``batch_size = B / W``
  therefore sees exactly the samples, in the same steps, of a 1-process run with ``batch_size = B``. A resumed run
  starts the permutation at the batch it had reached.

  The original uses ``DistributedSampler`` (rank ``r`` takes every ``W``-th index of the permutation), whose
  global batches change with ``W``; the sample order is the only thing that differs.

* **Per-sample randomness.** :class:`PerSampleSeeded` wraps a dataset so that item ``(epoch, index)`` is loaded
  with the torch seed :func:`sample_seed` ``(seed, epoch, index)`` (the previous torch RNG state is restored
  afterwards). openblip's datasets and train transform draw all their randomness (crop, flip, RandomAugment,
  NLVR's swap, a random caption) from generators seeded by :func:`torch.initial_seed`, so each sample is
  augmented identically whichever rank, worker or resumed process loads it, and the training process's own RNG
  streams (dropout, drop-path) are untouched by data loading.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler


def _mix(*parts: Any) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The torch seed item ``index`` is loaded with in ``epoch`` (63-bit, from sha256)."""
    return _mix("openblip.train.sample", int(seed), int(epoch), int(index))


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The sample order of an epoch: a seeded ``randperm`` (or ``range(n)`` without shuffling)."""
    if not shuffle:
        return list(range(n))
    g = torch.Generator().manual_seed(_mix("openblip.train.order", int(seed), int(epoch)))
    return torch.randperm(n, generator=g).tolist()


class GlobalBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` keys for one rank; see the module docstring.

    Args:
        dataset_len: samples in the dataset this epoch.
        batch_size: samples per rank per (micro-)batch.
        world_size, rank: the process layout.
        seed, epoch: select the permutation.
        num_batches: how many global batches the epoch has (default: all complete ones). More than the data holds
            (pre-training on a LAION shard smaller than the one the epoch length was set from) repeat the
            permutation from its start, as the original's ``DistributedSampler`` pads to its fixed length.
        start_batch: skip this many global batches (resuming inside an epoch).
        shuffle: draw a permutation (training) or keep the file order.
    """

    def __init__(
        self,
        dataset_len: int,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        epoch: int = 0,
        num_batches: int | None = None,
        start_batch: int = 0,
        shuffle: bool = True,
    ) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad batch layout: batch_size={batch_size}, world_size={world_size}, rank={rank}")
        self.dataset_len = int(dataset_len)
        self.batch_size = int(batch_size)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.global_batch = self.batch_size * self.world_size
        complete = self.dataset_len // self.global_batch
        self.num_batches = complete if num_batches is None else int(num_batches)
        if self.num_batches > 0 and self.dataset_len < 1:
            raise ValueError("cannot draw batches from an empty dataset")
        self.start_batch = int(start_batch)
        self.shuffle = shuffle

    def global_batches(self) -> list[list[int]]:
        """Every global batch of the epoch (all ranks), from the first."""
        order = epoch_permutation(self.dataset_len, self.seed, self.epoch, self.shuffle)
        g = self.global_batch
        if self.num_batches * g > len(order):
            order = order * -(-self.num_batches * g // len(order))
        return [order[i * g : (i + 1) * g] for i in range(self.num_batches)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in self.global_batches()[self.start_batch :]:
            yield [(self.epoch, i) for i in batch[lo:hi]]

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start_batch)


class PerSampleSeeded(Dataset):
    """``dataset[(epoch, index)]`` = ``dataset[index]`` loaded under the torch seed ``sample_seed(seed, epoch,
    index)``; the caller's torch RNG state is restored afterwards. Plain integer keys use epoch 0."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        epoch, index = key if isinstance(key, (tuple, list)) else (0, key)
        state = torch.get_rng_state()
        # the CPU generator only: torch.manual_seed would also reseed (and not restore) every CUDA generator
        torch.default_generator.manual_seed(sample_seed(self.seed, epoch, index))
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(state)

    @property
    def failure_count(self) -> int:
        return int(getattr(self.dataset, "failure_count", 0))


def default_collate_list(batch: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    """Stack tensors, keep strings (and lists of strings) as lists, turn ints into a tensor -- per field."""
    out = []
    for field in zip(*batch):
        first = field[0]
        if isinstance(first, torch.Tensor):
            out.append(torch.stack(list(field)))
        elif isinstance(first, (int, float)) and not isinstance(first, bool):
            out.append(torch.tensor(list(field)))
        else:
            out.append(list(field))
    return tuple(out)
