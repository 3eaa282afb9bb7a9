"""DataLoaders shared by the recipes: correct under DDP, and resumable in the middle of an epoch.

- Training (:func:`train_loader`): :class:`ResumableSampler` shuffles with ``(seed, epoch)`` and gives
  each process its share (``torch.utils.data.DistributedSampler``'s order, one process included), so
  Lightning keeps it instead of injecting its own sampler. :class:`ResumableLoader` counts the
  batches it hands out; Lightning stores ``state_dict()`` of such loaders in every checkpoint, so a
  run resumed from a mid-epoch checkpoint continues with the next batch of the same order instead of
  restarting the epoch.
- Evaluation (:func:`eval_loader`): each process reads a disjoint share and together they read every
  sample exactly once. Lightning's default ``DistributedSampler`` pads the last shares with repeated
  samples, which the metrics would count twice. Shares may then differ by one batch: safe, because
  DDP syncs buffers only on the first forward without gradients (every process gets at least one).

The world size and rank are read from ``torch.distributed`` when the loader is built; Lightning builds
loaders after it has initialised the process group.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["ResumableSampler", "ResumableLoader", "train_loader", "eval_loader", "world"]


def world() -> tuple[int, int]:
    """``(world size, rank)`` of the initialised process group, ``(1, 0)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _default_seed() -> int:
    # Set by `lightning.seed_everything`; Lightning's own samplers use it the same way.
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` over the current process group that can skip the start of an epoch.

    ``skip`` samples of this process's share are left out of the next iteration only (then it
    resets to 0); :class:`ResumableLoader` sets it when it loads a mid-epoch state.
    """

    def __init__(self, dataset: Dataset, seed: int = 0, shuffle: bool = True) -> None:
        replicas, rank = world()
        super().__init__(dataset, num_replicas=replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return itertools.islice(super().__iter__(), skip, None)


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableSampler` whose ``state_dict`` is the epoch and the
    batches handed out in it; ``load_state_dict`` makes the next iteration start after them.

    Lightning fetches no batch ahead from loaders of known length, so at a checkpoint the batches
    handed out are exactly the batches trained on.
    """

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, **kwargs: Any) -> None:
        if not isinstance(sampler, ResumableSampler):
            raise TypeError(f"ResumableLoader needs a ResumableSampler, got {type(sampler).__name__}")
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._position = 0  # batches of the current epoch handed out (or skipped on resume)
        self._resume: tuple[int, int] | None = None  # (epoch, batches) of a loaded state

    def __iter__(self) -> Iterator[Any]:
        # A loaded position applies to its own epoch only: a checkpoint written after the last batch
        # of an epoch (a step checkpoint at the epoch's end) resumes with the next epoch, whole.
        resume, self._resume = self._resume, None
        self._position = resume[1] if resume is not None and resume[0] == self.sampler.epoch else 0
        self.sampler.skip = self._position * int(self.batch_size or 1)
        for batch in super().__iter__():
            self._position += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches": self._position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.set_epoch(int(state["epoch"]))
        self._resume = (int(state["epoch"]), int(state["batches"]))


def train_loader(
    dataset: Dataset, batch_size: int, num_workers: int = 0, seed: int | None = None, **kwargs: Any
) -> ResumableLoader:
    """Shuffled training batches of this process's share; the last partial batch is dropped (a batch of
    one sample breaks BatchNorm). ``seed`` (default: the one given to ``seed_everything``) fixes the
    order of every epoch; the loader's own generator seeds its workers, so creating an iterator draws
    nothing from the global RNG (which a resumed run restores from the checkpoint)."""
    seed = _default_seed() if seed is None else seed
    sampler = ResumableSampler(dataset, seed=seed)
    if len(sampler) < batch_size:  # every batch would be dropped: training would do nothing
        share = f" ({len(sampler)} on each of {sampler.num_replicas} processes)" if sampler.num_replicas > 1 else ""
        raise ValueError(
            f"the training split has {len(dataset)} samples{share}, fewer than one batch of {batch_size}: "
            "lower data.batch_size or add training data"
        )
    return ResumableLoader(
        dataset,
        sampler,
        batch_size=batch_size,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, **kwargs: Any) -> DataLoader:
    """Batches of this process's share in order: sample ``i`` goes to rank ``i % world_size``, no sample
    is repeated (shares differ by at most one sample), so metrics merged across processes equal the
    single-process ones. The loader's own generator keeps evaluation from drawing from the global RNG, so
    validating (or a sanity check at the start of a resumed run) leaves training's random numbers alone."""
    replicas, rank = world()
    if 0 < len(dataset) < replicas:  # type: ignore[arg-type]
        raise ValueError(f"an evaluation set of {len(dataset)} samples cannot be shared by {replicas} processes")  # type: ignore[arg-type]
    sampler = UnrepeatedDistributedSampler(dataset, num_replicas=replicas, rank=rank, shuffle=False)
    return DataLoader(
        dataset,
        batch_size,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )
