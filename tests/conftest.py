"""Shared pytest fixtures: the two tiers, an isolated QUANTART_* environment per test, ``one_thread``, and small
image folders. Tiny models come from ``tiny_models.py``, images from ``image_files.py`` (beside this file)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests use tiny models: one thread is as fast, and several collapse when the cores are shared (OpenMP threads
# spin waiting on each other). One thread whatever the caller set: CPU kernels sum in an order that depends on the
# thread count, so a run is reproducible only with the count pinned. Set before torch is imported, so subprocesses
# inherit it too.
os.environ["OMP_NUM_THREADS"] = "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run the slow tier (tests marked slow); CI runs both")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Two tiers: by default only the fast one (minutes); ``--slow`` adds the tests marked ``slow``."""
    if config.getoption("--slow"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def pytest_report_header(config: pytest.Config) -> str:
    return "tiers: fast and slow" if config.getoption("--slow") else "tiers: fast only (add --slow for the slow tier)"


@pytest.fixture(autouse=True)
def isolated_quantart_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own QUANTART_* folders and none of the caller's QUANTART_* settings."""
    for name in list(os.environ):
        if name.startswith("QUANTART_"):
            monkeypatch.delenv(name)
    base = tmp_path_factory.mktemp("quantart-home")
    monkeypatch.setenv("QUANTART_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("QUANTART_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("QUANTART_RUNS_DIR", str(base / "runs"))
    return base


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch intra-op thread for a whole module, whatever the caller set (a module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``; it is set up before the module's other fixtures). Tiny
    tensors run many times slower with two OpenMP threads when other processes share the cores (barriers wait for
    descheduled threads), and CPU kernels sum in an order that depends on the count, so pinned results stay
    reproducible."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder of small sample photos (48x32 px) with one more (40x40 px) in a subfolder ``trip/`` of the same name
    as one beside it, for the stylize tests of folders."""
    from PIL import Image

    from quantart_cli.samples import CONTENT_DIR

    folder = tmp_path / "photos"
    (folder / "trip").mkdir(parents=True)
    for source in sorted(CONTENT_DIR.glob("*.jpg")):
        Image.open(source).resize((48, 32)).save(folder / source.name)
    Image.open(sorted(CONTENT_DIR.glob("*.jpg"))[0]).resize((40, 40)).save(folder / "trip" / "lhq_1.jpg")
    return folder


@pytest.fixture
def small_images(tmp_path: Path) -> Path:
    """Four smooth 32x32 PNGs, ``img_0.png`` ... ``img_3.png``, in ``tmp_path/images``."""
    from image_files import smooth_images

    return smooth_images(tmp_path / "images", 4)


@pytest.fixture
def tiny_vq(tmp_path: Path) -> Path:
    """A checkpoint of ``tiny_vq_config()`` (seed 0, step 0) at ``tmp_path/tiny_vq.pt``."""
    from tiny_models import seeded_vqgan, tiny_vq_config

    from quantart_cli.core.io.checkpoints import save_checkpoint

    return save_checkpoint(seeded_vqgan(tiny_vq_config(), 0), tmp_path / "tiny_vq.pt", step=0)


@pytest.fixture
def tiny_style_transfer(tmp_path: Path) -> Path:
    """A checkpoint of ``tiny_st_config()`` (seed 0, step 0) at ``tmp_path/tiny_st.pt``."""
    from tiny_models import seeded_style_transfer

    from quantart_cli.core.io.checkpoints import save_checkpoint

    return save_checkpoint(seeded_style_transfer(seed=0), tmp_path / "tiny_st.pt", step=0)
