"""Codebook pictures (quantart_cli.core.codebook.atlas): the rank plot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantart_cli.core.codebook.atlas import render_rank_plot


def test_rank_plot_is_drawn() -> None:
    image = render_rank_plot([("a", torch.tensor([100, 10, 1, 0])), ("b", torch.tensor([3, 3, 3, 3]))],
                             width=640, height=400)
    assert image.size == (640, 400)
    pixels = np.asarray(image)
    blue = np.all(pixels == (31, 119, 180), axis=-1).sum()
    orange = np.all(pixels == (255, 127, 14), axis=-1).sum()
    assert blue > 100 and orange > 100
    with pytest.raises(ValueError):
        render_rank_plot([])
