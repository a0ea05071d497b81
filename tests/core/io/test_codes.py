"""Code files: the same records always give the same bytes (what lets a folder encoded by several processes equal
one encoded by a single process)."""

from __future__ import annotations

import json

import torch

from quantart_cli.core.io.codes import CodeFile, CodeRecord, load_code_file, save_code_file


def _code_file(n: int) -> CodeFile:
    generator = torch.Generator().manual_seed(0)
    records = [CodeRecord(torch.randint(0, 64, (2, 3), generator=generator), 4, 4, (1, 1, 0, 0), f"photos/p{i}.png")
               for i in range(n)]
    return CodeFile(records, "ab" * 32, 64, 2)


def test_the_same_records_give_the_same_bytes_every_time(tmp_path):
    """safetensors writes the header's metadata in hash-map order, which changed from one save to the next (two
    encodes of one folder gave different bytes); the header is now written with sorted keys."""
    for n in (1, 3):
        code_file = _code_file(n)
        saved = {save_code_file(tmp_path / f"{n}-{i}.safetensors", code_file).read_bytes() for i in range(12)}
        assert len(saved) == 1
        data = saved.pop()
        size = int.from_bytes(data[:8], "little")
        assert size % 8 == 0  # the tensors start 8-byte aligned, as safetensors' own writer leaves them
        assert list(json.loads(data[8 : 8 + size])["__metadata__"]) == sorted(json.loads(data[8 : 8 + size])
                                                                              ["__metadata__"])
        loaded = load_code_file(tmp_path / f"{n}-0.safetensors")
        assert [r.source for r in loaded.records] == [r.source for r in code_file.records]
        assert all(torch.equal(a.indices, b.indices) for a, b in zip(loaded.records, code_file.records, strict=True))
        assert (loaded.checkpoint_sha256, loaded.n_embed, loaded.downsample_factor) == ("ab" * 32, 64, 2)
