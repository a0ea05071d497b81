"""Splitting a job across torchrun's processes (``quantart_cli.core.split``), in one process: the shares, what a
process does after a meeting, the device and threads of each process. Two real processes run in
tests/stages/test_split_across_processes.py (slow tier)."""

from __future__ import annotations

import pytest
import torch

from quantart_cli.core import devices, split
from quantart_cli.core.errors import NotFoundError, UsageError
from quantart_cli.core.train.ddp import DistInfo


@pytest.mark.parametrize("group", [1, 2, 3, 8])
@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_every_item_is_in_exactly_one_share_and_the_shares_are_balanced(world_size, group):
    for count in range(0, 30):
        items = [f"photo_{i}.jpg" for i in range(count)]
        shares = [split.share(items, rank, world_size, group=group) for rank in range(world_size)]
        assert sorted(item for share in shares for item in share) == sorted(items)
        for share in shares:
            assert share == sorted(share, key=items.index)  # each keeps the list's order
        sizes = [len(share) for share in shares]
        assert max(sizes) - min(sizes) <= group
        assert sizes == sorted(sizes, reverse=True)  # the first processes get the extra items
        for index, item in enumerate(items):  # consecutive groups, dealt round-robin
            assert item in shares[(index // group) % world_size]


def test_a_share_of_one_process_is_everything_and_bad_ranks_are_refused():
    assert split.share(["a", "b", "c"], 0, 1) == ["a", "b", "c"]
    assert split.share(["a", "b", "c"], 1, 2) == ["b"]
    for rank, world_size, group in ((2, 2, 1), (-1, 2, 1), (0, 0, 1), (0, 2, 0)):
        with pytest.raises(ValueError):
            split.share(["a"], rank, world_size, group=group)


BAD = ("BadInputError", "photos/x.png is truncated.")
OTHER = ("WriteError", "Cannot write image out/y.png (No space left on device).")


@pytest.mark.parametrize(
    ("said", "rank", "expected"),
    [
        ([None, None, None], 1, None),  # nobody failed: carry on
        ([BAD, BAD, BAD], 0, "raise"),  # the same mistake everywhere: rank 0 says it ...
        ([BAD, BAD, BAD], 2, "stop"),  # ... and the others stop quietly
        ([None, OTHER, None], 1, "raise"),  # an error of one process: it says it ...
        ([None, OTHER, None], 0, "stop"),  # ... and the others stop quietly, rank 0 too
        ([None, OTHER, None], 2, "stop"),
        ([BAD, OTHER, BAD], 1, "raise"),  # another error than rank 0's: said too
        ([BAD, OTHER, BAD], 2, "stop"),
    ],
)
def test_after_a_meeting_each_error_is_said_once(said, rank, expected):
    assert split.verdict(said, rank) == expected


def test_a_single_process_is_left_as_it_is():
    with split.joined({}) as info:
        assert info == DistInfo() and not info.enabled
        assert split.gather({"written": 3}, info) == [{"written": 3}]
        with pytest.raises(UsageError, match="photos"), split.together(info):  # errors pass unchanged
            raise UsageError("photos is empty.")
        with split.together(info):
            done = True
        assert done
    assert not torch.distributed.is_initialized()
    assert split.process_device("cpu", info) == torch.device("cpu")


def test_under_torchrun_each_process_gets_its_share_of_the_cores_unless_omp_num_threads_is_set(monkeypatch):
    threads: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    monkeypatch.setattr(split, "_cores", lambda: 16)
    info = DistInfo(rank=5, world_size=8, local_rank=1)
    assert split.process_device("cpu", info, {"LOCAL_WORLD_SIZE": "4"}) == torch.device("cpu")
    assert threads == [4]
    split.process_device("cpu", info, {"LOCAL_WORLD_SIZE": "32"})
    assert threads == [4, 1]  # never fewer than one
    split.process_device("cpu", info, {"LOCAL_WORLD_SIZE": "4", "OMP_NUM_THREADS": "2"})
    split.process_device("cpu", DistInfo(), {})
    assert threads == [4, 1]  # the user's choice, or a single process: left alone


def test_under_torchrun_each_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    chosen: list[torch.device] = []
    monkeypatch.setattr(devices, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    environ = {"LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    assert split.process_device("cuda:0", DistInfo(3, 4, 1), environ) == torch.device("cuda", 1)
    assert chosen == [torch.device("cuda", 1)]
    with pytest.raises(NotFoundError, match="3 processes on this machine but it has 2 CUDA device"):
        split.process_device("auto", DistInfo(2, 3, 2), {**environ, "LOCAL_WORLD_SIZE": "3"})
