"""Tests of bonekit.sr.networks: architectures against counted references, shapes, coarse-to-fine
loading, losses against hand-computed values, the VGG19 weight-file layout, configs, determinism.

Everything runs on CPU with tiny networks; the full-size networks are built on the ``meta``
device, which allocates no memory.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from bonekit.errors import BoneKitError  # noqa: E402
from bonekit.sr.networks import (  # noqa: E402
    DiscriminatorConfig, GANLoss, GeneratorConfig, LocalEnhancer, VGGLoss, build_discriminator,
    build_generator, check_input_size, count_parameters, enhancer_parameters, feature_matching_loss,
    init_weights, load_global_weights, min_input_size, padded_size, size_multiple)

torch.set_num_threads(1)

# tiny configurations, one per architecture, with a valid (non-square) input size each
TINY = {
    "pix2pixhd_global": (GeneratorConfig(arch="pix2pixhd_global", ngf=4, n_downsample=2, n_blocks=1), (16, 24)),
    "pix2pixhd_local": (GeneratorConfig(arch="pix2pixhd_local", ngf=2, n_downsample=2, n_blocks=1,
                                        n_blocks_local=1), (16, 32)),
    "pix2pixhd_local2": (GeneratorConfig(arch="pix2pixhd_local", ngf=2, n_downsample=1, n_blocks=1,
                                         n_local_enhancers=2, n_blocks_local=1), (16, 24)),
    "pix2pix_unet": (GeneratorConfig(arch="pix2pix_unet", ngf=2, depth=6), (64, 128)),
    "unet": (GeneratorConfig(arch="unet", ngf=4, depth=2), (8, 12)),
}


# ---------------------------------------------------------------------------------------------
# parameter counts of the full-size networks (reference: deep-learning-references.md section 1.7)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg, expected", [
    (GeneratorConfig(arch="pix2pixhd_global", ngf=64, n_downsample=4, n_blocks=9), 182_430_721),
    (GeneratorConfig(arch="pix2pixhd_global", ngf=64, n_downsample=3, n_blocks=9), 45_580_801),
    (GeneratorConfig(arch="pix2pixhd_global", in_channels=3, out_channels=3), 182_443_267),
    (GeneratorConfig.paper(), 182_689_281),
    (GeneratorConfig(arch="pix2pixhd_local", ngf=64), 730_700_801),
    # pix2pix's unet_256 with its defaults (3 channels, batch norm) prints "54.414 M" parameters
    (GeneratorConfig(arch="pix2pix_unet", in_channels=3, out_channels=3, norm="batch", depth=8), 54_413_955),
])
def test_generator_parameter_counts(cfg, expected):
    with torch.device("meta"):
        net = build_generator(cfg)
    assert count_parameters(net) == expected


def test_local_enhancer_branch_adds_reference_count():
    with torch.device("meta"):
        net = build_generator(GeneratorConfig.paper())
    assert count_parameters(net) - count_parameters(net.model) == 261_697
    assert sum(p.numel() for p in enhancer_parameters(net)) == 261_697


@pytest.mark.parametrize("num_d, expected", [(2, 5_527_426), (3, 8_291_139)])
def test_discriminator_parameter_counts(num_d, expected):
    with torch.device("meta"):
        net = build_discriminator(DiscriminatorConfig(in_channels=2, ndf=64, n_layers=3, num_D=num_d))
    assert count_parameters(net) == expected
    with torch.device("meta"):
        assert count_parameters(build_discriminator(DiscriminatorConfig.paper())) == 8_291_139


def test_light_presets_are_small():
    with torch.device("meta"):
        g = build_generator(GeneratorConfig.light())
        d = build_discriminator(DiscriminatorConfig.light())
    assert count_parameters(g) < 2_000_000
    assert count_parameters(d) < 2_000_000
    assert GeneratorConfig.light().arch == "pix2pixhd_local"


def test_pix2pix_unet_dropout_blocks_as_unet_256():
    # unet_256: three ngf*8 blocks between the 4th level and the innermost carry Dropout(0.5)
    with torch.device("meta"):
        net = build_generator(GeneratorConfig(arch="pix2pix_unet"))
        nodrop = build_generator(GeneratorConfig(arch="pix2pix_unet", use_dropout=False))
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 3 and all(m.p == 0.5 for m in drops)
    assert not any(isinstance(m, nn.Dropout) for m in nodrop.modules())
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in net.modules()) == 7


# ---------------------------------------------------------------------------------------------
# shapes and sizes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TINY))
def test_output_shape_and_range(name):
    cfg, (h, w) = TINY[name]
    torch.manual_seed(0)
    net = init_weights(build_generator(cfg), seed=1).eval()
    x = 3.0 * torch.randn(2, 1, h, w)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert y.abs().max() <= 1.0


@pytest.mark.parametrize("name", sorted(TINY))
def test_batch_norm_variants_train(name):
    cfg, (h, w) = TINY[name]
    cfg = GeneratorConfig.from_dict({**cfg.to_dict(), "norm": "batch"})
    net = init_weights(build_generator(cfg), seed=1).train()
    x = torch.randn(2, 1, h, w, requires_grad=True)
    y = net(x)
    assert y.shape == x.shape
    y.mean().backward()
    assert x.grad is not None


def test_size_multiples():
    assert size_multiple(GeneratorConfig()) == 16
    assert size_multiple(GeneratorConfig(n_downsample=3)) == 8
    assert size_multiple(GeneratorConfig.paper()) == 32
    assert GeneratorConfig.paper().size_multiple == 32
    assert size_multiple(GeneratorConfig(arch="pix2pixhd_local", n_downsample=3, n_local_enhancers=2)) == 32
    assert size_multiple(GeneratorConfig(arch="pix2pix_unet")) == 256
    assert size_multiple(GeneratorConfig(arch="unet")) == 16
    assert size_multiple(GeneratorConfig(arch="unet", depth=3)) == 8
    assert min_input_size(GeneratorConfig.light()) == 32
    assert min_input_size(GeneratorConfig(arch="pix2pix_unet")) == 256
    assert padded_size(GeneratorConfig.light(), 33, 10) == (48, 32)
    assert padded_size(GeneratorConfig.light(), 512, 512) == (512, 512)


@pytest.mark.parametrize("name", sorted(TINY))
def test_bad_size_is_a_clear_error(name):
    cfg, (h, w) = TINY[name]
    check_input_size(cfg, h, w)
    m = size_multiple(cfg)
    with pytest.raises(BoneKitError, match=f"multiples of {m} pixels"):
        check_input_size(cfg, h + 1, w)
    with pytest.raises(BoneKitError, match="pad"):
        check_input_size(cfg, h, w + m // 2 if m > 1 else w + 1)
    with pytest.raises(BoneKitError, match=f"at least {min_input_size(cfg)}"):
        check_input_size(cfg, min_input_size(cfg) - m, w)
    net = build_generator(cfg).eval()
    with pytest.raises(BoneKitError, match=f"{h + 1}x{w}"):
        net(torch.zeros(1, 1, h + 1, w))


# ---------------------------------------------------------------------------------------------
# coarse-to-fine: global generator into local enhancer
# ---------------------------------------------------------------------------------------------

def _tiny_pair(n_local=1):
    local_cfg = GeneratorConfig(arch="pix2pixhd_local", ngf=2, n_downsample=2, n_blocks=2,
                                n_local_enhancers=n_local, n_blocks_local=1)
    global_cfg = GeneratorConfig(arch="pix2pixhd_global", ngf=2 * 2 ** n_local, n_downsample=2, n_blocks=2)
    return (init_weights(build_generator(local_cfg), seed=1),
            init_weights(build_generator(global_cfg), seed=2))


@pytest.mark.parametrize("n_local", [1, 2])
def test_local_enhancer_loads_global_weights(n_local):
    local, glob = _tiny_pair(n_local)
    src = glob.state_dict()
    keys = load_global_weights(local, src)
    dst = local.state_dict()
    model_keys = [k for k in dst if k.startswith("model.")]
    assert keys == model_keys and keys
    for k in keys:
        assert torch.equal(dst[k], src[k])
    # everything but the global head was taken
    assert set(src) - set(keys) == {f"model.{len(glob.model) - 2}.weight", f"model.{len(glob.model) - 2}.bias"}
    # the local net's global part now computes the global generator without its head
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(local.model(x), nn.Sequential(*list(glob.model)[:-3])(x))
    # also accepts the module itself
    assert load_global_weights(local, glob) == keys


@pytest.mark.parametrize("n_local", [1, 2])
def test_enhancer_parameters_excludes_global(n_local):
    local, _ = _tiny_pair(n_local)
    enh = {id(p) for p in enhancer_parameters(local)}
    outer = f"model{n_local}_"
    expected = {id(p) for name, p in local.named_parameters() if name.startswith(outer)}
    assert enh == expected and enh
    assert not enh & {id(p) for p in local.model.parameters()}
    if n_local == 2:
        assert not enh & {id(p) for p in local.model1_1.parameters()}
    # the outermost enhancer holds the head
    assert id(list(getattr(local, f"model{n_local}_2").parameters())[-1]) in enh


def test_load_global_weights_mismatch():
    local, _ = _tiny_pair(1)
    wrong_width = build_generator(GeneratorConfig(arch="pix2pixhd_global", ngf=6, n_downsample=2, n_blocks=2))
    with pytest.raises(BoneKitError, match="shape"):
        load_global_weights(local, wrong_width.state_dict())
    more_blocks = build_generator(GeneratorConfig(arch="pix2pixhd_global", ngf=4, n_downsample=2, n_blocks=3))
    with pytest.raises(BoneKitError, match="do not fit"):
        load_global_weights(local, more_blocks.state_dict())
    with pytest.raises(BoneKitError, match="pix2pixhd_local"):
        load_global_weights(more_blocks, more_blocks.state_dict())
    with pytest.raises(BoneKitError, match="pix2pixhd_local"):
        enhancer_parameters(more_blocks)
    assert isinstance(local, LocalEnhancer)


# ---------------------------------------------------------------------------------------------
# discriminator and losses
# ---------------------------------------------------------------------------------------------

def test_discriminator_outputs():
    cfg = DiscriminatorConfig(in_channels=2, ndf=4, n_layers=3, num_D=3)
    d = init_weights(build_discriminator(cfg), seed=0).eval()
    x = torch.randn(1, 2, 64, 48)
    out = d(x)
    assert len(out) == 3 and all(len(f) == 5 for f in out)

    def patch(n):  # 4x4 conv, padding 2: three stride-2 layers, then two stride-1 layers
        for s in (2, 2, 2, 1, 1):
            n = (n + 4 - 4) // s + 1
        return n

    sizes = [(64, 48), (32, 24), (16, 12)]
    for feats, (h, w) in zip(out, sizes):
        assert feats[-1].shape == (1, 1, patch(h), patch(w))
        assert [f.shape[1] for f in feats] == [4, 8, 16, 32, 1]
    # scale 2 sees the input average-pooled twice (3x3, stride 2, padding 1, padding not counted)
    pooled = F.avg_pool2d(F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), 3, 2, 1, count_include_pad=False)
    with torch.no_grad():
        assert torch.allclose(out[2][-1], d.scales[2](pooled)[-1])
    plain = build_discriminator(DiscriminatorConfig(ndf=4, num_D=2, feature_matching=False))
    assert [len(f) for f in plain(x)] == [1, 1]


def test_discriminator_width_capped_at_512():
    with torch.device("meta"):
        d = build_discriminator(DiscriminatorConfig(ndf=128, n_layers=4, num_D=1))
    widths = [m.out_channels for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [128, 256, 512, 512, 512, 1]


def test_lsgan_known_values():
    ones = [[torch.zeros(1, 4, 5, 5), torch.ones(1, 1, 5, 5)], [torch.zeros(1, 4, 3, 3), torch.ones(1, 1, 3, 3)],
            [torch.ones(1, 1, 2, 2)]]
    loss = GANLoss()
    assert loss(ones, True).item() == 0.0
    assert loss(ones, False).item() == pytest.approx(3.0)
    half = [[torch.full((2, 1, 4, 4), 0.5)], [torch.full((2, 1, 2, 2), 0.5)]]
    assert loss(half, True).item() == pytest.approx(0.5)  # 2 scales x 0.25
    assert loss(torch.full((1, 1, 3, 3), 0.25), False).item() == pytest.approx(0.0625)
    # BCE with logits: logit 0 is p = 0.5, -log(0.5) per scale
    zeros = [[torch.zeros(1, 1, 3, 3)], [torch.zeros(1, 1, 2, 2)]]
    assert GANLoss("bce")(zeros, True).item() == pytest.approx(2 * 0.6931471805599453)
    with pytest.raises(BoneKitError, match="mode"):
        GANLoss("wgan")


def test_feature_matching_formula():
    # 2 scales, n_layers 1 (lists of n_layers + 2 = 3 outputs); constant features give L1 = |a - b|
    vals_fake = [[1.0, 2.0, 100.0], [0.0, -1.0, -50.0]]
    vals_real = [[0.5, 4.0, 0.0], [0.25, 1.0, 0.0]]
    fake = [[torch.full((1, 3, 4, 4), v, requires_grad=True) for v in s] for s in vals_fake]
    real = [[torch.full((1, 3, 4, 4), v, requires_grad=True) for v in s] for s in vals_real]
    w = (1 / 2) * (4 / (1 + 1)) * 10.0
    expected = w * sum(abs(a - b) for sf, sr in zip(vals_fake, vals_real) for a, b in zip(sf[:-1], sr[:-1]))
    out = feature_matching_loss(fake, real, lambda_feat=10.0)
    assert out.item() == pytest.approx(expected)
    out.backward()
    assert all(t.grad is None for s in real for t in s)  # real features are detached
    assert fake[0][0].grad is not None and fake[0][-1].grad is None  # the prediction is not matched
    with pytest.raises(BoneKitError, match="feature_matching=True"):
        feature_matching_loss([[torch.zeros(1)]], [[torch.zeros(1)]])


def test_feature_matching_with_discriminator_zero_on_equal_inputs():
    d = init_weights(build_discriminator(DiscriminatorConfig(ndf=4, num_D=2)), seed=0)
    x = torch.randn(1, 2, 32, 32)
    assert feature_matching_loss(d(x), d(x)).item() == 0.0
    assert feature_matching_loss(d(x), d(x + 0.5)).item() > 0.0


# ---------------------------------------------------------------------------------------------
# VGG19 perceptual loss from a torchvision-layout state_dict
# ---------------------------------------------------------------------------------------------

_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def _torchvision_layout_state_dict(seed=0):
    """A random state_dict with torchvision vgg19()'s keys and shapes (written out independently)."""
    g = torch.Generator().manual_seed(seed)
    sd, idx, c = {}, 0, 3
    for v in _CFG:
        if v == "M":
            idx += 1
            continue
        sd[f"features.{idx}.weight"] = torch.randn(v, c, 3, 3, generator=g) * (2.0 / (9 * c)) ** 0.5
        sd[f"features.{idx}.bias"] = 0.01 * torch.randn(v, generator=g)
        idx, c = idx + 2, v
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # the real classifier is ignored; keep the file small
    return sd


