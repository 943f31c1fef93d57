"""ITAE architecture: Table 1 shapes, the one-path baseline, config validation, channel pooling, trainability."""

import pytest
import torch

from vadcore.errors import ConfigError
from vadcore.models.itae import ITAE, ITAEConfig, count_parameters, layer_shapes, pool_channels
from vadcore.models.losses import LossConfig, reconstruction_loss

TINY = ITAEConfig(width=1 / 16, frames=8, tau=2)  # app (6, 8, 16, 16), motion (1, 1, 2, 2) channels


def test_paper_model_matches_table1():
    shapes = dict(layer_shapes(ITAE(), (1, 3, 16, 256, 256)))
    table1 = {
        "app.conv1": (96, 4, 128, 128),
        "app.conv2": (128, 4, 64, 64),
        "app.conv3": (256, 4, 32, 32),
        "app.conv4": (256, 4, 32, 32),
        "mot.conv1": (12, 16, 128, 128),
        "mot.conv2": (16, 16, 64, 64),
        "mot.conv3": (32, 16, 32, 32),
        "mot.conv4": (32, 16, 32, 32),
        "decoder.deconv1": (256, 4, 32, 32),
        "decoder.deconv2": (128, 8, 64, 64),
        "decoder.deconv3": (96, 16, 128, 128),
        "decoder.deconv4": (3, 16, 256, 256),
    }
    for name, shape in table1.items():
        assert shapes[name] == (1, *shape), name
    # SlowFast laterals: 2 x motion channels at the appearance frame rate
    assert shapes["lateral.conv1"] == (1, 24, 4, 128, 128)
    assert shapes["fuse"] == (1, 64, 4, 32, 32)


def test_paper_model_parameter_count():
    assert count_parameters(ITAE()) == 6_970_463  # the number recorded in vadcore/models/README.md


def test_layer_shapes_agree_with_a_real_forward():
    model = ITAE(TINY).eval()
    x = torch.rand(2, 3, 8, 32, 32)
    with torch.no_grad():
        out = model(x)
    shapes = dict(layer_shapes(model, x.shape))
    assert out.recon.shape == x.shape == shapes["decoder.deconv4"]
    assert out.app.shape == shapes["app.conv4"] == (2, 16, 4, 4, 4)
    assert out.mot.shape == shapes["mot.conv4"] == (2, 2, 8, 4, 4)
    assert 0 <= out.recon.min() and out.recon.max() <= 1


def test_one_path_model_has_no_motion_path():
    one = ITAE(ITAEConfig(paths="app", width=1 / 16, frames=8, tau=2))
    out = one(torch.rand(1, 3, 8, 32, 32))
    assert out.mot is None and out.recon.shape == (1, 3, 8, 32, 32)
    names = [n for n, _ in one.named_parameters()]
    assert names and all(n.startswith(("app.", "decoder.")) for n in names)
    assert count_parameters(one) < count_parameters(ITAE(TINY))


def test_appearance_path_only_sees_every_tau_th_frame():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 8, 32, 32)
    y = x.clone()
    y[:, :, 1] = 1 - y[:, :, 1]  # frame 1 is skipped by the appearance path (tau = 2)
    with torch.no_grad():
        one = ITAE(ITAEConfig(paths="app", width=1 / 16, frames=8, tau=2)).eval()
        assert torch.equal(one(x).recon, one(y).recon)
        two = ITAE(TINY).eval()
        assert not torch.allclose(two(x).mot, two(y).mot)
        assert not torch.allclose(two(x).app, two(y).app)  # motion reaches the appearance path via laterals


@pytest.mark.parametrize("lateral", [True, False])
def test_lateral_switch_controls_motion_to_appearance_flow(lateral):
    model = ITAE(ITAEConfig(width=1 / 16, frames=8, tau=2, lateral=lateral))
    out = model(torch.rand(1, 3, 8, 32, 32))
    grad = torch.autograd.grad(out.app.sum(), model.mot["conv1"][0].weight, allow_unused=True)[0]
    assert (grad is not None and grad.abs().sum() > 0) == lateral
    assert model.fuse is not None  # the decoder always reads both final features


