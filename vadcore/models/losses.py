"""Reconstruction loss of the ITAE (Eq. 3-4): L2 + gradient loss, plus MS-SSIM for UCSD ("Implementations").

All functions take clips x (ground truth) and recon of shape (B, C, T, H, W) with values in [0, 1]; the
gradient and MS-SSIM terms treat every frame as an image. Choices the paper leaves open are recorded in
``vadcore/models/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vadcore.errors import ConfigError

# Wang, Simoncelli and Bovik (2003): 5 scales, their weights, an 11-tap Gaussian of sigma 1.5, K1 and K2
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


@dataclass(frozen=True)
class LossConfig:
    """Weights of the reconstruction loss terms; defaults are Eq. 4 (L2 + gradient, no MS-SSIM)."""

    l2: float = 1.0  # mean squared error, Eq. 3
    gradient: float = 1.0  # gradient loss of Liu et al. 2018, Eq. 4 adds it with weight 1
    ms_ssim: float = 0.0  # weight of 1 - MS-SSIM; the paper adds it for UCSD only, weight unstated (ours: 1)

    def validate(self) -> None:
        """Weights must be non-negative and not all zero."""
        for name in ("l2", "gradient", "ms_ssim"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name}={getattr(self, name)} must be >= 0")
        if self.l2 == self.gradient == self.ms_ssim == 0:
            raise ConfigError("loss.l2, loss.gradient and loss.ms_ssim are all 0: at least one must be > 0")


def gradient_loss(x: Tensor, recon: Tensor) -> Tensor:
    """Liu et al. 2018: L1 distance between the absolute neighbour differences of x and recon, per frame.

    Mean over pixels of || |x[i,j] - x[i-1,j]| - |r[i,j] - r[i-1,j]| ||, plus the same along j.
    Penalises blur, which L2 alone prefers.
    """
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs() - (recon[..., 1:, :] - recon[..., :-1, :]).abs()  # (.., H-1, W)
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs() - (recon[..., :, 1:] - recon[..., :, :-1]).abs()  # (.., H, W-1)
    return dy.abs().mean() + dx.abs().mean()


def ms_ssim_setup(height: int, width: int) -> tuple[int, tuple[float, ...]]:
    """Window size and scale weights that fit frames of height x width.

    The standard 5 scales need the coarsest scale (side / 16) to hold an 11-pixel window, i.e. sides of
    176 or more. Smaller frames use as many scales as fit, with the first weights renormalised to sum to 1;
    frames under 11 pixels use one scale with the largest odd window that fits.
    """
    side = min(height, width)
    window = min(SSIM_WINDOW, side if side % 2 else side - 1)
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side >> scales >= window:  # avg-pooling halves (floors) the side
        scales += 1
    weights = MS_SSIM_WEIGHTS[:scales]
    return window, tuple(w / sum(weights) for w in weights)


def _blur_matrix(n: int, window: int, like: Tensor) -> Tensor:
    """(n, n - window + 1): column j holds the normalised Gaussian taps on rows j .. j + window - 1, so that
    `x @ m` blurs the last axis of x with valid padding."""
    coords = torch.arange(window, dtype=like.dtype, device=like.device) - window // 2
    g = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    cols = torch.arange(n - window + 1, device=like.device)
    m = like.new_zeros(n, n - window + 1)
    m[cols[None, :] + torch.arange(window, device=like.device)[:, None], cols[None, :]] = (g / g.sum())[:, None]
    return m


def _gaussian_blur(img: Tensor, window: int) -> Tensor:
    """(..., H, W) -> (..., H - window + 1, W - window + 1): separable Gaussian, valid padding.

    Two matrix products with banded matrices rather than two depthwise convolutions: a 1-channel 11-tap
    convolution runs at about 1 GFLOP/s on a CPU (forward and backward took 3x an ITAE training step at 64x96,
    1/8 width), a matrix product at the machine's matmul speed; the extra multiplications by zeros cost less.
    """
    H, W = img.shape[-2:]
    return _blur_matrix(H, window, img).T @ (img @ _blur_matrix(W, window, img))


def ms_ssim(x: Tensor, recon: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean multi-scale SSIM (Wang et al. 2003) over frames and channels of (B, C, T, H, W) clips; 1 = identical.

    Per scale j: contrast-structure cs_j = mean of (2 s_xy + C2) / (s_x^2 + s_y^2 + C2); at the coarsest scale
    the luminance term is included. MS-SSIM = prod_j cs_j^w_j with the luminance-including term at the last
    scale. Terms are clamped to a small positive floor so that fractional powers of negative
    correlations stay real and gradients finite. Computed in float32 (variances of bf16 inputs are too coarse).
    """
    B, C, T, H, W = x.shape
    window, weights = ms_ssim_setup(H, W)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    a = x.float().transpose(1, 2).reshape(B * T, C, H, W)  # (B*T, C, H, W): one image per frame
    b = recon.float().transpose(1, 2).reshape(B * T, C, H, W)
    result = torch.ones(B * T, C, device=x.device)
    for j, w in enumerate(weights):
        if j:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)  # (B*T, C, H/2^j, W/2^j)
        mu_a, mu_b, aa, bb, ab = _gaussian_blur(torch.stack([a, b, a * a, b * b, a * b]), window)  # 5 x (B*T, C, h, w)
        var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
        term = (2 * cov + c2) / (var_a + var_b + c2)  # contrast-structure map
        if j == len(weights) - 1:
            term = term * (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)  # luminance at the coarsest scale
        result = result * term.mean(dim=(2, 3)).clamp_min(1e-6) ** w  # (B*T, C)
    return result.mean()


def reconstruction_loss(x: Tensor, recon: Tensor, cfg: LossConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the enabled terms (Eq. 4, + MS-SSIM) and its unweighted parts for logging.

    The parts are detached 0-d tensors, not floats: calling ``.item()`` here would make the host wait for the
    GPU every step, so callers convert them only when they log. Keys: the enabled terms among "l2",
    "gradient" and "ms_ssim" (as 1 - MS-SSIM); the total is the first return value.
    """
    terms = {
        "l2": (cfg.l2, lambda: F.mse_loss(recon, x)),
        "gradient": (cfg.gradient, lambda: gradient_loss(x, recon)),
        "ms_ssim": (cfg.ms_ssim, lambda: 1 - ms_ssim(x, recon)),
    }
    total = x.new_zeros(())
    parts: dict[str, Tensor] = {}
    for name, (weight, term) in terms.items():
        if weight > 0:
            value = term()
            total = total + weight * value
            parts[name] = value.detach()
    return total, parts