def _manual_vgg_loss(sd, x, y):
    """pix2pixHD's VGG loss computed with functional ops straight from the state_dict."""
    taps = {1: 1 / 32, 6: 1 / 16, 11: 1 / 8, 20: 1 / 4, 29: 1.0}

    def feats(t):
        out, idx = [], 0
        t = t.repeat(1, 3, 1, 1)
        for v in _CFG:
            if idx > 29:
                break
            if v == "M":
                t = F.max_pool2d(t, 2)
                idx += 1
            else:
                t = F.relu(F.conv2d(t, sd[f"features.{idx}.weight"], sd[f"features.{idx}.bias"], padding=1))
                if idx + 1 in taps:
                    out.append(taps[idx + 1] * t)
                idx += 2
        return out

    return sum((a - b).abs().mean() for a, b in zip(feats(x), feats(y)))


def test_vgg_loss_from_file(tmp_path):
    sd = _torchvision_layout_state_dict()
    path = tmp_path / "vgg19.pth"
    torch.save(sd, path)
    loss = VGGLoss.from_file(path)
    assert all(not p.requires_grad for p in loss.parameters())
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    y = torch.rand(2, 1, 16, 16) * 2 - 1
    assert loss(x, x).item() == 0.0
    value = loss(x, y)
    assert value.item() > 0.0
    with torch.no_grad():
        assert value.item() == pytest.approx(_manual_vgg_loss(sd, x, y).item(), rel=1e-4)
    xg = x.clone().requires_grad_(True)
    loss(xg, y).backward()
    assert xg.grad is not None and all(p.grad is None for p in loss.parameters())
    loss.train()
    assert not loss.training
    # the features part alone (no "features." prefix) loads too
    feat_only = tmp_path / "features.pth"
    torch.save({k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}, feat_only)
    assert VGGLoss.from_file(feat_only)(x, y).item() == pytest.approx(value.item(), rel=1e-6)