def test_ped2_strides_give_a_quarter_size_latent():
    cfg = ITAEConfig(in_channels=1, spatial_strides=(2, 2, 1, 1))
    assert cfg.latent_size(240, 360) == (60, 90)
    shapes = dict(layer_shapes(ITAE(cfg), (1, 1, 16, 240, 360)))
    assert shapes["app.conv4"] == (1, 256, 4, 60, 90)
    assert shapes["mot.conv4"] == (1, 32, 16, 60, 90)
    assert shapes["decoder.deconv4"] == (1, 1, 16, 240, 360)


def test_latent_size_rejects_indivisible_frames():
    with pytest.raises(ConfigError, match=r"100x360 must be divisible by 8.*spatial_strides"):
        ITAEConfig().latent_size(100, 360)


@pytest.mark.parametrize(
    "tau, strides", [(1, (1, 1, 1, 1)), (2, (1, 2, 1, 1)), (4, (1, 2, 2, 1)), (8, (1, 2, 2, 2)), (16, (2, 2, 2, 2))]
)
def test_decoder_upsamples_time_back_to_t(tau, strides):
    cfg = ITAEConfig(tau=tau, width=1 / 16)
    assert tuple(t for t, _ in cfg.decoder_strides) == strides
    assert dict(layer_shapes(ITAE(cfg), (1, 3, 16, 32, 32)))["decoder.deconv4"] == (1, 3, 16, 32, 32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tau": 3}, r"itae.tau=3 must divide itae.frames=16"),
        ({"frames": 12, "tau": 6}, r"itae.tau=6 must be a power of 2"),
        ({"app_channels": (96, 128, 256)}, r"itae.app_channels=\(96, 128, 256\) must have 4 entries"),
        ({"spatial_strides": (2, 2, 3, 1)}, r"itae.spatial_strides=.* must all be 1 or 2"),
        ({"mot_temporal_kernels": (5, 3, 2, 3)}, r"itae.mot_temporal_kernels=.* must all be odd"),
        ({"paths": "slowfast"}, r"itae.paths='slowfast' must be one of 'app', 'app\+mot'"),
        ({"width": 0}, r"itae.width=0 must be > 0"),
        ({"motion_ratio": -0.5}, r"itae.motion_ratio=-0.5 must be > 0"),
    ],
)
def test_validate_names_field_rule_and_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ITAE(ITAEConfig(**kwargs))


def test_forward_rejects_input_that_disagrees_with_the_config():
    with pytest.raises(ConfigError, match=r"itae.frames=8"):
        ITAE(TINY)(torch.rand(1, 3, 16, 32, 32))


def test_pool_channels_hand_example():
    feat = torch.tensor([[1.0, 4.0], [3.0, -2.0]]).view(1, 2, 2, 1, 1)  # (B=1, C=2, t=2, 1, 1)
    # max over C: t0 = 3, t1 = 4; mean over C: t0 = 2, t1 = 1
    assert torch.equal(pool_channels(feat), torch.tensor([3.0, 4.0, 2.0, 1.0]).view(1, 4, 1, 1))
    assert pool_channels(torch.rand(2, 32, 16, 5, 7)).shape == (2, 32, 5, 7)


def test_count_parameters():
    assert count_parameters(torch.nn.Linear(3, 2)) == 8


def _moving_square_clip() -> torch.Tensor:
    """(2, 3, 8, 32, 32): a bright square moving right over a smooth background."""
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    x = torch.zeros(2, 3, 8, 32, 32)
    for b in range(2):
        for t in range(8):
            square = ((xx >= 4 + 2 * t + b) & (xx < 12 + 2 * t + b) & (yy >= 10) & (yy < 18)).float()
            x[b, :, t] = (0.3 + 0.2 * torch.sin(xx / 5.0 + b)) * (1 - square) + 0.9 * square
    return x


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model, x = ITAE(TINY), _moving_square_clip()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, _ = reconstruction_loss(x, model(x).recon, LossConfig())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
