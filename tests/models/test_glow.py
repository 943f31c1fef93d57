"""Glow layers and the multi-scale flow: exact inverses, logdets equal to autograd Jacobians, ActNorm's
data-dependent init, and the NLL of a fresh flow. float64 throughout, so tolerances can be tight."""
from __future__ import annotations

import math

import pytest
import torch

from vadcore.errors import ConfigError
from vadcore.models.glow import (
    ActNorm,
    AffineCoupling,
    FlowStep,
    Glow,
    GlowConfig,
    InvConv1x1,
    Split,
    Squeeze,
    bits_per_dim,
    nll_map,
    nll_per_dim,
)
from vadcore.models.hgad_prior import GaussianPrior

SMALL = GlowConfig(steps=2, levels=2, hidden=8)


@pytest.fixture(autouse=True)
def float64_seeded():
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(dtype)


def perturb(module: torch.nn.Module, scale: float = 0.1) -> None:
    """Move every parameter off its init (zero convs included), so no test is a test of the identity."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def jacobian_logdet(f, x: torch.Tensor) -> torch.Tensor:
    """log|det| of the full Jacobian of f at one sample x (1, ...), by autograd."""
    jac = torch.autograd.functional.jacobian(lambda v: f(v.view_as(x)).flatten(), x.flatten(), vectorize=True)
    return torch.linalg.slogdet(jac).logabsdet


def data(*shape: int) -> torch.Tensor:
    return 1.5 * torch.randn(*shape) + 0.3


LAYERS = {
    "actnorm": lambda: ActNorm(4),
    "invconv": lambda: InvConv1x1(4),
    "coupling": lambda: AffineCoupling(4, 8),
    "squeeze": lambda: Squeeze(),
    "step": lambda: FlowStep(4, 8),
}


@pytest.mark.parametrize("name", LAYERS)
def test_layer_inverts_and_logdet_is_jacobian(name):
    layer = LAYERS[name]()
    layer(data(16, 4, 4, 4))  # data-dependent init where there is one
    perturb(layer)
    x = data(3, 4, 4, 4)
    y, logdet = layer(x)
    assert logdet.shape == (3, *y.shape[2:])  # one log|det| per output position
    assert torch.allclose(layer.reverse(y), x, atol=1e-10)
    assert torch.allclose(jacobian_logdet(lambda v: layer(v)[0], x[:1]), logdet[0].sum(), atol=1e-8)


@pytest.mark.parametrize("learned", [True, False])
def test_split_inverts_and_scores_dropped_half(learned):
    split = Split(8, learned)
    perturb(split)
    x = data(3, 8, 2, 2)
    kept, dropped, logp = split(x)
    assert kept.shape == dropped.shape == (3, 4, 2, 2)
    assert torch.equal(split.reverse(kept, dropped), x)
    if learned:
        out = split.prior(kept)
        mean, std = out[:, 0::2], out[:, 1::2].exp()
    else:
        mean, std = torch.zeros_like(dropped), torch.ones_like(dropped)
    expected = torch.distributions.Normal(mean, std).log_prob(dropped).sum(1)  # per position (3, 2, 2)
    assert torch.allclose(logp, expected, atol=1e-10)
    assert split.reverse(kept).shape == x.shape  # dropped half sampled from its prior


def trained_like_glow(cfg: GlowConfig = SMALL, shape=(4, 8, 8)) -> Glow:
    flow = Glow(cfg, *shape)
    flow(data(16, *shape))  # ActNorm init
    perturb(flow, 0.05)
    return flow


@pytest.mark.parametrize("split_prior", [True, False])
def test_glow_inverts_and_shapes(split_prior):
    flow = trained_like_glow(GlowConfig(steps=2, levels=2, hidden=8, split_prior=split_prior))
    x = data(5, 4, 8, 8)
    out = flow(x)
    # (4, 8, 8) -> squeeze (16, 4, 4) -> split (8, 4, 4) + (8, 4, 4) -> squeeze (32, 2, 2) = D_top 128
    assert flow.input_dim == 256 and flow.latent_dim == 128
    assert out.z.shape == (5, 128) and [s.shape for s in out.splits] == [(5, 8, 4, 4)]
    assert out.logdet.shape == out.split_logp.shape == (5,) and out.jac_map.shape == (5, 2, 2)
    assert torch.allclose(flow.reverse(out.z, out.splits), x, atol=1e-10)
    assert flow.reverse(out.z).shape == x.shape  # split-off halves sampled


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_glow_logdet_is_jacobian_of_x_to_z_and_splits(levels):
    flow = trained_like_glow(GlowConfig(steps=2, levels=levels, hidden=8))

    def to_z_and_splits(v):
        out = flow(v)
        return torch.cat([out.z.flatten(), *(s.flatten() for s in out.splits)])

    x = data(1, 4, 8, 8)
    out = flow(x)
    assert len(out.splits) == levels - 1
    assert torch.allclose(jacobian_logdet(to_z_and_splits, x), out.logdet[0], atol=1e-8)
    if levels == 1:
        assert torch.equal(out.split_logp, torch.zeros(1))


@pytest.mark.parametrize("cfg", [SMALL, GlowConfig(steps=3, levels=3, hidden=8, split_prior=False)])
def test_fresh_glow_nll_of_standard_normal_is_analytic(cfg):
    """A fresh Glow is exactly volume preserving and norm preserving: 1x1 convs start as rotations (|det| = 1),
    couplings as the identity (scale sigmoid(0 + 2) / sigmoid(2) = 1), split priors as N(0, I), and ActNorm
    as the identity when its data init is off. So -log p(x) = |x|^2 / 2 + (D/2) log 2pi per sample, exactly;
    rescaling the batch to an empirical second moment of exactly 1 makes the mean 0.5 log(2 pi e) exactly."""
    flow = Glow(cfg, 4, 8, 8)
    for m in flow.modules():
        if isinstance(m, ActNorm):
            m.initialized.fill_(True)
    x = torch.randn(64, 4, 8, 8)
    x = x / x.pow(2).mean().sqrt()
    with torch.no_grad():
        nll = nll_per_dim(flow(x), GaussianPrior(flow.latent_dim), flow.input_dim)
    per_sample = 0.5 * x.flatten(1).pow(2).mean(1) + 0.5 * math.log(2 * math.pi)
    assert torch.allclose(nll, per_sample, atol=1e-12)
    assert abs(nll.mean().item() - 0.5 * math.log(2 * math.pi * math.e)) < 1e-12



@pytest.mark.parametrize("levels", [1, 2, 3])
def test_nll_map_averages_to_the_whole_nll(levels):
    flow = trained_like_glow(GlowConfig(steps=2, levels=levels, hidden=8))
    out = flow(data(3, 4, 8, 8))
    prior = GaussianPrior(flow.latent_dim)
    m = nll_map(out, prior, flow.input_dim)
    assert m.shape == (3, 8 >> levels, 8 >> levels)
    assert torch.allclose(m.mean((1, 2)), nll_per_dim(out, prior, flow.input_dim), atol=1e-12)
    assert torch.allclose(out.jac_map.sum((1, 2)), out.logdet + out.split_logp, atol=1e-12)


@pytest.mark.parametrize("levels", [1, 2])
def test_fresh_glow_nll_map_scores_each_input_block(levels):
    """A fresh flow maps each top position's input block by a rotation, so that position's NLL is the block's
    |x|^2 / 2 per dimension + log(2 pi) / 2: the map is local, and split-off halves land on their own block."""
    flow = Glow(GlowConfig(steps=2, levels=levels, hidden=8, split_prior=False), 4, 8, 8)
    for mod in flow.modules():
        if isinstance(mod, ActNorm):
            mod.initialized.fill_(True)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        m = nll_map(flow(x), GaussianPrior(flow.latent_dim), flow.input_dim)
    k = 2**levels  # a top position owns a k x k block of every input channel
    blocks = x.pow(2).unfold(2, k, k).unfold(3, k, k).sum((1, 4, 5))  # (2, 8/k, 8/k)
    assert torch.allclose(m, blocks / 2 / (4 * k * k) + 0.5 * math.log(2 * math.pi), atol=1e-12)

def test_fresh_glow_with_actnorm_init_on_standard_normal_is_near_analytic():
    """With data init on N(0, I) data every ActNorm is within sampling error of the identity."""
    flow = Glow(SMALL, 4, 8, 8)
    x = torch.randn(256, 4, 8, 8)
    with torch.no_grad():
        nll = nll_per_dim(flow(x), GaussianPrior(flow.latent_dim), flow.input_dim)
    assert abs(nll.mean().item() - 0.5 * math.log(2 * math.pi * math.e)) < 0.01
    assert torch.allclose(bits_per_dim(nll), nll / math.log(2))


def test_actnorm_init_standardises_the_first_batch():
    act = ActNorm(3)
    x = data(32, 3, 5, 5) * torch.tensor([1.0, 4.0, 0.2])[:, None, None]
    y, logdet = act(x)
    assert bool(act.initialized)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-12)
    assert torch.allclose(y.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-12)
    std = x.std(dim=(0, 2, 3), correction=0)
    assert torch.allclose(logdet, -std.log().sum().expand(32, 5, 5))


def test_actnorm_constant_channel_stays_finite():
    x = data(8, 3, 4, 4)
    x[:, 1] = 7.0
    act = ActNorm(3)
    y, logdet = act(x)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    assert torch.equal(y[:, 1], torch.zeros_like(y[:, 1]))  # centred, not scaled
    y2, _ = act(x + 0.1)  # a later deviation is not amplified by 1/eps
    assert torch.allclose(y2[:, 1], torch.full_like(y2[:, 1], 0.1))


def test_actnorm_state_dict_keeps_init():
    act = ActNorm(3)
    act(data(16, 3, 4, 4))
    loaded = ActNorm(3)
    loaded.load_state_dict(act.state_dict())
    other = 5 * data(16, 3, 4, 4) - 2  # different statistics: a re-init would change the outputs
    assert torch.equal(loaded(other)[0], act(other)[0])
    assert torch.equal(loaded.log_scale, act.log_scale)

    fresh = ActNorm(3)
    fresh(other)
    fresh.load_state_dict(ActNorm(3).state_dict())  # an uninitialised state initialises on the next batch
    y, _ = fresh(other)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-12)


def test_check_input_rejects_too_many_levels():
    with pytest.raises(ConfigError, match=r"flow\.glow\.levels=3 too deep: latent 20x32 must be divisible by 2\*\*L=8"):
        GlowConfig(levels=3).check_input(2, 20, 32)
    with pytest.raises(ConfigError, match="divisible"):
        Glow(GlowConfig(levels=2, steps=1, hidden=4), 2, 6, 8)
    GlowConfig(levels=1).check_input(2, 30, 30)
    with pytest.raises(ConfigError, match=r"flow\.glow\.steps=0"):
        GlowConfig(steps=0).validate()