def test_vgg_loss_bad_files(tmp_path):
    with pytest.raises(BoneKitError, match="not found.*features.0.weight"):
        VGGLoss.from_file(tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, wrong)
    with pytest.raises(BoneKitError, match="not a VGG19 state_dict"):
        VGGLoss.from_file(wrong)
    sd = _torchvision_layout_state_dict()
    sd["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    bad_shape = tmp_path / "shape.pth"
    torch.save(sd, bad_shape)
    with pytest.raises(BoneKitError, match="shape"):
        VGGLoss.from_file(bad_shape)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(BoneKitError, match="Cannot read"):
        VGGLoss.from_file(junk)


# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [GeneratorConfig(), GeneratorConfig.paper(), GeneratorConfig.light(),
                                 GeneratorConfig(arch="unet", depth=3, norm="batch"),
                                 DiscriminatorConfig(), DiscriminatorConfig.paper(), DiscriminatorConfig.light()])
def test_config_round_trip(cfg):
    d = json.loads(json.dumps(cfg.to_dict()))
    assert type(cfg).from_dict(d) == cfg


def test_paper_presets():
    g = GeneratorConfig.paper()
    assert (g.arch, g.ngf, g.n_downsample, g.n_blocks, g.n_local_enhancers, g.n_blocks_local, g.norm) == \
        ("pix2pixhd_local", 32, 4, 9, 1, 3, "instance")
    d = DiscriminatorConfig.paper()
    assert (d.in_channels, d.ndf, d.n_layers, d.num_D, d.norm, d.feature_matching) == (2, 64, 3, 3, "instance", True)


