"""Implicit two-path autoencoder (ITAE, AAAI 2021, "Implicit two-path AE" and Table 1).

Two 3-D convolutional encoders read the same clip of T frames. The appearance (slow) path sees every tau-th
frame through many channels and short temporal kernels; the motion (fast) path sees all T frames through 1/8
of the channels and long temporal kernels. SlowFast-style lateral connections feed motion into appearance
after each layer, and one decoder without skip connections reconstructs the T frames from both final features.
Those final features, pooled over channels by :func:`pool_channels`, are the inputs of the flow models.

Paper shapes (tau = 4, RGB 256x256): x (B, 3, 16, 256, 256) -> app (B, 256, 4, 32, 32),
mot (B, 32, 16, 32, 32), recon (B, 3, 16, 256, 256). ``layer_shapes`` lists every layer, i.e. Table 1.
Choices the paper leaves open are recorded in ``vadcore/models/README.md``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from vadcore.configtools import to_dict
from vadcore.errors import ConfigError

PATHS = ("app", "app+mot")  # one-path AE baseline (Table 3), ITAE
MOTION_FIELDS = ("motion_ratio", "mot_temporal_kernels", "lateral")  # what the one-path AE never builds
LATERAL_RATIO = 2  # lateral output channels = 2 x motion channels, SlowFast's fusion_conv_channel_ratio
NORM_GROUPS = 8  # GroupNorm uses gcd(channels, 8) groups, so even 1/8-width motion layers keep groups of >= 2
LEAKY_SLOPE = 0.2  # LeakyReLU keeps latent features continuous (no exact zeros) for the flow models


@dataclass(frozen=True)
class ITAEConfig:
    """Architecture of the ITAE; defaults are the paper's (Table 1, "Implementations")."""

    frames: int = 16  # T, clip length: "we resize the input frame to 256x256 and set T = 16"
    tau: int = 4  # appearance path reads every tau-th frame: "we use tau = 4 in this paper"
    in_channels: int = 3  # 1 = grey, 3 = RGB; Table 1's decoder outputs 3 channels
    app_channels: tuple[int, ...] = (96, 128, 256, 256)  # appearance conv1..4 outputs, Table 1
    width: float = 1.0  # multiplier on every channel count, for small profiles; paper 1.0
    motion_ratio: float = 0.125  # motion channels = round(app x ratio) >= 1: Table 1's (12, 16, 32, 32)
    app_temporal_kernels: tuple[int, ...] = (1, 1, 3, 3)  # appearance kernels (t, 3, 3), Table 1
    mot_temporal_kernels: tuple[int, ...] = (5, 3, 3, 3)  # motion kernels (t, 3, 3), Table 1
    spatial_strides: tuple[int, ...] = (2, 2, 2, 1)  # Table 1, latent 1/8; Ped2 uses (2, 2, 1, 1), latent 1/4
    lateral: bool = True  # motion -> appearance connections after conv1..3 (SlowFast); off = ablation
    paths: str = "app+mot"  # "app+mot" = ITAE, "app" = one-path AE of Table 3 and Fig. 3

    def validate(self) -> None:
        """Check every field and the fields against each other; raise ConfigError naming the field."""
        T, tau = self.frames, self.tau
        if T < 1:
            raise ConfigError(f"itae.frames={T} must be >= 1")
        if tau < 1 or T % tau:
            raise ConfigError(f"itae.tau={tau} must divide itae.frames={T}")
        if tau & (tau - 1) or tau > 16:
            raise ConfigError(
                f"itae.tau={tau} must be a power of 2 up to 16: the decoder doubles time in at most its 4 layers"
            )
        if self.in_channels < 1:
            raise ConfigError(f"itae.in_channels={self.in_channels} must be >= 1 (1 grey, 3 RGB)")
        for name in ("app_channels", "app_temporal_kernels", "mot_temporal_kernels", "spatial_strides"):
            value = getattr(self, name)
            if len(value) != 4:
                raise ConfigError(f"itae.{name}={value} must have 4 entries, one per encoder layer (Table 1)")
        if any(c < 1 for c in self.app_channels):
            raise ConfigError(f"itae.app_channels={self.app_channels} must all be >= 1")
        for name in ("app_temporal_kernels", "mot_temporal_kernels"):
            value = getattr(self, name)
            if any(k < 1 or k % 2 == 0 for k in value):
                raise ConfigError(f"itae.{name}={value} must all be odd and positive, to keep the frame count")
        if any(s not in (1, 2) for s in self.spatial_strides):
            raise ConfigError(f"itae.spatial_strides={self.spatial_strides} must all be 1 or 2")
        if self.width <= 0:
            raise ConfigError(f"itae.width={self.width} must be > 0")
        if self.motion_ratio <= 0:
            raise ConfigError(f"itae.motion_ratio={self.motion_ratio} must be > 0")
        if self.paths not in PATHS:
            raise ConfigError(f"itae.paths={self.paths!r} must be one of {', '.join(map(repr, PATHS))}")

    def built_fields(self) -> dict:
        """The fields the built model depends on (tuples as lists), for its stage's cache key: the one-path AE
        has no motion path, so the variants of a sweep that differ in the motion path share one one-path AE."""
        fields = to_dict(self)
        if self.paths == "app":
            for name in MOTION_FIELDS:
                del fields[name]
        return fields

    @property
    def app_widths(self) -> tuple[int, ...]:
        """Appearance conv1..4 output channels after the width multiplier."""
        return tuple(max(1, round(c * self.width)) for c in self.app_channels)

    @property
    def mot_widths(self) -> tuple[int, ...]:
        """Motion conv1..4 output channels: the appearance widths times motion_ratio, at least 1."""
        return tuple(max(1, round(c * self.motion_ratio)) for c in self.app_widths)

    @property
    def decoder_strides(self) -> tuple[tuple[int, int], ...]:
        """(temporal, spatial) stride of deconv1..4.

        Spatial strides mirror the encoder's. Time grows from T/tau back to T through log2(tau) stride-2
        layers, taken in the order deconv2, deconv3, deconv4, deconv1: Table 1's (1, 2, 2, 1) for tau = 4.
        """
        doubling = (1, 2, 3, 0)[: self.tau.bit_length() - 1]  # log2(tau) layers double time
        return tuple((2 if i in doubling else 1, s) for i, s in enumerate(reversed(self.spatial_strides)))

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size (h, w) of both final features for frames of height x width."""
        factor = math.prod(self.spatial_strides)
        if height % factor or width % factor:
            raise ConfigError(
                f"frame size {height}x{width} must be divisible by {factor}, "
                f"the product of itae.spatial_strides={tuple(self.spatial_strides)}"
            )
        return height // factor, width // factor


class ITAEOutput(NamedTuple):
    """What one forward pass returns; the flows read ``app`` and ``mot``."""

    recon: Tensor  # (B, C, T, H, W) in [0, 1]
    app: Tensor  # (B, Ca, T/tau, h, w) final appearance feature
    mot: Tensor | None  # (B, Cm, T, h, w) final motion feature; None for the one-path AE


class Layer(nn.Sequential):
    """One row of Table 1 (or a lateral connection): convolution -> GroupNorm -> LeakyReLU.

    ``layer_shapes`` reports the output of every Layer. Without ``act`` the row is the output layer:
    convolution -> sigmoid, so that |I - I_hat| < 1 as Eq. 7's -log10(1 - |I - I_hat|) needs.
    """

    def __init__(self, conv: nn.Module, channels: int, act: bool = True):
        if act:
            super().__init__(conv, nn.GroupNorm(math.gcd(channels, NORM_GROUPS), channels), nn.LeakyReLU(LEAKY_SLOPE))
        else:
            super().__init__(conv, nn.Sigmoid())


def _encoder_layer(cin: int, cout: int, kt: int, stride: int) -> Layer:
    """(B, cin, t, H, W) -> (B, cout, t, H/stride, W/stride): kernel (kt, 3, 3), time kept by padding."""
    return Layer(nn.Conv3d(cin, cout, (kt, 3, 3), (1, stride, stride), (kt // 2, 1, 1), bias=False), cout)


def _lateral(cm: int, tau: int) -> Layer:
    """(B, cm, T, h, w) -> (B, 2cm, T/tau, h, w): SlowFast's (5, 1, 1) conv with temporal stride tau."""
    return Layer(nn.Conv3d(cm, LATERAL_RATIO * cm, (5, 1, 1), (tau, 1, 1), (2, 0, 0), bias=False), LATERAL_RATIO * cm)


