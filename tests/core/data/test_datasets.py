"""Training datasets (quantart_cli.core.data.datasets): unreadable files skipped and counted, crops and
flips, unpaired content/style pairs, the genre filter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from image_files import noise_image, truncated_jpeg, write_image
from torch.utils.data import DataLoader

from quantart_cli.core.data.datasets import ImageDataset, UnpairedDataset
from quantart_cli.core.data.sources import select_style_by_genre
from quantart_cli.core.data.transforms import transform_image
from quantart_cli.core.errors import BadInputError, NotFoundError, UsageError
from quantart_cli.core.io.images import (
    image_to_tensor,
    load_image,
)


@pytest.fixture()
def mixed_folder(tmp_path) -> Path:
    """Three good images, a truncated JPEG (header fine, body cut) and a text file named .jpg."""
    folder = tmp_path / "mixed"
    for index, size in enumerate([(40, 20), (20, 40), (30, 30)]):
        write_image(folder / f"good{index}.png", noise_image(*size, seed=index))
    truncated_jpeg(folder / "good1_cut.jpg")  # sorts between good1 and good2
    (folder / "zz_text.jpg").write_text("hello")
    return folder


def test_dataset_skips_corrupt_files_and_counts_them(mixed_folder):
    dataset = ImageDataset(mixed_folder, size=16)
    assert dataset.skipped == 1  # the text file, at the header scan
    assert len(dataset) == 4
    items = [dataset[i] for i in range(len(dataset))]
    assert dataset.skipped == 2  # the truncated JPEG, at decode time
    assert {Path(p).name for p in dataset.skipped_paths} == {"zz_text.jpg", "good1_cut.jpg"}
    assert [Path(item["path"]).name for item in items] == ["good0.png", "good1.png", "good2.png", "good2.png"]
    assert [item["index"] for item in items] == [0, 1, 3, 3]
    for item in items:
        assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    dataset[2]  # a known-bad file is not decoded (or counted) again
    assert dataset.skipped == 2 and dataset.summary() == {"images": 4, "skipped": 2}


def test_skip_count_survives_dataloader_workers(mixed_folder):
    dataset = ImageDataset(mixed_folder, size=8)
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    batches = list(loader)
    assert sum(batch["image"].shape[0] for batch in batches) == 4
    assert all(isinstance(path, str) for batch in batches for path in batch["path"])
    assert dataset.skipped == 2


def test_too_few_readable_images(mixed_folder, tmp_path):
    with pytest.raises(BadInputError, match="Only 4 of 5 training images are readable; at least 5 are needed"):
        ImageDataset(mixed_folder, size=8, min_images=5)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"")
    (bad / "b.jpg").write_text("text")
    with pytest.raises(BadInputError, match="Only 0 of 2"):
        ImageDataset(bad)
    only_truncated = tmp_path / "cut"
    truncated_jpeg(only_truncated / "c.jpg")
    with pytest.raises(BadInputError, match="None of the 1 training images could be decoded"):
        ImageDataset(only_truncated)[0]


def test_random_crop_and_flip_are_reproducible(tmp_path):
    folder = tmp_path / "imgs"
    for index in range(4):
        write_image(folder / f"{index}.png", noise_image(48, 32, seed=index))
    first = ImageDataset(folder, size=16, crop="random", hflip=True, seed=3)
    second = ImageDataset(folder, size=16, crop="random", hflip=True, seed=3)
    assert all(torch.equal(first[i]["image"], second[i]["image"]) for i in range(4))
    epoch0 = [first[i]["image"] for i in range(4)]
    first.set_epoch(1)
    assert first.epoch == 1
    assert any(not torch.equal(a, first[i]["image"]) for i, a in enumerate(epoch0))
    default = ImageDataset(folder, size=16)  # stage-1 default: deterministic centre crop
    assert torch.equal(default[0]["image"], transform_image(load_image(folder / "0.png"), 16))


@pytest.fixture()
def unpaired(tmp_path) -> tuple[Path, Path]:
    content, style = tmp_path / "content", tmp_path / "style"
    for index in range(6):
        write_image(content / f"c{index}.png", noise_image(20, 12, seed=index))
    for index in range(4):
        write_image(style / f"s{index}.jpg", noise_image(12, 20, seed=100 + index))
    return content, style


def test_unpaired_lengths_shapes_and_items(unpaired, tmp_path):
    content, style = unpaired
    dataset = UnpairedDataset(content, style, size=8, seed=1)
    assert len(dataset) == 4  # min(6 content, 4 style)
    item = dataset[0]
    assert set(item) == {"content", "style", "content_path", "style_path"}
    assert item["content"].shape == item["style"].shape == (3, 8, 8)
    assert Path(item["content_path"]).name == "c0.png" and Path(item["style_path"]).parent == style
    one_style = UnpairedDataset(content, style / "s0.jpg", size=8)
    assert len(one_style) == 6  # a single style image is repeated over all content
    assert {Path(one_style[i]["style_path"]).name for i in range(6)} == {"s0.jpg"}
    # Squash keeps the whole 20x12 image: the mean colour survives.
    expected_mean = image_to_tensor(load_image(content / "c0.png")).mean()
    assert abs(item["content"].mean() - expected_mean) < 0.05
    assert UnpairedDataset(content, style, size=8, max_items=2).summary()["pairs"] == 2


def test_unpaired_pairing_is_reproducible_per_epoch_and_across_workers(unpaired):
    content, style = unpaired
    make = lambda seed: UnpairedDataset(content, style, size=8, seed=seed)  # noqa: E731
    dataset = make(7)
    pairs = [dataset[i]["style_path"] for i in range(len(dataset))]
    assert pairs == [make(7)[i]["style_path"] for i in range(len(dataset))]
    draws = {seed: [make(seed).style_index(i) for i in range(4)] for seed in range(8)}
    assert len({tuple(d) for d in draws.values()}) > 1  # the seed matters
    per_epoch = []
    for epoch in range(6):
        dataset.set_epoch(epoch)
        per_epoch.append(tuple(dataset.style_index(i) for i in range(4)))
    assert len(set(per_epoch)) > 1  # re-drawn each epoch, as in the original
    dataset.set_epoch(3)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, persistent_workers=True)
    from_workers = [path for batch in loader for path in batch["style_path"]]
    assert from_workers == [str(dataset.style_paths[i]) for i in per_epoch[3]]
    dataset.set_epoch(4)  # persistent workers see the new epoch through shared memory
    from_workers = [path for batch in loader for path in batch["style_path"]]
    assert from_workers == [str(dataset.style_paths[i]) for i in per_epoch[4]]


def test_unpaired_skips_bad_style_and_content(unpaired):
    content, style = unpaired
    truncated_jpeg(style / "s1.jpg")
    (content / "c9.png").write_text("not an image")
    dataset = UnpairedDataset(content, style, size=8)
    assert dataset.summary()["skipped_content"] == 1
    styles = {Path(dataset[i]["style_path"]).name for i in range(len(dataset))}
    for epoch in range(1, 6):
        dataset.set_epoch(epoch)
        styles |= {Path(dataset[i]["style_path"]).name for i in range(len(dataset))}
    assert "s1.jpg" not in styles
    assert dataset.summary()["skipped_style"] == 1 and dataset.skipped == 2


def test_genre_filter(tmp_path, unpaired):
    content, style = unpaired
    info = tmp_path / "train_info.csv"
    info.write_text(
        "filename,artist,style,genre,date\n"
        "s0.jpg,A,Impressionism,landscape,1890\n"
        "s1.jpg,B,Realism,portrait,1850\n"
        's2.jpg,C,"Romanticism, late",Landscape,1820\n'
        "s3.jpg,D,Cubism,,1910\n"
    )
    selected = select_style_by_genre(style, info, "landscape")
    assert [p.name for p in selected] == ["s0.jpg", "s2.jpg"]
    dataset = UnpairedDataset(content, style, size=8, style_genre_csv=info, style_genre="landscape")
    assert len(dataset) == 2 and [p.name for p in dataset.style_paths] == ["s0.jpg", "s2.jpg"]
    for epoch in range(4):
        dataset.set_epoch(epoch)
        assert {Path(dataset[i]["style_path"]).name for i in range(2)} <= {"s0.jpg", "s2.jpg"}
    with pytest.raises(BadInputError, match="genre 'still life'.*landscape, portrait"):
        select_style_by_genre(style, info, "still life")
    info.write_text("filename,genre\ns0.jpg,landscape\nlost.jpg,landscape\n")
    with pytest.raises(NotFoundError, match="1 of the 2 'landscape' files.*lost.jpg"):
        UnpairedDataset(content, style, style_genre_csv=info, style_genre="landscape")
    with pytest.raises(UsageError, match="both"):
        UnpairedDataset(content, style, style_genre="landscape")
