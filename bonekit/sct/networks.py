"""X2CT-GAN-style networks: two radiographs (AP + lateral) in, a CT volume out (Ying et al. 2019; TomoRay).

Generator (``X2CTGenerator``), per view:

* a 2D DenseNet encoder: stem (reflection pad, 7x7 conv, IN, ReLU), then per stage a stride-2 3x3
  conv and a dense block (IN-ReLU-1x1 conv to ``bn_size * growth``, IN-ReLU-3x3 conv to ``growth``,
  concatenated), a 1x1 transition halving the channels, and after the last stage a global average;
* **connection A**: the feature vector -> a linear layer -> ``decoder_channels[-1]`` x s^3 (s = size/32),
  dropout, ReLU: the 3D decoder's start;
* **connection B**: each encoder level -> 1x1 conv -> copied along the rays' axis -> 3x3x3 conv: the
  skip links of a U-Net that lifts 2D to 3D;
* a 3D decoder: per level, a compression conv of (features, skip link), transposed-conv upsampling.

**Connection C** (view fusion): at every level the two views' 3D features are averaged and fed back to
both views (X2CT's ``backToSub``); a third, fusion decoder takes (average, its previous output) at each
level and gives the CT. All 3D tensors are in the CT order of :mod:`bonekit.sct.data`: (D, H, W) =
(superior -> inferior, anterior -> posterior, patient's right -> left); the AP image's rows and columns
are (D, W), the lateral's (D, H), as BoneKit's DRRs lay them out, so the two views meet without
permutations. Instance norm without affine parameters and per-instance statistics also at inference
(X2CT sets its norms back to training mode at test time).

``X2CTConfig.paper()`` has X2CT-GAN's published sizes (61,740,467 parameters at 128^2 -> 128^3,
116,606,387 at 192 -> 192^3, TomoRay's output size); ``light()`` is a small model for CPUs.

Discriminator (``PatchDiscriminator3D``): a conditional 3D PatchGAN (4^3 kernels, 3 stride-2 layers)
on (AP image copied along H, lateral image copied along W, CT). Losses (:class:`X2CTLoss`): LSGAN
(weight 0.1), voxel MSE (10) and L1 between parallel mean projections along the three axes (10).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BoneKitError
from ..sr.networks import GANLoss, _check_choice, _check_int, _from_dict, count_parameters, init_weights

__all__ = ["X2CTConfig", "X2CTGenerator", "PatchDiscriminator3D", "DiscriminatorConfig3D", "X2CTLoss",
           "build_generator", "build_discriminator", "count_parameters", "init_weights", "expand_view"]

_ACTIVATIONS = ("relu", "sigmoid", "none")


@dataclass(frozen=True)
class X2CTConfig:
    """Sizes of the X2CT generator; defaults are X2CT-GAN's (``multiview_network_denseUNetFuse_transposed``)."""

    #: radiograph side in pixels = CT side in voxels; a multiple of 32
    size: int = 128
    stem_channels: int = 64
    growth: int = 32
    bn_size: int = 4
    dense_layers: tuple[int, ...] = (6, 12, 24, 16, 6)
    #: 3D channels from the finest level to the bottleneck; one more than there are stages
    decoder_channels: tuple[int, ...] = (16, 16, 32, 64, 128, 256)
    view_blocks: tuple[int, ...] = (1, 2, 2, 2, 2, 0)
    fusion_blocks: tuple[int, ...] = (1, 1, 1, 1, 1, 0)
    dropout: float = 0.5
    output_activation: str = "relu"
    #: also build (and return) each view's own 3D output, as X2CT does (its loss weight is 0 there)
    view_heads: bool = True

    def __post_init__(self):
        for name in ("size", "stem_channels", "growth", "bn_size"):
            _check_int(name, getattr(self, name), 1)
        stages = len(self.dense_layers)
        if stages < 1:
            raise BoneKitError("The encoder needs at least one stage (dense_layers).")
        if self.size % (2 ** stages) or self.size < 2 ** (stages + 1):
            raise BoneKitError(f"The image size must be a multiple of {2 ** stages}, at least {2 ** (stages + 1)}, "
                               f"for {stages} encoder stages; got {self.size}.")
        for name, n in (("decoder_channels", stages + 1), ("view_blocks", stages + 1), ("fusion_blocks", stages + 1)):
            values = getattr(self, name)
            if len(values) != n:
                raise BoneKitError(f"'{name}' needs {n} values for {stages} encoder stages, got {len(values)}.")
            for v in values:
                _check_int(name, v, 1 if name == "decoder_channels" else 0)
        if not 0 <= self.dropout < 1:
            raise BoneKitError(f"Dropout must be in [0, 1), got {self.dropout}.")
        _check_choice("output_activation", self.output_activation, _ACTIVATIONS)

    @property
    def stages(self) -> int:
        return len(self.dense_layers)

    @property
    def bottleneck(self) -> int:
        return self.size // 2 ** self.stages

    def encoder_channels(self) -> list[int]:
        """Channels of the encoder levels 0 (stem) .. stages-1, and of the final feature vector."""
        c, levels = self.stem_channels, [self.stem_channels]
        for i, n in enumerate(self.dense_layers):
            c = c + n * self.growth
            if i < self.stages - 1:
                c //= 2
            levels.append(c)
        return levels

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "X2CTConfig":
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(d).items()}
        return _from_dict(cls, d)

    @classmethod
    def paper(cls, size: int = 128) -> "X2CTConfig":
        return cls(size=size)

    @classmethod
    def light(cls, size: int = 64) -> "X2CTConfig":
        """About 1 M parameters at 64^2 -> 64^3: trains and runs on a CPU."""
        return cls(size=size, stem_channels=16, growth=8, bn_size=4, dense_layers=(2, 3, 4, 3, 2),
                   decoder_channels=(4, 8, 16, 24, 32, 48), view_blocks=(1, 1, 1, 1, 1, 0),
                   fusion_blocks=(1, 1, 1, 1, 1, 0), view_heads=False)


