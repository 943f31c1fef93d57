"""Reconstruction loss: gradient loss by hand, MS-SSIM against an independent scipy reference, weighting."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from vadcore.errors import ConfigError
from vadcore.models.losses import (
    MS_SSIM_WEIGHTS,
    LossConfig,
    gradient_loss,
    ms_ssim,
    ms_ssim_setup,
    reconstruction_loss,
)


def _clip_pair(shape=(2, 3, 4, 48, 48), noise=0.1, seed=0):
    """x: smooth random clip in [0, 1]; recon: x plus noise, clamped."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool3d(torch.rand(shape, generator=g), (1, 3, 3), 1, (0, 1, 1))
    return x, (x + noise * torch.randn(shape, generator=g)).clamp(0, 1)


def _reference_ms_ssim(a: np.ndarray, b: np.ndarray, weights) -> float:
    """MS-SSIM of two 2-D images in [0, 1] (Wang et al. 2003), with scipy filters and numpy pooling."""

    def blur(img):  # 11-tap Gaussian, sigma 1.5, then crop to the positions where the window fits
        return gaussian_filter(img, 1.5, truncate=5 / 1.5)[5:-5, 5:-5]

    def pool(img):
        h, w = img.shape[0] // 2, img.shape[1] // 2
        return img[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))

    c1, c2, result = 0.01**2, 0.03**2, 1.0
    for j, w in enumerate(weights):
        if j:
            a, b = pool(a), pool(b)
        mu_a, mu_b = blur(a), blur(b)
        var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
        term = (2 * cov + c2) / (var_a + var_b + c2)
        if j == len(weights) - 1:
            term = term * (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
        result *= term.mean() ** w
    return result


def test_gradient_loss_hand_example():
    x = torch.tensor([[0.0, 1.0], [0.5, 0.0]]).view(1, 1, 1, 2, 2)
    r = torch.tensor([[0.0, 0.5], [0.0, 0.0]]).view(1, 1, 1, 2, 2)
    # vertical |differences|: x (0.5, 1.0), r (0.0, 0.5) -> mean |.| 0.5
    # horizontal |differences|: x (1.0, 0.5), r (0.5, 0.0) -> mean |.| 0.5
    assert gradient_loss(x, r).item() == pytest.approx(1.0)


def test_gradient_loss_sees_sharpness_not_brightness():
    x, r = _clip_pair()
    assert gradient_loss(x, x).item() == 0
    assert gradient_loss(x, x + 0.1).item() == pytest.approx(0, abs=1e-6)  # same edges, other brightness
    assert gradient_loss(x, r).item() > 0


@pytest.mark.parametrize(
    "side, window, scales", [(256, 11, 5), (240, 11, 5), (48, 11, 3), (32, 11, 2), (16, 11, 1), (8, 7, 1)]
)
def test_ms_ssim_scales_adapt_to_small_frames(side, window, scales):
    got_window, weights = ms_ssim_setup(side, 2 * side)
    assert (got_window, len(weights)) == (window, scales)
    assert sum(weights) == pytest.approx(1)
    assert weights == pytest.approx([w / sum(MS_SSIM_WEIGHTS[:scales]) for w in MS_SSIM_WEIGHTS[:scales]])


@pytest.mark.parametrize("side", [16, 48])
def test_ms_ssim_matches_scipy_reference(side):
    x, r = _clip_pair((1, 2, 3, side, side))
    _, weights = ms_ssim_setup(side, side)
    expected = np.mean(
        [
            _reference_ms_ssim(x[0, c, t].double().numpy(), r[0, c, t].double().numpy(), weights)
            for c in range(2)
            for t in range(3)
        ]
    )
    assert ms_ssim(x, r).item() == pytest.approx(expected, rel=1e-4)


def test_ms_ssim_is_one_only_for_identical_clips():
    x, r = _clip_pair()
    assert ms_ssim(x, x).item() == pytest.approx(1, abs=1e-5)
    assert ms_ssim(x, r).item() < 0.99


def test_ms_ssim_gradients_stay_finite_for_anticorrelated_frames():
    x, _ = _clip_pair()
    r = (1 - x).requires_grad_()
    (1 - ms_ssim(x, r)).backward()
    assert torch.isfinite(r.grad).all()


def test_loss_is_zero_for_a_perfect_reconstruction():
    x, _ = _clip_pair()
    total, parts = reconstruction_loss(x, x, LossConfig(ms_ssim=1.0))
    assert total.item() == pytest.approx(0, abs=1e-5)
    assert set(parts) == {"l2", "gradient", "ms_ssim"}


def test_loss_decreases_as_recon_moves_toward_x():
    x, r0 = _clip_pair()
    totals = [
        reconstruction_loss(x, x + (1 - t) * (r0 - x), LossConfig(ms_ssim=1.0))[0].item() for t in (0, 0.5, 0.9)
    ]
    assert totals[0] > totals[1] > totals[2] > 0


def test_loss_is_the_weighted_sum_of_detached_parts():
    x, r = _clip_pair()
    r.requires_grad_()
    cfg = LossConfig(l2=2.0, gradient=0.5, ms_ssim=0.25)
    total, parts = reconstruction_loss(x, r, cfg)
    assert total.requires_grad and not any(p.requires_grad for p in parts.values())
    assert parts["l2"].item() == pytest.approx(((x - r) ** 2).mean().item())
    weighted = 2.0 * parts["l2"] + 0.5 * parts["gradient"] + 0.25 * parts["ms_ssim"]
    assert total.item() == pytest.approx(weighted.item())
    _, default_parts = reconstruction_loss(x, r, LossConfig())
    assert set(default_parts) == {"l2", "gradient"}  # disabled terms are not computed


@pytest.mark.parametrize(
    "kwargs, message",
    [({"gradient": -1.0}, r"loss.gradient=-1.0 must be >= 0"), ({"l2": 0.0, "gradient": 0.0}, r"all 0")],
)
def test_loss_config_validate(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LossConfig(**kwargs).validate()
