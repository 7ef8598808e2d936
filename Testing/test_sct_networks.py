"""X2CT-GAN generator, 3D PatchGAN and losses: published sizes, orientation of the 2D -> 3D lift, losses."""

from __future__ import annotations

import pytest
import torch

from bonekit import BoneKitError
from bonekit.sct.networks import (DiscriminatorConfig3D, PatchDiscriminator3D, X2CTConfig, X2CTGenerator, X2CTLoss,
                                  build_discriminator, build_generator, count_parameters, expand_view,
                                  mean_projections)


@pytest.mark.parametrize("size, total, view, fc", [(128, 61_740_467, 29_384_481, 11_550_720),
                                                    (192, 116_606_387, 56_817_441, 38_983_680)])
def test_generator_has_x2ct_gans_parameter_counts(size, total, view, fc):
    """Counts of X2CT-GAN's multiview_network_denseUNetFuse_transposed (shared/reference §2.1)."""
    with torch.device("meta"):
        g = X2CTGenerator(X2CTConfig.paper(size))
    assert count_parameters(g) == total
    per_view = sum(count_parameters(m[0]) for m in (g.encoders, g.bridges, g.links, g.view_decoders, g.view_heads))
    assert per_view == view
    assert count_parameters(g.bridges[0]) == fc
    assert count_parameters(g.fusion) + count_parameters(g.fusion_head) == 2_971_505


def test_discriminator_has_x2ct_gans_parameter_count():
    with torch.device("meta"):
        assert count_parameters(PatchDiscriminator3D(DiscriminatorConfig3D())) == 11_055_169


#: a 4-stage model small enough for 32^2 -> 32^3 (the 5-stage light model needs 64)
TINY = X2CTConfig(size=32, stem_channels=8, growth=4, dense_layers=(2, 2, 2, 2), decoder_channels=(4, 4, 8, 8, 16),
                  view_blocks=(1, 1, 1, 1, 0), fusion_blocks=(1, 1, 1, 1, 0), view_heads=False)


@pytest.fixture(scope="module")
def light():
    return build_generator(TINY, seed=3)


def test_light_generator_output_and_gradients(light):
    ap, lat = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    out = light(ap, lat)
    assert out.shape == (2, 1, 32, 32, 32) and out.min() >= 0            # ReLU output, as X2CT
    out.mean().backward()
    assert all(p.grad is not None for p in light.parameters())         # every weight is used
    light.zero_grad()
    assert count_parameters(light) < 200_000
    light64 = build_generator(X2CTConfig.light())
    assert 500_000 < count_parameters(light64) < 1_200_000


def test_instance_statistics_per_case_at_inference(light):
    """X2CT normalises each case by its own statistics at test time: a case's output does not depend
    on the rest of the batch, and dropout is the only train/eval difference."""
    cfg = TINY
    g = build_generator(X2CTConfig.from_dict({**cfg.to_dict(), "dropout": 0.0}), seed=3)
    ap, lat = torch.rand(3, 1, 32, 32), torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        g.eval()
        batch = g(ap, lat)
        single = g(ap[1:2], lat[1:2])
        g.train()
        trained_mode = g(ap, lat)
    torch.testing.assert_close(batch[1:2], single, atol=2e-4, rtol=1e-3)   # float32 rounding of batched convs
    torch.testing.assert_close(batch, trained_mode)


def test_view_heads_are_returned_when_built():
    cfg = X2CTConfig.from_dict({**TINY.to_dict(), "view_heads": True})
    fused, from_ap, from_lat = build_generator(cfg)(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))
    assert fused.shape == from_ap.shape == from_lat.shape == (1, 1, 32, 32, 32)


def test_views_are_lifted_along_their_rays():
    """CT order (D, H, W) = (superior->inferior, anterior->posterior, right->left): the AP image
    (rows D, columns W) is copied along H, the lateral (rows D, columns H) along W."""
    img = torch.arange(12.0).view(1, 1, 3, 4)[..., :3]                 # (1, 1, D=3, X=3)
    ap = expand_view(img, 3)
    lat = expand_view(img, 4)
    assert ap.shape == lat.shape == (1, 1, 3, 3, 3)
    for h in range(3):
        torch.testing.assert_close(ap[0, 0, :, h, :], img[0, 0])          # every coronal slice is the AP image
        torch.testing.assert_close(lat[0, 0, :, :, h], img[0, 0])         # every sagittal slice the lateral
    with pytest.raises(BoneKitError):
        expand_view(img, 2)


def test_bad_sizes_and_settings_are_refused(light):
    with pytest.raises(BoneKitError, match=r"\(N, 1, 32, 32\)"):
        light(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 64, 64))
    with pytest.raises(BoneKitError, match="multiple of 32"):
        X2CTConfig(size=100)
    with pytest.raises(BoneKitError, match="at least 64"):
        X2CTConfig(size=32)
    with pytest.raises(BoneKitError, match="decoder_channels"):
        X2CTConfig(decoder_channels=(16, 32))
    with pytest.raises(BoneKitError, match="Unknown X2CTConfig"):
        X2CTConfig.from_dict({"sise": 64})
    assert X2CTConfig.from_dict(X2CTConfig.light().to_dict()) == X2CTConfig.light()


def test_discriminator_and_losses():
    d = build_discriminator(DiscriminatorConfig3D.light())
    ap, lat, ct = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32, 32)
    score = d(ap, lat, ct)
    assert score.shape[:2] == (2, 1) and score.ndim == 5
    loss = X2CTLoss()
    same = loss.generator(ct, ct.clone(), None)
    assert same["reconstruction"] == 0 and same["projection"] == 0 and same["total"] == 0
    other = ct.clone()
    other[:, :, :4] += 0.5                                              # brighter top slab
    terms = loss.generator(ct, other, torch.ones_like(score))
    assert terms["gan"] == 0                                            # the discriminator says "real"
    assert terms["reconstruction"] == pytest.approx(0.25 * 4 / 32, rel=1e-4)
    # mean |v| projections: along D the slab adds 0.5 * 4/32; along H and W it adds 0.5 to 4 of 32 rows
    expected = (0.5 * 4 / 32 + 2 * 0.5 * 4 / 32) / 3
    assert terms["projection"] == pytest.approx(expected, rel=1e-4)
    expected_total = float(10 * terms["reconstruction"] + 10 * terms["projection"])
    assert float(terms["total"]) == pytest.approx(expected_total, rel=1e-5)
    d_loss = loss.discriminator(torch.ones_like(score), torch.zeros_like(score))
    assert d_loss == 0
    proj = mean_projections(torch.ones(1, 1, 2, 3, 4))
    assert [tuple(p.shape) for p in proj] == [(1, 1, 3, 4), (1, 1, 2, 4), (1, 1, 2, 3)]