def _decoder_layer(cin: int, cout: int, stride: tuple[int, int], last: bool) -> Layer:
    """(B, cin, t, h, w) -> (B, cout, t*st, h*ss, w*ss): kernel (3, 3, 3); output_padding makes sizes exact."""
    st, ss = stride
    deconv = nn.ConvTranspose3d(
        cin, cout, 3, (st, ss, ss), padding=1, output_padding=(st - 1, ss - 1, ss - 1), bias=last
    )
    return Layer(deconv, cout, act=not last)


class ITAE(nn.Module):
    """Implicit two-path autoencoder; with ``paths="app"`` the one-path AE baseline (appearance only).

    Input x: (B, C, T, H, W) float in [0, 1], H and W divisible by the product of the spatial strides.
    """

    def __init__(self, cfg: ITAEConfig = ITAEConfig()):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        app, mot, k = cfg.app_widths, cfg.mot_widths, cfg.spatial_strides
        two_path = cfg.paths == "app+mot"
        lateral = two_path and cfg.lateral
        # appearance conv i+1 reads conv i's output plus, with laterals, 2 x motion channels of conv i
        app_in = (cfg.in_channels, *(a + (LATERAL_RATIO * m if lateral else 0) for a, m in zip(app[:3], mot[:3])))
        self.app = nn.ModuleDict(
            {f"conv{i + 1}": _encoder_layer(app_in[i], app[i], cfg.app_temporal_kernels[i], k[i]) for i in range(4)}
        )
        self.mot = self.lateral = self.fuse = None
        if two_path:
            mot_in = (cfg.in_channels, *mot[:3])
            self.mot = nn.ModuleDict(
                {f"conv{i + 1}": _encoder_layer(mot_in[i], mot[i], cfg.mot_temporal_kernels[i], k[i]) for i in range(4)}
            )
            if lateral:
                self.lateral = nn.ModuleDict({f"conv{i + 1}": _lateral(mot[i], cfg.tau) for i in range(3)})
            self.fuse = _lateral(mot[3], cfg.tau)  # final motion feature -> T/tau frames for the decoder
        # decoder widths mirror the encoder: conv3, conv2, conv1 widths (Table 1: 256, 128, 96), then the image
        dec_in = (app[3] + (LATERAL_RATIO * mot[3] if two_path else 0), app[2], app[1], app[0])
        dec_out = (app[2], app[1], app[0], cfg.in_channels)
        self.decoder = nn.Sequential(
            OrderedDict(
                (f"deconv{i + 1}", _decoder_layer(dec_in[i], dec_out[i], cfg.decoder_strides[i], last=i == 3))
                for i in range(4)
            )
        )

    def forward(self, x: Tensor) -> ITAEOutput:
        """x (B, C, T, H, W) -> recon (B, C, T, H, W), app (B, Ca, T/tau, h, w), mot (B, Cm, T, h, w) or None."""
        self._check_input(x)
        a = x[:, :, :: self.cfg.tau]  # (B, C, T/tau, H, W): the slow path samples every tau-th frame
        m = x  # (B, C, T, H, W): the fast path reads every frame
        for i, name in enumerate(self.app):
            a = self.app[name](a)  # (B, Ca_i, T/tau, H_i, W_i)
            if self.mot is not None:
                m = self.mot[name](m)  # (B, Cm_i, T, H_i, W_i)
                if self.lateral is not None and i < 3:
                    a = torch.cat([a, self.lateral[name](m)], dim=1)  # (B, Ca_i + 2 Cm_i, T/tau, H_i, W_i)
        if self.mot is None:
            return ITAEOutput(self.decoder(a), a, None)  # one-path: decode (B, Ca, T/tau, h, w) alone
        z = torch.cat([a, self.fuse(m)], dim=1)  # (B, Ca + 2 Cm, T/tau, h, w)
        return ITAEOutput(self.decoder(z), a, m)  # recon (B, C, T, H, W)

    def _check_input(self, x: Tensor) -> None:
        cfg = self.cfg
        if x.ndim != 5 or x.shape[1] != cfg.in_channels or x.shape[2] != cfg.frames:
            raise ConfigError(
                f"ITAE input shape {tuple(x.shape)} must be (B, itae.in_channels={cfg.in_channels}, "
                f"itae.frames={cfg.frames}, H, W)"
            )
        cfg.latent_size(x.shape[3], x.shape[4])