def _in2d(c: int) -> nn.Module:
    return nn.InstanceNorm2d(c, affine=False, track_running_stats=False)


def _in3d(c: int) -> nn.Module:
    return nn.InstanceNorm3d(c, affine=False, track_running_stats=False)


def _conv3d_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, 3, padding=1), _in3d(cout), nn.ReLU(True)]


def _up3d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose3d(cin, cout, 3, stride=2, padding=1, output_padding=1), _in3d(cout),
                         nn.ReLU(True))


class _DenseLayer(nn.Sequential):
    def __init__(self, cin: int, growth: int, bn_size: int):
        super().__init__(_in2d(cin), nn.ReLU(True), nn.Conv2d(cin, bn_size * growth, 1),
                         _in2d(bn_size * growth), nn.ReLU(True), nn.Conv2d(bn_size * growth, growth, 3, padding=1))

    def forward(self, x):
        return torch.cat([x, super().forward(x)], 1)


class _Encoder2D(nn.Module):
    """One view's DenseNet encoder: returns the feature vector and the levels for the skip links."""

    def __init__(self, cfg: X2CTConfig):
        super().__init__()
        c = cfg.stem_channels
        self.stem = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(1, c, 7), _in2d(c), nn.ReLU(True))
        self.stages = nn.ModuleList()
        for i, n in enumerate(cfg.dense_layers):
            layers = [_in2d(c), nn.ReLU(True), nn.Conv2d(c, c, 3, stride=2, padding=1)]
            for _ in range(n):
                layers.append(_DenseLayer(c, cfg.growth, cfg.bn_size))
                c += cfg.growth
            if i < cfg.stages - 1:
                layers += [_in2d(c), nn.ReLU(True), nn.Conv2d(c, c // 2, 1)]
                c //= 2
            else:
                layers.append(nn.AdaptiveAvgPool2d(1))
            self.stages.append(nn.Sequential(*layers))

    def forward(self, x):
        x = self.stem(x)
        levels = []
        for stage in self.stages:
            levels.append(x)
            x = stage(x)
        return x.flatten(1), levels


class _Link(nn.Module):
    """Connection B: a 2D feature map -> 1x1 conv -> copied along the rays' axis -> 3x3x3 conv."""

    def __init__(self, cin: int, cout: int, ray_axis: int):
        super().__init__()
        self.ray_axis = ray_axis
        self.conv2d = nn.Sequential(nn.Conv2d(cin, cout, 1), _in2d(cout), nn.ReLU(True))
        self.conv3d = nn.Sequential(*_conv3d_block(cout, cout))

    def forward(self, x):
        return self.conv3d(expand_view(self.conv2d(x), self.ray_axis))


def expand_view(image: torch.Tensor, ray_axis: int) -> torch.Tensor:
    """(N, C, D, X) -> (N, C, D, H, W) by copying along the rays' axis: 3 (H) for the AP view, whose
    columns are W, or 4 (W) for the lateral view, whose columns are H."""
    n, c, d, x = image.shape
    if ray_axis == 3:
        return image.unsqueeze(3).expand(n, c, d, x, x)
    if ray_axis == 4:
        return image.unsqueeze(4).expand(n, c, d, x, x)
    raise BoneKitError(f"ray_axis must be 3 (AP) or 4 (lateral), got {ray_axis}.")


class _Decoder3D(nn.Module):
    """Per level i (bottleneck first): compress(cat(x, extra)) -> blocks -> upsample; then the finest level."""

    def __init__(self, cfg: X2CTConfig, blocks: tuple[int, ...], finest_blocks: bool = True):
        super().__init__()
        ch = cfg.decoder_channels
        self.compress = nn.ModuleList()
        self.layers = nn.ModuleList()
        for i in range(cfg.stages - 1, -2, -1):          # stages-1 .. 0, then -1 (the finest level)
            cin = ch[i + 1]
            top = i == cfg.stages - 1
            self.compress.append(nn.Identity() if top else nn.Sequential(*_conv3d_block(2 * cin, cin)))
            n = 0 if top or (i == -1 and not finest_blocks) else blocks[i + 1]
            body = [m for _ in range(n) for m in _conv3d_block(cin, cin)]
            if i >= 0:
                body.append(_up3d(cin, ch[i]))
            self.layers.append(nn.Sequential(*body))

    def head(self, cfg: X2CTConfig) -> nn.Sequential:
        act = {"relu": [nn.ReLU()], "sigmoid": [nn.Sigmoid()], "none": []}[cfg.output_activation]
        return nn.Sequential(nn.Conv3d(cfg.decoder_channels[0], 1, 7, padding=3), *act)


class X2CTGenerator(nn.Module):
    """``forward(ap, lateral)`` with images (N, 1, S, S) -> CT (N, 1, S, S, S) in [0, 1] (ReLU output),
    or with ``view_heads`` the tuple (fused, from AP, from lateral)."""

    def __init__(self, cfg: X2CTConfig):
        super().__init__()
        self.cfg = cfg
        enc = cfg.encoder_channels()
        ch = cfg.decoder_channels
        s = cfg.bottleneck
        self.encoders = nn.ModuleList([_Encoder2D(cfg), _Encoder2D(cfg)])
        self.bridges = nn.ModuleList([nn.Sequential(nn.Linear(enc[-1], ch[-1] * s ** 3), nn.Dropout(cfg.dropout),
                                                    nn.ReLU(True)) for _ in range(2)])
        self.links = nn.ModuleList([nn.ModuleList([_Link(enc[i], ch[i], ray) for i in range(cfg.stages)])
                                    for ray in (3, 4)])
        # without view heads, a view's finest-level blocks would feed nothing: they are left out
        self.view_decoders = nn.ModuleList([_Decoder3D(cfg, cfg.view_blocks, cfg.view_heads) for _ in range(2)])
        self.fusion = _Decoder3D(cfg, cfg.fusion_blocks)
        self.fusion_head = self.fusion.head(cfg)
        self.view_heads = nn.ModuleList([d.head(cfg) for d in self.view_decoders]) if cfg.view_heads else None

    def forward(self, ap: torch.Tensor, lateral: torch.Tensor):
        cfg = self.cfg
        size = cfg.size
        for name, x in (("AP", ap), ("lateral", lateral)):
            if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != (size, size):
                raise BoneKitError(f"The {name} input must be (N, 1, {size}, {size}), got {tuple(x.shape)}.")
        s = cfg.bottleneck
        views, skips = [], []
        for v, image in enumerate((ap, lateral)):
            vector, levels = self.encoders[v](image)
            views.append(self.bridges[v](vector).view(-1, cfg.decoder_channels[-1], s, s, s))
            skips.append([link(level) for link, level in zip(self.links[v], levels)])
        fused = None
        for step, i in enumerate(range(cfg.stages - 1, -2, -1)):
            for v in range(2):
                x = views[v] if i == cfg.stages - 1 else torch.cat([views[v], skips[v][i + 1]], 1)
                views[v] = self.view_decoders[v].compress[step](x)
            average = (views[0] + views[1]) / 2
            x = average if fused is None else self.fusion.compress[step](torch.cat([average, fused], 1))
            fused = self.fusion.layers[step](x)
            views = [self.view_decoders[v].layers[step](average) for v in range(2)]   # back to both views
        out = self.fusion_head(fused)
        if self.view_heads is None:
            return out
        return out, self.view_heads[0](views[0]), self.view_heads[1](views[1])


@dataclass(frozen=True)
class DiscriminatorConfig3D:
    ndf: int = 64
    n_layers: int = 3

    def __post_init__(self):
        _check_int("ndf", self.ndf, 1)
        _check_int("n_layers", self.n_layers, 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "DiscriminatorConfig3D":
        return _from_dict(cls, d)

    @classmethod
    def light(cls) -> "DiscriminatorConfig3D":
        return cls(ndf=16, n_layers=3)


class PatchDiscriminator3D(nn.Module):
    """X2CT's conditional 3D PatchGAN: (AP along H, lateral along W, CT) -> a map of real/fake scores."""

    def __init__(self, cfg: DiscriminatorConfig3D = DiscriminatorConfig3D()):
        super().__init__()
        k, p = 4, 2
        c = cfg.ndf
        layers = [nn.Conv3d(3, c, k, stride=2, padding=p), nn.LeakyReLU(0.2, True)]
        for n in range(1, cfg.n_layers + 1):
            cout = cfg.ndf * min(2 ** n, 8)
            stride = 2 if n < cfg.n_layers else 1
            layers += [nn.Conv3d(c, cout, k, stride=stride, padding=p, bias=False), _in3d(cout),
                       nn.LeakyReLU(0.2, True)]
            c = cout
        layers.append(nn.Conv3d(c, 1, k, stride=1, padding=p))
        self.model = nn.Sequential(*layers)

    def forward(self, ap: torch.Tensor, lateral: torch.Tensor, ct: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([expand_view(ap, 3), expand_view(lateral, 4), ct], 1))


def build_generator(cfg: X2CTConfig, seed: int = 0) -> X2CTGenerator:
    return init_weights(X2CTGenerator(cfg), seed)


def build_discriminator(cfg: DiscriminatorConfig3D, seed: int = 1) -> PatchDiscriminator3D:
    return init_weights(PatchDiscriminator3D(cfg), seed)


def mean_projections(ct: torch.Tensor) -> list[torch.Tensor]:
    """X2CT's projection maps: the mean of |CT| along each of the three axes (parallel projections)."""
    return [ct.abs().mean(dim=axis) for axis in (2, 3, 4)]


class X2CTLoss(nn.Module):
    """X2CT-GAN's generator and discriminator losses (its ``CTGAN`` weights by default)."""

    def __init__(self, gan: float = 0.1, reconstruction: float = 10.0, projection: float = 10.0,
                 auxiliary: float = 0.0):
        super().__init__()
        self.weights = {"gan": gan, "reconstruction": reconstruction, "projection": projection,
                        "auxiliary": auxiliary}
        self.adversarial = GANLoss("lsgan")

    def generator(self, fake, real, score_fake, views=()) -> dict[str, torch.Tensor]:
        """Terms of the generator loss; ``total`` is their weighted sum. ``views``: per-view outputs."""
        w = self.weights
        terms = {"gan": self.adversarial(score_fake, True) if score_fake is not None else fake.new_zeros(()),
                 "reconstruction": F.mse_loss(fake, real),
                 "projection": sum(F.l1_loss(a, b) for a, b in zip(mean_projections(fake),
                                                                   mean_projections(real))) / 3}
        aux = [F.mse_loss(v, real) for v in views]
        terms["auxiliary"] = sum(aux) / len(aux) if aux else fake.new_zeros(())
        terms["total"] = sum(w[k] * terms[k] for k in w)
        return terms

    def discriminator(self, score_real, score_fake) -> torch.Tensor:
        return self.weights["gan"] * (self.adversarial(score_real, True) + self.adversarial(score_fake, False))
