"""Generators, discriminators and losses for single-channel CT super-resolution (PyTorch).

Every generator maps an ``N x C_in x H x W`` tensor of normalised HU (``[-1, 1]``) to an
``N x C_out x H x W`` tensor in ``[-1, 1]`` (it ends in ``tanh``): the LR slice is first
interpolated onto the HR grid, so super-resolution is a same-size 2-D image-to-image mapping.

Architectures (:class:`GeneratorConfig` ``arch``):

* ``"pix2pixhd_global"`` - pix2pixHD's *GlobalGenerator* (Wang et al. 2018): 7x7 stem, stride-2
  downsamplings, ResNet blocks with reflection padding at the bottleneck, transposed-conv
  upsamplings, 7x7 head, tanh.
* ``"pix2pixhd_local"`` - pix2pixHD's *LocalEnhancer*: a truncated global generator (twice the
  width) on a 2x average-pooled copy of the input, plus one enhancer per level whose front-end
  features are summed element-wise with the coarser output. This is what Jin et al. 2021 trained.
  Coarse-to-fine training: train a global generator first, copy it in with
  :func:`load_global_weights`, train only :func:`enhancer_parameters` for ``niter_fix_global``
  epochs, then everything.
* ``"pix2pix_unet"`` - pix2pix's U-Net generator (Isola et al. 2017): nested skip blocks of 4x4
  stride-2 convolutions, LeakyReLU(0.2) encoder, ReLU decoder, dropout 0.5 in the inner
  ``ngf*8`` up blocks, tanh. ``depth=8`` is pix2pix's ``unet_256``.
* ``"unet"`` - the plain U-Net of David et al. applied to the upsampled LR slice: per level two
  3x3 conv-norm-ReLU, 2x2 max pooling, 2x2 transposed-conv up, skip concatenation, 1x1 head, tanh.

The discriminator is pix2pixHD's multi-scale PatchGAN (:func:`build_discriminator`); the losses
are LSGAN (:class:`GANLoss`), discriminator feature matching (:func:`feature_matching_loss`) and
an optional VGG19 perceptual loss (:class:`VGGLoss`) whose ImageNet weights must be supplied as
a local file (nothing is ever downloaded; torchvision is not needed).

These are independent implementations written from the published descriptions collected in
``shared/reference/deep-learning-references.md`` section 1. Module names follow pix2pixHD's
(``model``, ``model1_1``, ``model1_2``, ``conv_block``) so that the coarse-to-fine schedule can
copy a global generator into a local enhancer by key.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import BoneKitError

__all__ = [
    "ARCHS", "NORMS", "GeneratorConfig", "DiscriminatorConfig", "size_multiple", "min_input_size",
    "check_input_size", "padded_size", "build_generator", "build_discriminator",
    "GlobalGenerator", "LocalEnhancer", "Pix2PixUnetGenerator", "UNet", "ResnetBlock",
    "NLayerDiscriminator", "MultiscaleDiscriminator", "load_global_weights",
    "enhancer_parameters", "init_weights", "count_parameters", "GANLoss",
    "feature_matching_loss", "VGG19Features", "VGGLoss", "VGG19_LAYER_CONFIG",
]

ARCHS = ("pix2pixhd_global", "pix2pixhd_local", "pix2pix_unet", "unet")
NORMS = ("instance", "batch")
_DEFAULT_DEPTH = {"pix2pix_unet": 8, "unet": 4}


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------

def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BoneKitError(f"Network setting '{name}' must be a whole number >= {minimum} "
                           f"(got {value!r}).")


def _check_choice(name: str, value, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise BoneKitError(f"Network setting '{name}' must be one of {', '.join(map(repr, allowed))} "
                           f"(got {value!r}).")


def _from_dict(cls, d):
    if not isinstance(d, Mapping):
        raise BoneKitError(f"A {cls.__name__} must be given as a mapping of settings "
                           f"(got {type(d).__name__}).")
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise BoneKitError(f"Unknown {cls.__name__} setting(s) {', '.join(map(repr, unknown))}; "
                           f"allowed settings are {', '.join(allowed)}.")
    return cls(**dict(d))


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of a generator (all widths in channels).

    Parameters
    ----------
    arch : str
        ``"pix2pixhd_global"``, ``"pix2pixhd_local"``, ``"pix2pix_unet"`` or ``"unet"``.
    in_channels, out_channels : int
        Image channels (1 for HU slices).
    ngf : int
        Width of the first layer. For ``pix2pixhd_local`` this is the *local* width; the inner
        global generator is ``ngf * 2**n_local_enhancers`` wide (pix2pixHD's ``--ngf``).
    n_downsample : int
        Stride-2 downsamplings of the (inner) global generator (pix2pixHD's
        ``--n_downsample_global``; its options default is 4).
    n_blocks : int
        ResNet blocks at the global bottleneck.
    n_local_enhancers : int
        Number of local enhancers (each doubles the resolution it works at).
    n_blocks_local : int
        ResNet blocks per local enhancer.
    norm : str
        ``"instance"`` (``InstanceNorm2d(affine=False)``, pix2pixHD's default) or ``"batch"``.
    depth : int or None
        Number of downsamplings of the U-Nets; ``None`` means 8 for ``pix2pix_unet`` (pix2pix's
        ``unet_256``) and 4 for ``unet``. Ignored by the pix2pixHD generators.
    use_dropout : bool
        Dropout 0.5 in the inner up blocks of ``pix2pix_unet`` (pix2pix's default). Ignored by
        the other architectures.
    """

    arch: str = "pix2pixhd_global"
    in_channels: int = 1
    out_channels: int = 1
    ngf: int = 64
    n_downsample: int = 4
    n_blocks: int = 9
    n_local_enhancers: int = 1
    n_blocks_local: int = 3
    norm: str = "instance"
    depth: int | None = None
    use_dropout: bool = True

    def __post_init__(self):
        _check_choice("arch", self.arch, ARCHS)
        _check_int("in_channels", self.in_channels, 1)
        _check_int("out_channels", self.out_channels, 1)
        _check_int("ngf", self.ngf, 1)
        _check_int("n_downsample", self.n_downsample, 1)
        _check_int("n_blocks", self.n_blocks, 0)
        _check_int("n_local_enhancers", self.n_local_enhancers, 1)
        _check_int("n_blocks_local", self.n_blocks_local, 0)
        _check_choice("norm", self.norm, NORMS)
        if self.depth is not None:
            _check_int("depth", self.depth, 2 if self.arch == "pix2pix_unet" else 1)
        if not isinstance(self.use_dropout, bool):
            raise BoneKitError(f"Network setting 'use_dropout' must be true or false (got {self.use_dropout!r}).")

    @property
    def resolved_depth(self) -> int:
        """The U-Net depth actually used (``depth`` or the architecture's default)."""
        return self.depth if self.depth is not None else _DEFAULT_DEPTH.get(self.arch, 4)

    @property
    def size_multiple(self) -> int:
        """What slice height and width must be divisible by (see :func:`size_multiple`)."""
        return size_multiple(self)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable settings."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "GeneratorConfig":
        """Settings from :meth:`to_dict`; missing keys take the defaults.

        Raises
        ------
        BoneKitError
            For an unknown key or a bad value (the message names it and what is allowed).
        """
        return _from_dict(cls, d)

    @classmethod
    def paper(cls) -> "GeneratorConfig":
        """pix2pixHD's 1024p local enhancer as used by Jin et al. 2021 (``--netG local --ngf 32``:
        inner global ngf 64, 4 downsamplings, 9 blocks; one enhancer with 3 blocks), 182.7 M
        parameters for 1-channel images."""
        return cls(arch="pix2pixhd_local", ngf=32, n_downsample=4, n_blocks=9,
                   n_local_enhancers=1, n_blocks_local=3, norm="instance")

    @classmethod
    def light(cls) -> "GeneratorConfig":
        """A small local enhancer for CPU training and inference (local ngf 8, inner global
        ngf 16, 3 downsamplings, 4 global blocks, 3 local blocks): 1,392,385 parameters for
        1-channel images, 1.49 GFLOP and about 20 ms per 256x256 slice on 2 CPU cores (fp32,
        inference mode); slices must be multiples of 16 pixels and at least 32."""
        return cls(arch="pix2pixhd_local", ngf=8, n_downsample=3, n_blocks=4,
                   n_local_enhancers=1, n_blocks_local=3, norm="instance")


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Architecture of pix2pixHD's multi-scale PatchGAN discriminator.

    Parameters
    ----------
    in_channels : int
        Input channels: condition + image (1 + 1 for HU slices).
    ndf : int
        Width of the first layer (doubled per layer, capped at 512).
    n_layers : int
        Stride-2 layers after the first one (3 gives the 70x70 PatchGAN).
    num_D : int
        Number of scales; scale ``i`` sees the input average-pooled ``i`` times
        (pix2pixHD default 2; 3 in its 1024p scripts and in Jin et al. 2021).
    norm : str
        ``"instance"`` or ``"batch"`` (no norm on the first layer).
    feature_matching : bool
        Return every layer's output (needed by :func:`feature_matching_loss`); otherwise each
        scale's list holds only the patch prediction.
    """

    in_channels: int = 2
    ndf: int = 64
    n_layers: int = 3
    num_D: int = 3
    norm: str = "instance"
    feature_matching: bool = True

    def __post_init__(self):
        _check_int("in_channels", self.in_channels, 1)
        _check_int("ndf", self.ndf, 1)
        _check_int("n_layers", self.n_layers, 1)
        _check_int("num_D", self.num_D, 1)
        _check_choice("norm", self.norm, NORMS)
        if not isinstance(self.feature_matching, bool):
            raise BoneKitError("Network setting 'feature_matching' must be true or false "
                               f"(got {self.feature_matching!r}).")

    def to_dict(self) -> dict:
        """Plain JSON-serialisable settings."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "DiscriminatorConfig":
        """Settings from :meth:`to_dict`; unknown keys or bad values raise BoneKitError."""
        return _from_dict(cls, d)

    @classmethod
    def paper(cls) -> "DiscriminatorConfig":
        """Three 70x70 PatchGANs at ndf 64 (Jin et al. 2021; pix2pixHD's 1024p scripts)."""
        return cls(in_channels=2, ndf=64, n_layers=3, num_D=3, norm="instance", feature_matching=True)

    @classmethod
    def light(cls) -> "DiscriminatorConfig":
        """Two PatchGANs at ndf 32 for CPU training (1.38 M parameters)."""
        return cls(in_channels=2, ndf=32, n_layers=3, num_D=2, norm="instance", feature_matching=True)