def layer_shapes(model: ITAE, input_shape: Sequence[int]) -> list[tuple[str, tuple[int, ...]]]:
    """Output shape of every layer, in execution order, e.g. ("app.conv1", (1, 96, 4, 128, 128)): Table 1.

    Runs a twin of ``model`` built on the meta device, so it allocates and computes nothing, even at 256x256.
    """
    with torch.device("meta"):
        twin = ITAE(model.cfg)
    shapes: list[tuple[str, tuple[int, ...]]] = []
    for name, module in twin.named_modules():
        if isinstance(module, Layer):
            module.register_forward_hook(lambda _m, _i, out, name=name: shapes.append((name, tuple(out.shape))))
    twin(torch.empty(tuple(input_shape), device="meta"))
    return shapes


def pool_channels(feat: Tensor) -> Tensor:
    """(B, C, t, h, w) -> (B, 2t, h, w): [max over C per time step, mean over C per time step].

    The flow input of Fig. 2 ("max-pooling and average-pooling along the channel axis"): it reduces a path's
    feature to 2t maps whatever its channel count.
    """
    return torch.cat([feat.amax(dim=1), feat.mean(dim=1)], dim=1)  # 2 x (B, t, h, w) -> (B, 2t, h, w)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (trainable or not) in ``module``."""
    return sum(p.numel() for p in module.parameters())