@pytest.mark.parametrize("cls, d, match", [
    (GeneratorConfig, {"ngf": 8, "widht": 3}, "'widht'.*allowed settings are arch"),
    (GeneratorConfig, {"arch": "resnet"}, "'arch'.*'pix2pixhd_global'"),
    (GeneratorConfig, {"norm": "layer"}, "'norm'.*'instance', 'batch'"),
    (GeneratorConfig, {"ngf": 0}, "'ngf'.*>= 1"),
    (GeneratorConfig, {"ngf": 4.0}, "'ngf'"),
    (GeneratorConfig, {"n_blocks": True}, "'n_blocks'"),
    (GeneratorConfig, {"arch": "pix2pix_unet", "depth": 1}, "'depth'.*>= 2"),
    (GeneratorConfig, {"use_dropout": "yes"}, "'use_dropout'"),
    (DiscriminatorConfig, {"num_d": 3}, "'num_d'.*num_D"),
    (DiscriminatorConfig, {"num_D": 0}, "'num_D'"),
    (DiscriminatorConfig, {"feature_matching": 1}, "'feature_matching'"),
])
def test_config_errors(cls, d, match):
    with pytest.raises(BoneKitError, match=match):
        cls.from_dict(d)


def test_config_not_a_mapping():
    with pytest.raises(BoneKitError, match="mapping"):
        GeneratorConfig.from_dict(["arch"])
    with pytest.raises(BoneKitError, match="GeneratorConfig"):
        build_generator({"arch": "unet"})


# ---------------------------------------------------------------------------------------------
# initialisation and determinism
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TINY))
def test_same_seed_same_outputs(name):
    cfg, (h, w) = TINY[name]
    torch.manual_seed(0)
    a = init_weights(build_generator(cfg), seed=5).eval()
    torch.manual_seed(123)  # the global RNG must not matter once init_weights has run
    b = init_weights(build_generator(cfg), seed=5).eval()
    c = init_weights(build_generator(cfg), seed=6).eval()
    x = torch.randn(1, 1, h, w)
    with torch.no_grad():
        ya, yb, yc = a(x), b(x), c(x)
    assert torch.equal(ya, yb)
    assert not torch.equal(ya, yc)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_init_distribution():
    net = init_weights(build_generator(GeneratorConfig(ngf=16, n_downsample=3, n_blocks=1, norm="batch")), seed=0)
    w = net.model[13].conv_block[1].weight  # a 128 -> 128 3x3 conv: 147,456 samples
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.02)
    bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in bn)
    gamma = torch.cat([m.weight.detach() for m in bn])
    assert gamma.mean().item() == pytest.approx(1.0, abs=0.01)
    with torch.device("meta"):
        init_weights(build_generator(GeneratorConfig.paper()), seed=0)  # a no-op, not an error
