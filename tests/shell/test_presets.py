"""Every shipped preset validates against its stage, and carries the original's exact values."""

from __future__ import annotations

import pytest

from quantart_cli.shell.plugins import discover_stages
from quantart_cli.shell.presets import builtin_preset_dir, list_presets, load_preset
from quantart_cli.shell.settings import resolve_settings

STAGES = discover_stages().stages
EXPECTED = {
    "train-vq": {"wikiart", "coco", "landscape", "ffhq", "metfaces", "tiny"},
    "train-sga": {"landscape2art", "coco2art", "face2art", "art2art", "coco2coco", "landscape2landscape", "tiny"},
}
ALL = [(stage, name) for stage in EXPECTED for name in sorted(list_presets(stage))]


def test_every_original_configuration_ships():
    for stage, names in EXPECTED.items():
        assert builtin_preset_dir(stage) is not None
        assert names <= set(list_presets(stage))


@pytest.mark.parametrize(("stage", "name"), ALL)
def test_preset_validates_and_has_a_description(stage, name):
    settings_cls = STAGES[stage].stage.settings
    _, description = load_preset(list_presets(stage)[name], settings_cls)
    assert description
    resolved = resolve_settings(settings_cls, stage=stage, preset=name, environ={})
    assert resolved.preset_path is not None


def _settings(stage, name):
    return resolve_settings(STAGES[stage].stage.settings, stage=stage, preset=name, environ={}).settings


@pytest.mark.parametrize("name", ["wikiart", "coco", "landscape", "ffhq", "metfaces"])
def test_stage1_presets_use_the_f16_configuration(name):
    s = _settings("train-vq", name)
    ae, q = s.model.autoencoder, s.model.quantizer
    assert (ae.ch, ae.ch_mult, ae.num_res_blocks, ae.attn_resolutions) == (128, (1, 1, 2, 2, 4), 2, (16,))
    assert (ae.resolution, ae.z_channels, ae.double_z, ae.dropout) == (256, 256, False, 0.0)
    assert (q.n_embed, q.embed_dim, q.beta, q.legacy_loss) == (1024, 256, 0.25, True)
    assert s.base_lr == 4.5e-6 and s.size == 256 and s.lr is None
    assert s.loss.disc_weight == 0.8 and s.loss.codebook_weight == 1.0 and s.loss.perceptual_weight == 1.0


def test_wikiart_matches_the_original_config():
    s = _settings("train-vq", "wikiart")
    assert s.batch_size == 5 and s.loss.disc_start == 10000


@pytest.mark.parametrize(
    ("name", "disc_factor", "codebook1", "style"),
    [("landscape2art", 0.8, 1.0, 10.0), ("coco2art", 0.8, 1.0, 10.0), ("face2art", 0.1, 10.0, 10.0),
     ("art2art", 0.8, 1.0, 10.0), ("coco2coco", 0.8, 1.0, 100.0)],
)
def test_stage2_presets_match_spec_3_6(name, disc_factor, codebook1, style):
    s = _settings("train-sga", name)
    assert (s.loss.disc_factor, s.loss.codebook1_weight, s.loss.style_weight) == (disc_factor, codebook1, style)
    assert (s.loss.disc_weight, s.loss.reverse_weight, s.loss.disc_start, s.loss.disc_num_layers) == (1.0, 1.0, 0, 0)
    assert s.batch_size == 8 and s.base_lr == 4.5e-6 and s.sga_blocks == 6


def test_landscape2art_filters_landscape_genre():
    assert _settings("train-sga", "landscape2art").style_genre == "landscape"


def test_tiny_presets_are_small_and_download_nothing():
    s = _settings("train-vq", "tiny")
    assert s.loss.perceptual_weight == 0.0
    assert s.model.autoencoder.ch <= 32 and s.size <= 128
