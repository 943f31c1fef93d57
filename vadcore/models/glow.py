"""Glow (Kingma & Dhariwal 2018) on the ITAE's pooled latents: the density model of ITAE Eq. 1-2.

Every invertible layer maps ``forward(x) -> (y, logdet)`` and ``reverse(y) -> x``. ``logdet`` (B, H, W) is
per spatial position of the output: every layer acts on one position's channels, or (the coupling) sets one
position's scale, so log|det dy/dx| is its sum over positions. The per-position parts give a flow's NLL *map*
(``nll_map``), whose patches score small anomalies the whole-latent NLL averages away.

One level is squeeze -> K x (ActNorm -> invertible 1x1 conv -> affine coupling); every level but the last splits off half its channels, scored by a learned conditional Gaussian (Glow's
multi-scale architecture, after RealNVP). With the prior of ``hgad_prior.py``:

    log p(x) = prior.log_prob(z) + split_logp + logdet                                      (ITAE Eq. 2)

Paper shapes (K = 32, L = 3, input (B, 2t, 32, 32)): the levels run on (8t, 16, 16), (16t, 8, 8) and
(32t, 4, 4) after their squeezes, the splits drop (4t, 16, 16) and (8t, 8, 8), and z is (B, 512t):
D_top = C*H*W / 2**(L-1). Choices the paper leaves open are recorded in ``vadcore/models/README.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vadcore.errors import ConfigError

SCALE_OFFSET = 2.0  # coupling scale = sigmoid(h + 2) / sigmoid(2): Glow's offset, exactly 1 at h = 0
ACTNORM_MIN_STD = 1e-6  # ActNorm leaves channels whose init-batch std is below this unscaled (only centred)
LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class GlowConfig:
    """Architecture of one Glow; defaults are the ITAE paper's ("K = 32 and L = 3 (L = 1 for UCSD)")."""

    steps: int = 32  # K flow steps per level (paper: 32)
    levels: int = 3  # L levels, a squeeze each, a split after all but the last (paper: 3; 1 for UCSD)
    hidden: int = 512  # width of the coupling networks (Glow: 512)
    split_prior: bool = True  # split-off halves ~ N(mean, std) predicted from the kept half (Glow); False: N(0, I)

    def validate(self) -> None:
        """Raise ConfigError naming the first field out of range."""
        for name in ("steps", "levels", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"flow.glow.{name}={value!r} must be an integer >= 1")

    def check_input(self, channels: int, height: int, width: int) -> None:
        """Raise ConfigError unless a (channels, height, width) input survives L squeezes."""
        self.validate()
        L, n = self.levels, 2**self.levels
        if channels < 1:
            raise ConfigError(f"flow input channels={channels} must be >= 1")
        if height % n or width % n:
            raise ConfigError(
                f"flow.glow.levels={L} too deep: latent {height}x{width} must be divisible by 2**L={n}"
            )


def _logdet(per_pixel: Tensor, x: Tensor) -> Tensor:
    """The logdet map (B, H, W) of a layer whose log|det| is the same scalar `per_pixel` at every position."""
    return per_pixel.expand(x.shape[0], x.shape[2], x.shape[3])


def _block_sum(m: Tensor) -> Tensor:
    """(B, H, W) -> (B, H/2, W/2): sums 2x2 blocks, carrying a per-position map through a squeeze."""
    return F.avg_pool2d(m[:, None], 2)[:, 0] * 4


