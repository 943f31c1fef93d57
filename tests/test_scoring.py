import numpy as np
import pytest
import torch

from vadcore.errors import ConfigError
from vadcore.scoring import (
    ScoreConfig,
    anomaly_score,
    combine_nll,
    frames_from_windows,
    local_nll,
    minmax,
    mog2_foreground,
    patch_max,
    recon_error,
    smooth_in_videos,
)


def _frame(err_at: dict[tuple[int, int], float], H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (1, 1, 1, H, W) zero frame and a reconstruction off by |d| at the given pixels."""
    recon = torch.zeros(1, 1, 1, H, W, dtype=torch.float64)
    for (i, j), d in err_at.items():
        recon[..., i, j] = d
    return torch.zeros_like(recon), recon


def test_eq7_by_hand():
    # |d| = 0.9 -> -log10(0.1) = 1; |d| = 0.99 -> 2; |d| = 0 -> 0. Mean over 4 pixels: (1 + 2) / 4 = 0.75.
    frames, recon = _frame({(0, 0): 0.9, (1, 1): 0.99}, 2, 2)
    assert recon_error(frames, recon).item() == pytest.approx(0.75)
    # Sign of the difference does not matter, channels are averaged: (1 + 0) / 2 = 0.5.
    f = torch.tensor([0.9, 0.0], dtype=torch.float64).view(1, 2, 1, 1, 1)
    assert recon_error(f, torch.zeros_like(f)).item() == pytest.approx(0.5)
    # A pixel off by 1 is clamped, not inf.
    frames, recon = _frame({(0, 0): 1.0}, 1, 1)
    assert torch.isfinite(recon_error(frames, recon)).all()


def test_patch_max_vs_mean():
    # One pixel of error 1 in 4x4: mean over pixels 1/16, max over 2x2 patch means 1/4.
    frames, recon = _frame({(1, 2): 0.9}, 4, 4)
    assert recon_error(frames, recon).item() == pytest.approx(1 / 16)
    assert recon_error(frames, recon, patch=2).item() == pytest.approx(1 / 4)


@pytest.mark.parametrize("corner", [(4, 4), (4, 0), (0, 4)])
def test_patch_covers_borders_with_full_patches(corner):
    # 5x5 with 2x2 patches: a corner pixel of error 1 lies in a full patch, mean 1/4 (not 1 from a 1x1 stub).
    frames, recon = _frame({corner: 0.9}, 5, 5)
    assert recon_error(frames, recon, patch=2).item() == pytest.approx(1 / 4)


def test_patch_max_with_a_stride_by_hand():
    """A 6x7 map, 4x4 patches every 2 pixels: rows start at 0, 2 and again at (6 - 4) % 2 = 0 back from the end;
    columns at 0, 2 and at 1, 3 (the flush-right grid). Ones on rows 2-5 of column 6 (only the patch at column 3
    reaches it): that patch's mean is 4/16; with patches every 4 pixels (tiles) the right-flush tile at
    column 3 still covers it."""
    maps = torch.zeros(1, 6, 7)
    maps[0, 2:, 6] = 1.0
    assert patch_max(maps, 4, 2).item() == pytest.approx(4 / 16)
    assert patch_max(maps, 4, 4).item() == pytest.approx(4 / 16)
    maps[0, 1, 1] = 8.0  # in the patches at rows 0 and columns 0 (and 1): 8/16 beats 4/16
    assert patch_max(maps, 4, 2).item() == pytest.approx(8 / 16)
    frames, recon = _frame({(1, 1): 0.9}, 6, 7)
    assert recon_error(frames, recon, patch=4, stride=2).item() == pytest.approx(1 / 16)


def test_mask_zeroes_background_before_pooling():
    # Error 1 at (0, 0) and error 2 at (1, 1); the mask keeps only (1, 1): mean 2/4, patch-2 max 2/4.
    frames, recon = _frame({(0, 0): 0.9, (1, 1): 0.99}, 2, 2)
    mask = torch.zeros(1, 1, 1, 2, 2, dtype=torch.bool)
    mask[..., 1, 1] = True
    assert recon_error(frames, recon, mask=mask).item() == pytest.approx(0.5)
    assert recon_error(frames, recon, patch=2, mask=mask).item() == pytest.approx(0.5)


def test_recon_error_shape_and_rejects_mismatch():
    x = torch.rand(2, 3, 4, 8, 8)
    assert recon_error(x, x.flip(0), patch=3).shape == (2, 4)
    with pytest.raises(ValueError):
        recon_error(x, x[:, :1])


def test_mog2_foreground_finds_moving_square():
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 120, (48, 64), dtype=np.uint8)
    frames = np.repeat(bg[None], 30, axis=0)
    for t in range(30):
        frames[t, 10:20, 2 * t:2 * t + 10] = 255
    mask = mog2_foreground(frames)
    assert mask.shape == frames.shape and mask.dtype == bool
    for t in (25, 29):
        square = np.zeros((48, 64), dtype=bool)
        square[10:20, 2 * t:2 * t + 10] = True
        assert mask[t][square].mean() > 0.9
        assert mask[t][~square].mean() < 0.1
    assert mog2_foreground(np.repeat(frames[..., None], 3, axis=-1)).shape == frames.shape


def test_frames_from_windows_overlapping_means():
    # 5 frames, T=3 windows at 0 and 2: frame 2 is in both -> (3 + 10) / 2.
    w = np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]])
    np.testing.assert_allclose(frames_from_windows(5, [0, 2], w), [1, 2, 6.5, 20, 30])
    # Window-level scalars spread over T frames.
    np.testing.assert_allclose(frames_from_windows(5, [0, 2], np.array([4.0, 8.0]), T=3), [4, 4, 6, 8, 8])


def test_frames_from_windows_rejects_uncovered_and_outside():
    with pytest.raises(ValueError, match="lie in no window"):
        frames_from_windows(6, [0, 3], np.ones((2, 2)))  # frames 2 and 5 uncovered
    with pytest.raises(ValueError, match="leave the video"):
        frames_from_windows(4, [0, 2], np.ones((2, 3)))
    with pytest.raises(ValueError, match="need the window length"):
        frames_from_windows(3, [0], np.ones(1))


def test_minmax_per_video_global_and_constant():
    x = np.array([1.0, 3.0, 2.0, 5.0, 5.0, 9.0])
    v = np.array(["a", "a", "a", "b", "b", "c"])
    # a: (x - 1) / 2; b constant -> 0; c a single frame -> 0.
    np.testing.assert_allclose(minmax(x, v), [0, 1, 0.5, 0, 0, 0])
    np.testing.assert_allclose(minmax(x), [0, 0.25, 0.125, 0.5, 0.5, 1])
    np.testing.assert_array_equal(minmax(np.full(3, 7.0)), 0)


def test_eq8_by_hand():
    # l1 = 3 - 1 = 2, l2 = 16 - 10 = 6: L = (2 a + 6 m) / 8 = [(2 + 60) / 8, (6 + 96) / 8].
    np.testing.assert_allclose(combine_nll([1.0, 3.0], [10.0, 16.0]), [7.75, 12.75])
    np.testing.assert_allclose(combine_nll(None, [1.0, 2.0]), [1, 2])
    np.testing.assert_allclose(combine_nll([3.0, 4.0], None), [3, 4])
    assert combine_nll(None, None) is None
    np.testing.assert_allclose(combine_nll([1.0, 1.0], [3.0, 3.0]), [2, 2])  # both constant: plain mean


def test_eq9_by_hand():
    r = np.array([1.0, 2.0, 3.0, 5.0, 5.0, 7.0])
    l = np.array([0.0, 10.0, 5.0, 2.0, 4.0, 3.0])
    v = np.array([0, 0, 0, 1, 1, 1])
    # Per video: norm(R) = [0, .5, 1 | 0, 0, 1], norm(L) = [0, 1, .5 | 0, 1, .5]; S = norm(R) + 2 norm(L).
    s = anomaly_score(r, l, v, ScoreConfig(lambda_L=2.0))
    np.testing.assert_allclose(s.score, [0, 2.5, 2, 0, 2, 2])
    np.testing.assert_allclose(s.r, [0, 0.5, 1, 0, 0, 1])
    # Global: norm(R) = (r - 1) / 6, norm(L) = l / 10.
    g = anomaly_score(r, l, v, ScoreConfig(lambda_L=2.0, normalise="global"))
    np.testing.assert_allclose(g.score, [0, 1 / 6 + 2, 2 / 6 + 1, 4 / 6 + 0.4, 4 / 6 + 0.8, 1 + 0.6])
    # lambda_L = 0 and no L both give norm(R) alone.
    np.testing.assert_allclose(anomaly_score(r, l, v, ScoreConfig(lambda_L=0.0)).score, s.r)
    only_r = anomaly_score(r, None, v, ScoreConfig())
    np.testing.assert_allclose(only_r.score, s.r)
    assert only_r.l is None

    # The local term: S = norm(R) + 2 norm(L) + 0.5 norm(local), only when lambda_local > 0.
    local = np.array([0.0, 0.0, 4.0, 1.0, 3.0, 2.0])  # per video: [0, 0, 1 | 0, 1, .5]
    with_local = anomaly_score(r, l, v, ScoreConfig(lambda_L=2.0, lambda_local=0.5), local)
    np.testing.assert_allclose(with_local.score, [0, 2.5, 2.5, 0, 2.5, 2.25])
    np.testing.assert_allclose(with_local.local, [0, 0, 1, 0, 1, 0.5])
    np.testing.assert_allclose(anomaly_score(r, l, v, ScoreConfig(lambda_L=2.0), local).score, s.score)


def test_smoothing_stays_inside_each_video():
    v = np.array(["a"] * 9 + ["b"] * 9)
    x = np.zeros(18)
    x[4] = 1.0  # an impulse in the middle of video a
    s = smooth_in_videos(x, v, 1.0)
    g = np.exp(-0.5 * np.arange(-4, 5) ** 2)  # scipy's Gaussian: truncated at 4 sigma, normalised to sum 1
    np.testing.assert_allclose(s[:9], g / g.sum())
    np.testing.assert_array_equal(s[9:], 0)  # video b never sees a's impulse
    np.testing.assert_array_equal(smooth_in_videos(x, v, 0.0), x)
    ramp = np.r_[np.full(9, 3.0), np.arange(9.0)]  # a constant stays; a line keeps its values away from the ends
    s = smooth_in_videos(ramp, v, 1.0)
    np.testing.assert_allclose(s[:9], 3.0)
    np.testing.assert_allclose(s[13:14], [4.0])
    assert s[9] > ramp[9]  # the end frame is repeated beyond the edge: the first frame rises towards its successors


def test_eq9_smooths_each_part_before_its_min_max():
    rng = np.random.default_rng(0)
    r, l, local = rng.random((3, 40))
    v = np.repeat([0, 1], 20)
    for normalise in ("video", "global"):
        cfg = ScoreConfig(lambda_L=2.0, lambda_local=0.5, smooth=2.0, normalise=normalise)
        s = anomaly_score(r, l, v, cfg, local)
        plain = anomaly_score(*(smooth_in_videos(t, v, 2.0) for t in (r, l)), v, ScoreConfig(lambda_L=2.0, lambda_local=0.5, normalise=normalise),
                              smooth_in_videos(local, v, 2.0))
        np.testing.assert_allclose(s.score, plain.score)
        np.testing.assert_allclose(s.local, plain.local)


def test_local_nll_by_hand():
    excess = np.zeros((2, 3, 4))
    excess[0, 0, 0] = 8.0  # frame 0: one hot position in a corner
    excess[1] = -1.0  # frame 1: below the training mean everywhere but a 2x2 block of 3s
    excess[1, 1:3, 2:4] = 3.0
    # 2x2 windows, stride 1: frame 0's best window holds the 8 alone -> 2; frame 1's is the block -> 3.
    np.testing.assert_allclose(local_nll(excess, 2), [2.0, 3.0])
    np.testing.assert_allclose(local_nll(excess, 1), [8.0, 3.0])  # the single worst position
    np.testing.assert_allclose(local_nll(excess, 9), [8 / 12, (4 * 3 - 8) / 12])  # clipped: the whole map


@pytest.mark.parametrize(
    "kwargs, field",
    [({"normalise": "scene"}, "score.normalise"), ({"background": "knn"}, "score.background"),
     ({"patch": -1}, "score.patch"), ({"lambda_L": -0.5}, "score.lambda_L"),
     ({"lambda_local": float("nan")}, "score.lambda_local"), ({"local_patch": 0}, "score.local_patch"),
     ({"smooth": -1.0}, "score.smooth")],
)
def test_config_validate_names_field(kwargs, field):
    ScoreConfig().validate()
    with pytest.raises(ConfigError, match=field):
        ScoreConfig(**kwargs).validate()