def size_multiple(cfg: GeneratorConfig) -> int:
    """What slice height and width must be divisible by for a generator, in pixels.

    ``2**n_downsample`` for the global generator, ``2**(n_downsample + n_local_enhancers)`` for the
    local enhancer and ``2**depth`` for the U-Nets.
    """
    if cfg.arch == "pix2pixhd_global":
        return 2 ** cfg.n_downsample
    if cfg.arch == "pix2pixhd_local":
        return 2 ** (cfg.n_downsample + cfg.n_local_enhancers)
    return 2 ** cfg.resolved_depth


def min_input_size(cfg: GeneratorConfig) -> int:
    """Smallest slice height/width a generator accepts, in pixels.

    The bottleneck of the pix2pixHD generators and of the plain U-Net must be at least 2 pixels
    wide (reflection padding and instance normalisation need it), so these need twice
    :func:`size_multiple`; pix2pix's U-Net goes down to 1 pixel and needs one multiple.
    """
    m = size_multiple(cfg)
    return m if cfg.arch == "pix2pix_unet" else 2 * m


def padded_size(cfg: GeneratorConfig, h: int, w: int) -> tuple[int, int]:
    """The smallest valid (height, width) >= (h, w), for padding a slice before the generator."""
    m, lo = size_multiple(cfg), min_input_size(cfg)
    return (max(lo, -(-int(h) // m) * m), max(lo, -(-int(w) // m) * m))


def _check_hw(h: int, w: int, multiple: int, minimum: int, arch: str) -> None:
    if h % multiple or w % multiple or h < minimum or w < minimum:
        ph, pw = max(minimum, -(-h // multiple) * multiple), max(minimum, -(-w // multiple) * multiple)
        raise BoneKitError(
            f"The {arch} generator needs slices whose height and width are multiples of {multiple} "
            f"pixels and at least {minimum} pixels (got {h}x{w}); pad or crop the slices, "
            f"e.g. pad to {ph}x{pw}.")


def check_input_size(cfg: GeneratorConfig, h: int, w: int) -> None:
    """Raise BoneKitError unless an ``h x w`` slice fits the generator of ``cfg``.

    See :func:`size_multiple` and :func:`min_input_size`; :func:`padded_size` gives the size to pad to.
    """
    _check_hw(int(h), int(w), size_multiple(cfg), min_input_size(cfg), cfg.arch)


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------

def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    return nn.BatchNorm2d(channels, affine=True)


class ResnetBlock(nn.Module):
    """``x + [pad, conv3x3, norm, ReLU, pad, conv3x3, norm](x)`` with reflection padding."""

    def __init__(self, channels: int, norm: str = "instance"):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _global_layers(in_channels: int, out_channels: int, ngf: int, n_downsample: int,
                   n_blocks: int, norm: str) -> list[nn.Module]:
    """pix2pixHD's GlobalGenerator as a flat list; the last 3 entries are the head (pad, conv, tanh)."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7),
                               _norm(norm, ngf), nn.ReLU(True)]
    for i in range(n_downsample):
        c = ngf * 2 ** i
        layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm(norm, 2 * c), nn.ReLU(True)]
    c = ngf * 2 ** n_downsample
    layers += [ResnetBlock(c, norm) for _ in range(n_blocks)]
    for i in range(n_downsample):
        c = ngf * 2 ** (n_downsample - i)
        layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                   _norm(norm, c // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
    return layers


class _SizeChecked(nn.Module):
    """Generator base: checks H and W against the architecture's size rules in ``forward``."""

    size_multiple: int = 1
    min_size: int = 1
    arch: str = ""

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise BoneKitError(f"The {self.arch} generator takes an N x C x H x W tensor "
                               f"(got {x.dim()} dimensions).")
        _check_hw(int(x.shape[-2]), int(x.shape[-1]), self.size_multiple, self.min_size, self.arch)


class GlobalGenerator(_SizeChecked):
    """pix2pixHD's global generator; its layers are ``self.model`` (one ``nn.Sequential``)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, ngf: int = 64,
                 n_downsample: int = 4, n_blocks: int = 9, norm: str = "instance"):
        super().__init__()
        self.model = nn.Sequential(*_global_layers(in_channels, out_channels, ngf, n_downsample,
                                                   n_blocks, norm))
        self.arch = "pix2pixhd_global"
        self.size_multiple = 2 ** n_downsample
        self.min_size = 2 * self.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.model(x)


class LocalEnhancer(_SizeChecked):
    """pix2pixHD's local enhancer generator.

    Submodules: ``model`` - the global generator of width ``ngf * 2**n_local_enhancers`` without
    its head (same indices as a :class:`GlobalGenerator`'s ``model``); ``model{n}_1`` - front end
    of enhancer ``n`` (7x7 conv, stride-2 conv); ``model{n}_2`` - its ResNet blocks and
    transposed-conv upsampling (plus the 7x7 head and tanh for ``n = n_local_enhancers``).
    Enhancer 1 works at the coarsest enhanced level, enhancer ``n_local_enhancers`` (the
    outermost) at full resolution.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, ngf: int = 32,
                 n_downsample: int = 4, n_blocks: int = 9, n_local_enhancers: int = 1,
                 n_blocks_local: int = 3, norm: str = "instance"):
        super().__init__()
        self.n_local_enhancers = n_local_enhancers
        ngf_global = ngf * 2 ** n_local_enhancers
        layers = _global_layers(in_channels, out_channels, ngf_global, n_downsample, n_blocks, norm)
        self.model = nn.Sequential(*layers[:-3])
        for n in range(1, n_local_enhancers + 1):
            c = ngf * 2 ** (n_local_enhancers - n)
            front = nn.Sequential(
                nn.ReflectionPad2d(3), nn.Conv2d(in_channels, c, 7), _norm(norm, c), nn.ReLU(True),
                nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm(norm, 2 * c), nn.ReLU(True))
            back: list[nn.Module] = [ResnetBlock(2 * c, norm) for _ in range(n_blocks_local)]
            back += [nn.ConvTranspose2d(2 * c, c, 3, stride=2, padding=1, output_padding=1),
                     _norm(norm, c), nn.ReLU(True)]
            if n == n_local_enhancers:
                back += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
            setattr(self, f"model{n}_1", front)
            setattr(self, f"model{n}_2", nn.Sequential(*back))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.arch = "pix2pixhd_local"
        self.size_multiple = 2 ** (n_downsample + n_local_enhancers)
        self.min_size = 2 * self.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        pyramid = [x]
        for _ in range(self.n_local_enhancers):
            pyramid.append(self.downsample(pyramid[-1]))
        out = self.model(pyramid[-1])
        for n in range(1, self.n_local_enhancers + 1):
            front = getattr(self, f"model{n}_1")
            back = getattr(self, f"model{n}_2")
            out = back(front(pyramid[self.n_local_enhancers - n]) + out)
        return out


class _UnetSkipBlock(nn.Module):
    """One level of pix2pix's U-Net: ``x -> [down, submodule, up]`` and ``cat(x, that)``."""

    def __init__(self, outer: int, inner: int, in_channels: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False,
                 innermost: bool = False, norm: str = "instance", dropout: bool = False):
        super().__init__()
        self.outermost = outermost
        use_bias = norm == "instance"
        in_channels = outer if in_channels is None else in_channels
        downconv = nn.Conv2d(in_channels, inner, 4, stride=2, padding=1, bias=use_bias)
        if outermost:
            upconv = nn.ConvTranspose2d(2 * inner, outer, 4, stride=2, padding=1)
            layers = [downconv, submodule, nn.ReLU(True), upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=use_bias)
            layers = [nn.LeakyReLU(0.2), downconv, nn.ReLU(True), upconv, _norm(norm, outer)]
        else:
            upconv = nn.ConvTranspose2d(2 * inner, outer, 4, stride=2, padding=1, bias=use_bias)
            layers = [nn.LeakyReLU(0.2), downconv, _norm(norm, inner), submodule,
                      nn.ReLU(True), upconv, _norm(norm, outer)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class Pix2PixUnetGenerator(_SizeChecked):
    """pix2pix's U-Net generator (``UnetGenerator``) with ``depth`` stride-2 levels.

    Level ``i`` (0 = outermost) works at ``ngf * min(2**i, 8)`` channels; levels 4 to
    ``depth - 2`` (the inner ``ngf*8`` blocks, not the innermost) get dropout 0.5 when
    ``use_dropout``. Note that dropout is active in ``train()`` mode only; pix2pix's test script
    keeps it on at test time unless ``--eval`` is given.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, ngf: int = 64, depth: int = 8,
                 norm: str = "instance", use_dropout: bool = True):
        super().__init__()
        width = [ngf * min(2 ** i, 8) for i in range(depth)]
        block = _UnetSkipBlock(width[depth - 2], width[depth - 1], innermost=True, norm=norm)
        for i in range(depth - 2, 0, -1):
            block = _UnetSkipBlock(width[i - 1], width[i], submodule=block, norm=norm,
                                   dropout=use_dropout and 4 <= i <= depth - 2)
        self.model = _UnetSkipBlock(out_channels, width[0], in_channels=in_channels, submodule=block,
                                    outermost=True, norm=norm)
        self.arch = "pix2pix_unet"
        self.size_multiple = 2 ** depth
        self.min_size = self.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.model(x)


def _double_conv(cin: int, cout: int, norm: str) -> nn.Sequential:
    bias = norm == "instance"
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(True))


class UNet(_SizeChecked):
    """Plain encoder-decoder U-Net (Ronneberger-style, as used by David et al. on the upsampled LR).

    ``depth`` levels of two 3x3 conv-norm-ReLU at ``ngf * 2**i`` channels with 2x2 max pooling,
    a bottleneck at ``ngf * 2**depth``, 2x2 transposed-conv upsampling, skip concatenation,
    two conv-norm-ReLU per level, then a 1x1 conv and tanh.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, ngf: int = 64, depth: int = 4,
                 norm: str = "instance"):
        super().__init__()
        chans = [ngf * 2 ** i for i in range(depth + 1)]
        self.encoders = nn.ModuleList(
            [_double_conv(in_channels if i == 0 else chans[i - 1], chans[i], norm) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double_conv(chans[depth - 1], chans[depth], norm)
        self.ups = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
                                  for i in reversed(range(depth))])
        self.decoders = nn.ModuleList([_double_conv(2 * chans[i], chans[i], norm)
                                       for i in reversed(range(depth))])
        self.head = nn.Sequential(nn.Conv2d(ngf, out_channels, 1), nn.Tanh())
        self.arch = "unet"
        self.size_multiple = 2 ** depth
        self.min_size = 2 * self.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = dec(torch.cat([skip, up(x)], 1))
        return self.head(x)


def build_generator(cfg: GeneratorConfig) -> nn.Module:
    """The generator described by ``cfg`` (PyTorch default initialisation; see :func:`init_weights`).

    The module carries ``cfg`` as ``.config``. Build under ``with torch.device("meta"):`` to get
    shapes and parameter counts without allocating memory.
    """
    if not isinstance(cfg, GeneratorConfig):
        raise BoneKitError(f"build_generator needs a GeneratorConfig (got {type(cfg).__name__}).")
    if cfg.arch == "pix2pixhd_global":
        net = GlobalGenerator(cfg.in_channels, cfg.out_channels, cfg.ngf, cfg.n_downsample,
                              cfg.n_blocks, cfg.norm)
    elif cfg.arch == "pix2pixhd_local":
        net = LocalEnhancer(cfg.in_channels, cfg.out_channels, cfg.ngf, cfg.n_downsample, cfg.n_blocks,
                            cfg.n_local_enhancers, cfg.n_blocks_local, cfg.norm)
    elif cfg.arch == "pix2pix_unet":
        net = Pix2PixUnetGenerator(cfg.in_channels, cfg.out_channels, cfg.ngf, cfg.resolved_depth,
                                   cfg.norm, cfg.use_dropout)
    else:
        net = UNet(cfg.in_channels, cfg.out_channels, cfg.ngf, cfg.resolved_depth, cfg.norm)
    net.config = cfg
    return net


# --------------------------------------------------------------------------------------------
# coarse-to-fine helpers
# --------------------------------------------------------------------------------------------

def load_global_weights(local_net: nn.Module, global_state_dict) -> list[str]:
    """Copy a trained global generator into the global part of a local enhancer.

    pix2pixHD's coarse-to-fine schedule: a :class:`GlobalGenerator` of width
    ``ngf_local * 2**n_local_enhancers`` (same ``n_downsample``, ``n_blocks``, channels and norm)
    is trained first at reduced resolution; its layers, except the 7x7 head, become
    ``local_net.model``.

    Parameters
    ----------
    local_net : LocalEnhancer
        The network to fill (modified in place).
    global_state_dict : Mapping[str, Tensor] or GlobalGenerator
        A global generator's ``state_dict()`` (keys ``model.<i>....``) or the module itself.

    Returns
    -------
    list of str
        The keys copied (parameters and buffers of ``local_net.model``).

    Raises
    ------
    BoneKitError
        When ``local_net`` is not a local enhancer, or the global generator's layout or tensor
        shapes do not match (a different width, depth, block count or channel count).
    """
    if not isinstance(local_net, LocalEnhancer):
        raise BoneKitError(f"load_global_weights needs a pix2pixhd_local network (got {type(local_net).__name__}).")
    if isinstance(global_state_dict, nn.Module):
        global_state_dict = global_state_dict.state_dict()
    if not isinstance(global_state_dict, Mapping):
        raise BoneKitError("load_global_weights needs a global generator's state_dict (a mapping of tensors).")
    hint = ("the global generator must be a pix2pixhd_global with ngf = local ngf * 2**n_local_enhancers "
            "and the same n_downsample, n_blocks, channels and norm")
    target = local_net.state_dict()
    mine = {k: v for k, v in target.items() if k.startswith("model.")}
    head_index = len(local_net.model) + 1  # the global head's 7x7 conv (after its reflection pad)
    head_keys = {f"model.{head_index}.weight", f"model.{head_index}.bias"}
    unexpected = [k for k in global_state_dict if k not in mine and k not in head_keys]
    missing = [k for k in mine if k not in global_state_dict]
    if unexpected or missing:
        detail = []
        if missing:
            detail.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            detail.append(f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
        raise BoneKitError(f"The global generator's weights do not fit this local enhancer "
                           f"({'; '.join(detail)}): {hint}.")
    for k, v in mine.items():
        src = global_state_dict[k]
        if not isinstance(src, torch.Tensor) or tuple(src.shape) != tuple(v.shape):
            shape = tuple(src.shape) if isinstance(src, torch.Tensor) else type(src).__name__
            raise BoneKitError(f"The global generator's '{k}' has shape {shape} but this local enhancer "
                               f"needs {tuple(v.shape)}: {hint}.")
    with torch.no_grad():
        for k, v in mine.items():
            v.copy_(global_state_dict[k].to(device=v.device, dtype=v.dtype))
    return list(mine)


def enhancer_parameters(local_net: nn.Module) -> list[nn.Parameter]:
    """Parameters of the outermost local enhancer only (``model{n_local_enhancers}_*``).

    pix2pixHD optimises only these for the first ``niter_fix_global`` epochs after loading a
    pretrained global generator, then all of them.
    """
    if not isinstance(local_net, LocalEnhancer):
        raise BoneKitError(f"enhancer_parameters needs a pix2pixhd_local network (got {type(local_net).__name__}).")
    prefix = f"model{local_net.n_local_enhancers}_"
    return [p for name, p in local_net.named_parameters() if name.startswith(prefix)]


def init_weights(net: nn.Module, seed: int = 0) -> nn.Module:
    """pix2pixHD's initialisation, reproducible from ``seed``, in place; returns ``net``.

    Convolution (2D and 3D) and linear weights ~ N(0, 0.02); BatchNorm weights ~ N(1, 0.02), biases 0. Convolution
    biases keep PyTorch's default distribution U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as in
    pix2pixHD, but are drawn from ``seed`` too, so the whole network depends on ``seed`` alone.
    Modules on the ``meta`` device are left alone.
    """
    gen = torch.Generator().manual_seed(int(seed))

    def draw(param, fill):
        t = torch.empty(param.shape, dtype=torch.float32)
        fill(t)
        param.copy_(t.to(device=param.device, dtype=param.dtype))

    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                if m.weight.device.type == "meta":
                    continue
                draw(m.weight, lambda t: t.normal_(0.0, 0.02, generator=gen))
                if m.bias is not None:
                    # PyTorch's own rule (dimension 1 of the weight, also for transposed convs)
                    fan_in = m.weight.shape[1] * int(math.prod(m.weight.shape[2:]))
                    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    draw(m.bias, lambda t: t.uniform_(-bound, bound, generator=gen))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                if m.weight.device.type == "meta":
                    continue
                draw(m.weight, lambda t: t.normal_(1.0, 0.02, generator=gen))
                m.bias.zero_()
    return net


def count_parameters(net: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (works on ``meta``-device modules)."""
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only))


# --------------------------------------------------------------------------------------------
# discriminator
# --------------------------------------------------------------------------------------------

class NLayerDiscriminator(nn.Module):
    """PatchGAN: 4x4 convs with padding 2, widths ``ndf * 2**k`` capped at 512, LeakyReLU(0.2).

    Layers (``self.layers[k]``): conv s2 (no norm); ``n_layers - 1`` conv s2 + norm; conv s1 +
    norm; conv s1 to 1 channel (the patch prediction, no activation). ``forward`` returns the
    list of all ``n_layers + 2`` layer outputs.
    """

    def __init__(self, in_channels: int = 2, ndf: int = 64, n_layers: int = 3, norm: str = "instance"):
        super().__init__()
        k, p = 4, int(math.ceil((4 - 1) / 2))
        layers = [nn.Sequential(nn.Conv2d(in_channels, ndf, k, stride=2, padding=p), nn.LeakyReLU(0.2, True))]
        c = ndf
        for _ in range(1, n_layers):
            c_prev, c = c, min(2 * c, 512)
            layers.append(nn.Sequential(nn.Conv2d(c_prev, c, k, stride=2, padding=p), _norm(norm, c),
                                        nn.LeakyReLU(0.2, True)))
        c_prev, c = c, min(2 * c, 512)
        layers.append(nn.Sequential(nn.Conv2d(c_prev, c, k, stride=1, padding=p), _norm(norm, c),
                                    nn.LeakyReLU(0.2, True)))
        layers.append(nn.Sequential(nn.Conv2d(c, 1, k, stride=1, padding=p)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` PatchGANs; ``scales[i]`` sees the input average-pooled ``i`` times.

    ``forward(x)`` returns one list per scale: all layer outputs when ``feature_matching``
    (the last one is the patch prediction), else just ``[prediction]``.
    """

    def __init__(self, in_channels: int = 2, ndf: int = 64, n_layers: int = 3, num_D: int = 3,
                 norm: str = "instance", feature_matching: bool = True):
        super().__init__()
        self.scales = nn.ModuleList([NLayerDiscriminator(in_channels, ndf, n_layers, norm)
                                     for _ in range(num_D)])
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.feature_matching = feature_matching

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        out = []
        for i, d in enumerate(self.scales):
            if i:
                x = self.downsample(x)
            feats = d(x)
            out.append(feats if self.feature_matching else feats[-1:])
        return out


def build_discriminator(cfg: DiscriminatorConfig) -> MultiscaleDiscriminator:
    """The multi-scale discriminator described by ``cfg`` (carries it as ``.config``)."""
    if not isinstance(cfg, DiscriminatorConfig):
        raise BoneKitError(f"build_discriminator needs a DiscriminatorConfig (got {type(cfg).__name__}).")
    net = MultiscaleDiscriminator(cfg.in_channels, cfg.ndf, cfg.n_layers, cfg.num_D, cfg.norm,
                                  cfg.feature_matching)
    net.config = cfg
    return net


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------

def _last_outputs(prediction) -> list[torch.Tensor]:
    """Each scale's patch prediction from a discriminator output (list of lists, list, or tensor)."""
    if isinstance(prediction, torch.Tensor):
        return [prediction]
    out = []
    for p in prediction:
        if isinstance(p, torch.Tensor):
            out.append(p)
        elif isinstance(p, (list, tuple)) and p and isinstance(p[-1], torch.Tensor):
            out.append(p[-1])
        else:
            raise BoneKitError("GANLoss expects a discriminator output: a tensor, a list of tensors, "
                               "or a list (per scale) of lists of tensors.")
    if not out:
        raise BoneKitError("GANLoss got an empty discriminator output.")
    return out


class GANLoss(nn.Module):
    """Adversarial loss on each scale's patch prediction, summed over scales.

    Parameters
    ----------
    mode : str
        ``"lsgan"`` (pix2pixHD's default): mean squared error against 1 (real) or 0 (fake).
        ``"bce"``: binary cross-entropy with logits (the discriminator has no sigmoid).
    real_label, fake_label : float
        Target values.

    ``loss(prediction, target_is_real)`` takes :class:`MultiscaleDiscriminator` output.
    """

    def __init__(self, mode: str = "lsgan", real_label: float = 1.0, fake_label: float = 0.0):
        super().__init__()
        _check_choice("mode", mode, ("lsgan", "bce"))
        self.mode = mode
        self.real_label = float(real_label)
        self.fake_label = float(fake_label)

    def forward(self, prediction, target_is_real: bool) -> torch.Tensor:
        value = self.real_label if target_is_real else self.fake_label
        total = None
        for p in _last_outputs(prediction):
            target = torch.full_like(p, value)
            if self.mode == "lsgan":
                term = F.mse_loss(p, target)
            else:
                term = F.binary_cross_entropy_with_logits(p, target)
            total = term if total is None else total + term
        return total


def feature_matching_loss(fake_feats, real_feats, lambda_feat: float = 10.0,
                          n_layers: int | None = None) -> torch.Tensor:
    """pix2pixHD's discriminator feature-matching loss.

    ``sum_i sum_k (1/num_D) * (4/(n_layers+1)) * lambda_feat * L1(fake_feats[i][k], real_feats[i][k])``
    over scales ``i`` and all layers ``k`` except the last (the prediction); the real features
    are detached.

    Parameters
    ----------
    fake_feats, real_feats : list of list of Tensor
        :class:`MultiscaleDiscriminator` outputs for (condition, fake) and (condition, real).
    lambda_feat : float
        Weight (pix2pixHD: 10).
    n_layers : int, optional
        The discriminator's ``n_layers``; by default ``len(fake_feats[0]) - 2``.
    """
    num_d = len(fake_feats)
    if num_d == 0 or len(real_feats) != num_d:
        raise BoneKitError(f"feature_matching_loss needs the same number (>= 1) of scales for fake and real "
                           f"features (got {num_d} and {len(real_feats)}).")
    if n_layers is None:
        n_layers = len(fake_feats[0]) - 2
    if n_layers < 1:
        raise BoneKitError("feature_matching_loss needs the discriminator's intermediate features: build it "
                           "with feature_matching=True.")
    weight = (1.0 / num_d) * (4.0 / (n_layers + 1)) * float(lambda_feat)
    total = None
    for fake, real in zip(fake_feats, real_feats):
        if len(fake) != len(real):
            raise BoneKitError("feature_matching_loss: fake and real features have different layer counts.")
        for f, r in zip(fake[:-1], real[:-1]):
            term = weight * F.l1_loss(f, r.detach())
            total = term if total is None else total + term
    if total is None:
        raise BoneKitError("feature_matching_loss needs the discriminator's intermediate features: build it "
                           "with feature_matching=True.")
    return total


# torchvision's VGG19 ("E") layer layout: numbers are 3x3 conv widths (each followed by ReLU), "M" max pooling.
VGG19_LAYER_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                      512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
# pix2pixHD's slices: after relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (module indices 1, 6, 11, 20, 29)
_VGG_SLICE_ENDS = (2, 7, 12, 21, 30)
_VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


class VGG19Features(nn.Sequential):
    """VGG19's convolutional stack with torchvision's ``vgg19().features`` module indices.

    Its ``state_dict`` keys are ``0.weight``, ``0.bias``, ``2.weight``, ... ``34.bias``
    (torchvision's full model prefixes them with ``features.``).
    """

    def __init__(self):
        layers: list[nn.Module] = []
        c = 3
        for v in VGG19_LAYER_CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(True)]
                c = v
        super().__init__(*layers)


class VGGLoss(nn.Module):
    """pix2pixHD's VGG19 perceptual loss: ``sum_k w_k * L1(phi_k(x), phi_k(y))``.

    ``phi_k`` are the VGG19 features after relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 with
    weights 1/32, 1/16, 1/8, 1/4 and 1; images go in as they are (in ``[-1, 1]``, no ImageNet
    normalisation, as in pix2pixHD) and 1-channel images are repeated to 3 channels. The target's
    features are detached. pix2pixHD multiplies this by ``lambda_feat`` (10); the caller does.
    The VGG parameters are frozen. Only useful with ImageNet-trained weights: build it with
    :meth:`from_file`.
    """

    def __init__(self, features: VGG19Features):
        super().__init__()
        if not isinstance(features, VGG19Features):
            raise BoneKitError("VGGLoss needs a VGG19Features module; use VGGLoss.from_file(path).")
        self.slices = nn.ModuleList()
        start = 0
        for end in _VGG_SLICE_ENDS:
            self.slices.append(nn.Sequential(*[features[i] for i in range(start, end)]))
            start = end
        self.weights = _VGG_WEIGHTS
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(cls, path) -> "VGGLoss":
        """Load ImageNet VGG19 weights from a local PyTorch file (never downloads).

        The file must hold a ``state_dict`` saved from torchvision, e.g.
        ``torch.save(torchvision.models.vgg19(weights="IMAGENET1K_V1").state_dict(), path)``
        (keys ``features.0.weight`` ... ``features.34.bias``; ``classifier.*`` keys are ignored),
        or the ``features`` part alone (keys ``0.weight`` ... ``34.bias``).

        Raises
        ------
        BoneKitError
            When the file is missing or unreadable, or its keys or shapes are not VGG19's.
        """
        expected = ("a PyTorch state_dict of torchvision's VGG19, e.g. saved with "
                    "torch.save(torchvision.models.vgg19(weights='IMAGENET1K_V1').state_dict(), path), "
                    "with keys features.0.weight ... features.34.bias")
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise BoneKitError(f"VGG19 weight file not found: {path}. Expected {expected}.")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise BoneKitError(f"Cannot read VGG19 weight file {path} ({exc}). Expected {expected}.") from exc
        if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise BoneKitError(f"{path} does not hold a state_dict of tensors. Expected {expected}.")
        if any(k.startswith("features.") for k in sd):
            sd = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
        else:
            sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
        with torch.device("cpu"):
            features = VGG19Features()
        want = features.state_dict()
        missing = [k for k in want if k not in sd]
        unexpected = [k for k in sd if k not in want]
        if missing or unexpected:
            raise BoneKitError(f"{path} is not a VGG19 state_dict (missing {len(missing)} keys, e.g. "
                               f"{missing[:3]}; unexpected {len(unexpected)}, e.g. {unexpected[:3]}). "
                               f"Expected {expected}.")
        for k, v in want.items():
            if tuple(sd[k].shape) != tuple(v.shape):
                raise BoneKitError(f"{path}: features.{k} has shape {tuple(sd[k].shape)}, VGG19 needs "
                                   f"{tuple(v.shape)}. Expected {expected}.")
        features.load_state_dict({k: v.float() for k, v in sd.items()})
        return cls(features)

    def train(self, mode: bool = True) -> "VGGLoss":
        # The frozen feature extractor has no train-time behaviour; keep it in eval mode.
        return super().train(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for s in self.slices:
            x = s(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise BoneKitError(f"VGGLoss needs images of equal shape (got {tuple(x.shape)} and {tuple(y.shape)}).")
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise BoneKitError(f"VGGLoss takes N x 1 x H x W or N x 3 x H x W images (got {tuple(x.shape)}).")
        if x.shape[1] == 1:
            x, y = x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)
        fx, fy = self._features(x), self._features(y)
        total = None
        for w, a, b in zip(self.weights, fx, fy):
            term = w * F.l1_loss(a, b.detach())
            total = term if total is None else total + term
        return total