def _zero_conv(cin: int, cout: int) -> nn.Conv2d:
    """3x3 conv starting at exactly zero output, so couplings and split priors start as identity / N(0, I)."""
    conv = nn.Conv2d(cin, cout, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def gaussian_log_density(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Elementwise log N(x; mean, exp(log_std)^2) in nats, same shape as x."""
    return -0.5 * ((x - mean) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * LOG_2PI


class ActNorm(nn.Module):
    """Per-channel affine y = (x + bias) * exp(log_scale) (Glow §3.1), data-initialised on the first batch.

    The first forward sets bias and scale so that batch has per-channel mean 0 and std 1. ``initialized`` is
    a buffer, so it is saved in the state dict and a loaded model keeps its trained values. A channel that is
    constant on the init batch is only centred: scaling it by 1/eps would amplify any later deviation by
    1/eps and add h*w*log(1/eps) nats to every sample's logdet.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self._checked = False  # host-side cache of `initialized`, so training does not sync on it every step

    def _load_from_state_dict(self, *args, **kwargs):
        self._checked = False  # the loaded buffer decides again on the next forward
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
        std = x.std(dim=(0, 2, 3), keepdim=True, correction=0)
        std = torch.where(std > ACTNORM_MIN_STD, std, torch.ones_like(std))
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std))
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self._checked:
            if not self.initialized:
                self._initialize(x)
            self._checked = True
        return (x + self.bias) * torch.exp(self.log_scale), _logdet(self.log_scale.sum(), x)

    def reverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.log_scale) - self.bias


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution in LU form (Glow §3.2): W = P L (U + diag(sign(s) * exp(log|s|))).

    P and sign(s) are fixed buffers; L (unit lower), U (strict upper) and log|s| are learned, so
    log|det W| = sum(log|s|) costs O(C), and is the layer's logdet at every position. W starts as a random
    rotation, |det W| = 1.
    """

    def __init__(self, channels: int):
        super().__init__()
        rotation = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))[0]
        perm, lower, upper = torch.linalg.lu(rotation)  # rotation = perm @ lower @ upper
        s, dtype = upper.diagonal(), torch.get_default_dtype()
        self.register_buffer("perm", perm.to(dtype))
        self.register_buffer("sign_s", torch.sign(s).to(dtype))
        self.lower = nn.Parameter(torch.tril(lower, -1).to(dtype))  # only the strict lower triangle is used
        self.upper = nn.Parameter(torch.triu(upper, 1).to(dtype))  # only the strict upper triangle is used
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).to(dtype))

    def weight(self) -> Tensor:
        """W (C, C), rebuilt from its LU factors."""
        eye = torch.eye(self.log_s.numel(), dtype=self.log_s.dtype, device=self.log_s.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self.weight()[:, :, None, None]  # (C, C) -> (C, C, 1, 1) conv kernel
        return F.conv2d(x, w), _logdet(self.log_s.sum(), x)

    def reverse(self, y: Tensor) -> Tensor:
        return F.conv2d(y, torch.linalg.inv(self.weight())[:, :, None, None])


class AffineCoupling(nn.Module):
    """Affine coupling (Glow §3.3): the first half x_a sets y_b = (x_b + shift) * scale, y_a = x_a.

    NN(x_a) = conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero-initialised conv3x3 -> (shift, h), interleaved on
    channels as in Glow; scale = sigmoid(h + 2) / sigmoid(2). Glow's sigmoid keeps the scale bounded; the
    division makes the fresh step exactly the identity (Glow's starts at scale 0.88). logdet = the sum of
    log scale over channels, per position.
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.n_a = channels // 2
        n_b = channels - self.n_a
        self.net = nn.Sequential(
            nn.Conv2d(self.n_a, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            _zero_conv(hidden, 2 * n_b),
        )

    def _shift_log_scale(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(x_a)  # (B, 2*n_b, H, W): channels 0, 2, 4, ... shift; 1, 3, 5, ... scale
        log_scale = F.logsigmoid(h[:, 1::2] + SCALE_OFFSET) + math.log1p(math.exp(-SCALE_OFFSET))
        return h[:, 0::2], log_scale

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = x[:, : self.n_a], x[:, self.n_a :]
        shift, log_scale = self._shift_log_scale(x_a)
        y_b = (x_b + shift) * torch.exp(log_scale)
        return torch.cat([x_a, y_b], dim=1), log_scale.sum(1)

    def reverse(self, y: Tensor) -> Tensor:
        y_a, y_b = y[:, : self.n_a], y[:, self.n_a :]
        shift, log_scale = self._shift_log_scale(y_a)
        return torch.cat([y_a, y_b * torch.exp(-log_scale) - shift], dim=1)


class Squeeze(nn.Module):
    """Space-to-depth (Glow / RealNVP): (B, C, H, W) -> (B, 4C, H/2, W/2), a permutation, logdet 0."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        x = x.view(b, c, h // 2, 2, w // 2, 2)  # (B, C, H/2, 2, W/2, 2)
        x = x.permute(0, 1, 3, 5, 2, 4)  # (B, C, 2, 2, H/2, W/2)
        return x.reshape(b, 4 * c, h // 2, w // 2), x.new_zeros(b, h // 2, w // 2)

    def reverse(self, y: Tensor) -> Tensor:
        b, c4, h, w = y.shape
        y = y.view(b, c4 // 4, 2, 2, h, w)  # (B, C, 2, 2, H/2, W/2)
        y = y.permute(0, 1, 4, 2, 5, 3)  # (B, C, H/2, 2, W/2, 2)
        return y.reshape(b, c4 // 4, 2 * h, 2 * w)


class Split(nn.Module):
    """Multi-scale split (Glow §3, RealNVP §3.6): the second half of the channels leaves the flow here.

    Its density is a Gaussian whose mean and log-std a zero-initialised conv predicts from the kept half
    (``learned``), else N(0, I). Not a bijection alone: ``forward`` returns (kept, dropped, log p(dropped |
    kept) per position (B, H, W)) and ``reverse`` needs ``dropped`` back (or samples it from the same Gaussian).
    """

    def __init__(self, channels: int, learned: bool):
        super().__init__()
        self.n_keep, self.n_drop = channels // 2, channels - channels // 2
        self.prior = _zero_conv(self.n_keep, 2 * self.n_drop) if learned else None

    def _mean_log_std(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        if self.prior is None:
            zeros = kept.new_zeros(kept.shape[0], self.n_drop, *kept.shape[2:])  # (B, n_drop, H, W)
            return zeros, zeros
        out = self.prior(kept)  # (B, 2*n_drop, H, W): channels 0, 2, ... mean; 1, 3, ... log-std
        return out[:, 0::2], out[:, 1::2]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        kept, dropped = x[:, : self.n_keep], x[:, self.n_keep :]
        logp = gaussian_log_density(dropped, *self._mean_log_std(kept))
        return kept, dropped, logp.sum(1)

    def reverse(self, kept: Tensor, dropped: Tensor | None = None) -> Tensor:
        if dropped is None:
            mean, log_std = self._mean_log_std(kept)
            dropped = mean + torch.exp(log_std) * torch.randn_like(mean)
        return torch.cat([kept, dropped], dim=1)


class FlowStep(nn.Module):
    """One step of flow (Glow Fig. 2a): ActNorm -> invertible 1x1 conv -> affine coupling."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.layers = nn.ModuleList([ActNorm(channels), InvConv1x1(channels), AffineCoupling(channels, hidden)])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = 0
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def reverse(self, y: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            y = layer.reverse(y)
        return y


class FlowOutput(NamedTuple):
    z: Tensor  # (B, D_top): the last level's output, flattened; the prior's input
    logdet: Tensor  # (B,) summed log|det J| of all layers: J of x -> (z, *splits)
    split_logp: Tensor  # (B,) summed log p(split-off half | kept half); zeros when L = 1
    splits: list[Tensor]  # split-off halves, level by level, (B, 2C_l, H_l, W_l): reverse() needs them
    jac_map: Tensor  # (B, H_top, W_top) logdet + split_logp of the input block under each top position


class Glow(nn.Module):
    """Multi-scale Glow (Glow Fig. 2b) on (B, C, H, W) inputs: L levels of squeeze -> K steps [-> split].

    ``forward`` gives the pieces of log p(x) (module docstring); ``reverse(z, splits)`` inverts it exactly
    when given the ``splits`` of ``forward``, and samples the split-off halves from their priors otherwise.
    """

    def __init__(self, cfg: GlowConfig, in_channels: int, height: int, width: int):
        super().__init__()
        cfg.check_input(in_channels, height, width)
        self.cfg, self.in_shape = cfg, (in_channels, height, width)
        self.squeeze = Squeeze()
        self.levels = nn.ModuleList()
        self.splits = nn.ModuleList()  # one per level but the last
        c, h, w = in_channels, height, width
        for level in range(cfg.levels):
            c, h, w = 4 * c, h // 2, w // 2  # after this level's squeeze
            self.levels.append(nn.ModuleList([FlowStep(c, cfg.hidden) for _ in range(cfg.steps)]))
            if level < cfg.levels - 1:
                self.splits.append(Split(c, cfg.split_prior))
                c //= 2
        self.top_shape = (c, h, w)

    @property
    def input_dim(self) -> int:
        """C * H * W: the dimension NLLs are normalised by (nats or bits per input dimension)."""
        return math.prod(self.in_shape)

    @property
    def latent_dim(self) -> int:
        """D_top = C * H * W / 2**(L-1), the dimension of z and of the prior."""
        return math.prod(self.top_shape)

    def forward(self, x: Tensor) -> FlowOutput:
        logdet = split_logp = None  # per-position maps (B, h, w) at the current level's resolution
        splits = []
        for i, steps in enumerate(self.levels):
            x, zero = self.squeeze(x)  # (B, C, H, W) -> (B, 4C, H/2, W/2)
            logdet, split_logp = (zero, zero) if i == 0 else (_block_sum(logdet), _block_sum(split_logp))
            for step in steps:
                x, ld = step(x)
                logdet = logdet + ld
            if i < len(self.splits):
                x, dropped, logp = self.splits[i](x)  # (B, 4C, ., .) -> kept and dropped, (B, 2C, ., .) each
                split_logp = split_logp + logp
                splits.append(dropped)
        jac = logdet.sum((1, 2)), split_logp.sum((1, 2))
        return FlowOutput(x.flatten(1), *jac, splits, logdet + split_logp)  # z: (B, C_top, H_top, W_top) -> (B, D_top)

    def reverse(self, z: Tensor, splits: list[Tensor] | None = None) -> Tensor:
        x = z.view(z.shape[0], *self.top_shape)  # (B, D_top) -> (B, C_top, H_top, W_top)
        for i in reversed(range(len(self.levels))):
            if i < len(self.splits):
                x = self.splits[i].reverse(x, None if splits is None else splits[i])  # (B, 4C, ., .)
            for step in reversed(self.levels[i]):
                x = step.reverse(x)
            x = self.squeeze.reverse(x)  # (B, 4C, H/2, W/2) -> (B, C, H, W)
        return x


def nll_per_dim(flow_out: FlowOutput, prior: nn.Module, input_dim: int) -> Tensor:
    """-log p(x) / (C*H*W) in nats, (B,): the anomaly score L of ITAE Eq. 8 and the reported metric.

    Continuous latents, so there is no 256-level dequantisation term (unlike Glow's bits/dim on images).
    """
    log_px = prior.log_prob(flow_out.z) + flow_out.split_logp + flow_out.logdet
    return -log_px / input_dim


def nll_map(flow_out: FlowOutput, prior: nn.Module, input_dim: int) -> Tensor:
    """-log p(x) per top position, in nats per input dimension, (B, H_top, W_top); its mean is ``nll_per_dim``.

    Each position owns the input block it was squeezed from; its NLL is its z's log-density, its share of
    every logdet and of the split-off halves. Needs a prior that factorises over positions
    (``prior.log_prob_map``: N(0, I), per-position HGAD); a mixture over the whole z (HGAD) has none.
    """
    b, h, w = flow_out.jac_map.shape
    z = flow_out.z.view(b, -1, h, w)  # (B, D_top) -> (B, C_top, H_top, W_top)
    return -(prior.log_prob_map(z) + flow_out.jac_map) / (input_dim / (h * w))


def bits_per_dim(nats: Tensor) -> Tensor:
    """Nats per dimension -> bits per dimension."""
    return nats / math.log(2)
