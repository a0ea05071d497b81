"""The data order: a resumable seeded sampler (DistributedSampler's order) and the batch stream the loop reads."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from quantart_cli.core.errors import BadInputError
from quantart_cli.core.train.ddp import DistInfo

# --------------------------------------------------------------------------------------------- data


class ResumableSampler(Sampler[int]):
    """DistributedSampler's order (seeded shuffle per epoch, padded equal shares per rank) that can
    restart mid-epoch: ``set_position(epoch, batch)`` skips the batches already consumed.

    An epoch always holds at least one full batch per rank (small datasets are repeated), and the
    last incomplete batch is dropped, so every step sees ``batch_size`` images on every rank.
    """

    def __init__(self, length: int, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if length < 1:
            raise BadInputError("The training set is empty.")
        self.length = length
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip_batches = 0

    def epoch_indices(self, epoch: int) -> list[int]:
        generator = torch.Generator()
        generator.manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        order = torch.randperm(self.length, generator=generator).tolist()
        per_rank = max(math.ceil(self.length / self.world_size), self.batch_size)
        total = per_rank * self.world_size
        while len(order) < total:
            order += order[: total - len(order)]
        share = order[self.rank : total : self.world_size]
        return share[: len(share) // self.batch_size * self.batch_size]

    @property
    def batches_per_epoch(self) -> int:
        return max(math.ceil(self.length / self.world_size), self.batch_size) // self.batch_size

    def set_position(self, epoch: int, batch: int) -> None:
        self.epoch, self.skip_batches = epoch, batch

    def __iter__(self) -> Iterator[int]:
        yield from self.epoch_indices(self.epoch)[self.skip_batches * self.batch_size :]

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip_batches) * self.batch_size


class BatchStream:
    """Endless batches over epochs with a resumable position ``(epoch, batch in epoch)``."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int,
        info: DistInfo = DistInfo(),
        workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        self.dataset = dataset
        self.sampler = ResumableSampler(
            len(dataset), batch_size=batch_size, seed=seed, rank=info.rank, world_size=info.world_size  # type: ignore[arg-type]
        )
        # A private generator: creating an iterator draws worker seeds, which must not move the global RNG.
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            drop_last=True,
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )
        self.epoch = 0
        self.position = 0
        self._iterator: Iterator[Any] | None = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._iterator = None

    def next(self) -> Any:
        while True:
            if self._iterator is None:
                if self.position >= self.sampler.batches_per_epoch:
                    self.epoch, self.position = self.epoch + 1, 0
                self.sampler.set_position(self.epoch, self.position)
                set_epoch = getattr(self.dataset, "set_epoch", None)
                if set_epoch is not None:
                    set_epoch(self.epoch)
                self._iterator = iter(self.loader)
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = None
                self.epoch, self.position = self.epoch + 1, 0
                continue
            self.position += 1
            return batch
