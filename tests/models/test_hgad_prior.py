"""Priors: the Gaussian, HGAD's losses and density (DESIGN.md "HGAD notes"), its per-position form (a sample
per top-latent position, with an NLL map), and a toy where the mixture prior must beat N(0, I) on held-out NLL."""
from __future__ import annotations

import pytest
import torch

from vadcore.errors import ConfigError
from vadcore.models.glow import Glow, GlowConfig, nll_map, nll_per_dim
from vadcore.models.hgad_prior import PRIORS, GaussianPrior, HGADPositionPrior, HGADPrior, PriorConfig, build_prior

HGAD = PriorConfig(kind="hgad")
POSITION = PriorConfig(kind="hgad_position")


def perturbed(prior: HGADPrior) -> HGADPrior:
    """The prior in float64 with every centre and logit moved off its init, so no test is a test of the init."""
    prior = prior.double()
    with torch.no_grad():
        for p in (prior.mu, prior.offsets, prior.class_logits, prior.intra_logits):
            p.add_(0.5 * torch.randn_like(p))
    return prior


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def test_gaussian_prior_log_prob_and_loss():
    prior = GaussianPrior(5)
    z, jac = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    assert torch.allclose(prior.log_prob(z), expected, atol=1e-12)
    loss, parts = prior.loss(z, jac, torch.zeros(7, dtype=torch.long), 0.5)
    assert torch.allclose(loss, -(expected + jac).mean() / 5)
    assert set(parts) == {"nll"}


def test_hgad_one_class_one_centre_is_a_shifted_gaussian():
    """K = M = 1: log_prob is N(z; mu_1, I); L_e = 0 (one posterior class) and L_mi = 0 (the smoothed target
    of a single class is 1), so stage A is exactly the Gaussian NLL of z - mu_1 and stage B adds L_intra = L_g."""
    D = 6
    prior = HGADPrior(PriorConfig(kind="hgad", centres=1), D, 1).double()
    with torch.no_grad():
        prior.mu.add_(torch.randn_like(prior.mu))
        prior.class_logits.add_(0.7)
    z, jac = torch.randn(9, D, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    y = torch.zeros(9, dtype=torch.long)
    gauss = GaussianPrior(D)
    shifted = z - prior.mu[0].detach()
    assert torch.allclose(prior.log_prob(z), gauss.log_prob(shifted), atol=1e-12)
    nll = gauss.loss(shifted, jac, y, 0.0)[0]
    loss_a, parts = prior.loss(z, jac, y, progress=0.0)
    assert parts["L_e"] == 0 and parts["L_mi"] == 0
    assert torch.allclose(loss_a, nll, atol=1e-12)
    loss_b, parts = prior.loss(z, jac, y, progress=0.5)
    assert torch.allclose(parts["L_intra"], parts["L_g"], atol=1e-12)
    assert torch.allclose(loss_b, 2 * nll, atol=1e-12)


def test_hgad_centres_start_orthogonal_and_five_apart():
    prior = HGADPrior(HGAD, 20, 3)
    mu = prior.mu.detach()
    gram = mu @ mu.T
    assert torch.allclose(gram - torch.diag(gram.diagonal()), torch.zeros(3, 3))
    assert torch.allclose(torch.pdist(mu), torch.full((3,), 5.0))
    assert prior.centres().shape == (3, 10, 20)
    assert torch.equal(prior.centres()[:, 0], mu)


def test_hgad_gradients_follow_the_design():
    """mu gets no gradient through the intra-class centres; pi gets none through L_mi."""
    prior = HGADPrior(HGAD, 8, 3)
    prior.centres().sum().backward()
    assert prior.mu.grad is None and prior.offsets.grad is not None

    prior = HGADPrior(PriorConfig(kind="hgad", lambda1=0.0), 8, 3)
    z, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    loss, _ = prior.loss(z, torch.zeros(16), y, progress=0.0)  # stage A, no L_g: only L_mi and L_e
    loss.backward()
    assert torch.equal(prior.class_logits.grad, torch.zeros(3))
    assert prior.mu.grad.abs().sum() > 0


def test_hgad_stages():
    cfg = PriorConfig(kind="hgad", lambda1=0.5, lambda2=3.0, stage_a_fraction=0.25)
    prior = HGADPrior(cfg, 8, 3)
    z, jac, y = torch.randn(16, 8), torch.randn(16), torch.randint(0, 3, (16,))
    for progress, stage_b in ((0.0, 0), (0.249, 0), (0.25, 1), (1.0, 1)):
        loss, p = prior.loss(z, jac, y, progress)
        expected = 0.5 * p["L_g"] + 3.0 * p["L_mi"] + p["L_e"] + stage_b * p["L_intra"]
        assert torch.allclose(loss.detach(), expected)


def test_hgad_log_prob_is_a_normalised_density():
    """Integrate exp(log_prob) over a 2-D grid: the class-agnostic mixture must integrate to 1."""
    prior = HGADPrior(PriorConfig(kind="hgad", centres=3), 2, 2).double()
    with torch.no_grad():
        for p in (prior.mu, prior.class_logits, prior.intra_logits):
            p.add_(torch.randn_like(p))
    step = 0.05
    axis = torch.arange(-12, 12, step, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # (N, 2)
    mass = torch.exp(prior.log_prob(grid)).sum() * step**2
    assert abs(mass.item() - 1) < 1e-6


def test_build_prior_and_validation():
    assert isinstance(build_prior(PriorConfig(), (4, 1, 1), 3), GaussianPrior)
    assert type(build_prior(HGAD, (4, 1, 1), 3)) is HGADPrior
    assert isinstance(build_prior(POSITION, (4, 2, 2), 3), HGADPositionPrior)
    with pytest.raises(ConfigError, match="flow.prior.kind='normal' unknown; allowed: gaussian, hgad, hgad_position"):
        build_prior(PriorConfig(kind="normal"), (4, 1, 1), 3)
    with pytest.raises(ConfigError, match=r"latent dim D=2 >= classes K=3"):
        build_prior(HGAD, (2, 1, 1), 3)
    build_prior(HGAD, (2, 2, 2), 3)  # D = 8 >= K: the whole-z mixture fits, the per-position one does not
    with pytest.raises(ConfigError, match=r"flow.prior.kind='hgad_position' needs top-level channels C=2 >= classes K=3"):
        build_prior(POSITION, (2, 2, 2), 3)
    for bad in (dict(centres=0), dict(lambda2=-1.0), dict(label_smoothing=1.0), dict(stage_a_fraction=1.5)):
        field = next(iter(bad))
        with pytest.raises(ConfigError, match=f"flow.prior.{field}="):
            PriorConfig(kind="hgad", **bad).validate()


def blobs(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes, Gaussian blobs (std 0.5) 6 apart on a 2-D plane, plus 2 dims of the same noise.

    Four dims rather than two: the orthogonal HGAD centres need D >= K, and Glow's squeeze a 2x2 grid.
    """
    centres = torch.tensor([[0.0, 0.0, 0, 0], [6.0, 0.0, 0, 0], [3.0, 5.2, 0, 0]])
    y = torch.randint(0, 3, (n,), generator=gen)
    x = centres[y] + 0.5 * torch.randn(n, 4, generator=gen)
    return x.view(n, 1, 2, 2), y  # (n, 4) -> (n, 1, 2, 2)


def train_toy(kind: str, seed: int = 0, steps: int = 300) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NLLs (nats/dim) of held-out normal samples, of far-away points and of points between the blobs, after
    `steps` Adam steps."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(1 + seed)
    (x, y), (x_test, _) = blobs(2000, gen), blobs(1000, gen)
    flow = Glow(GlowConfig(steps=2, levels=1, hidden=16), 1, 2, 2)
    prior = build_prior(PriorConfig(kind=kind), flow.top_shape, 3)
    opt = torch.optim.Adam([*flow.parameters(), *prior.parameters()], lr=1e-2)
    for step in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=gen)
        out = flow(x[idx])
        loss, _ = prior.loss(out.z, out.logdet + out.split_logp, y[idx], step / steps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    far = torch.tensor([[3.0, -5.0, 0, 0], [-6.0, -6.0, 0, 0], [3.0, 1.7, 6.0, 0]]).view(-1, 1, 2, 2)
    between = torch.tensor([[3.0, 1.73, 0, 0], [3.0, 0.0, 0, 0]]).view(-1, 1, 2, 2)  # centroid, a midpoint
    with torch.no_grad():
        return tuple(nll_per_dim(flow(v), prior, flow.input_dim) for v in (x_test, far, between))


def test_toy_hgad_beats_gaussian_and_flags_unseen_points():
    gauss_test, _, _ = train_toy("gaussian")
    hgad_test, hgad_far, hgad_between = train_toy("hgad")
    assert hgad_test.mean() < gauss_test.mean()
    assert (hgad_far > hgad_test.max()).all()
    assert (hgad_between > torch.quantile(hgad_test, 0.95)).all()


# ------------------------------------------------------------------------------------- per-position HGAD


def test_per_position_flag_says_which_priors_have_a_map():
    """`PriorConfig.per_position` (what the config checks) agrees with the modules (what FlowModel.has_map reads)."""
    for kind in PRIORS:
        prior = build_prior(PriorConfig(kind=kind), (4, 2, 2), 2)
        assert PriorConfig(kind=kind).per_position == hasattr(prior, "log_prob_map"), kind
    assert [kind for kind in PRIORS if PriorConfig(kind=kind).per_position] == ["gaussian", "hgad_position"]


def test_hgad_position_is_the_mixture_of_each_position():
    """With the same centres and weights, the per-position prior of z (B, C, H, W) is the whole-z mixture of
    dimension C applied to the B*H*W position vectors: its map is their log-densities, its log_prob their sum
    per window, and its loss and every part equal the whole-z loss of the positions as samples, each carrying
    its window's class and 1/(H*W) of its window's jac (both losses divide a window's sum by its dimension)."""
    C, H, W, B, K = 4, 2, 3, 5, 3
    cfg = PriorConfig(kind="hgad_position", centres=3, lambda1=0.7, lambda2=2.0, stage_a_fraction=0.5)
    prior = perturbed(HGADPositionPrior(cfg, (C, H, W), K))
    whole = HGADPrior(PriorConfig(kind="hgad", centres=3, lambda1=0.7, lambda2=2.0, stage_a_fraction=0.5), C, K).double()
    whole.load_state_dict(prior.state_dict())
    z, jac, y = torch.randn(B, C, H, W, dtype=torch.float64), torch.randn(B, dtype=torch.float64), torch.randint(0, K, (B,))
    positions = z.permute(0, 2, 3, 1).reshape(-1, C)  # (B*H*W, C), rows (b, h, w) in order
    expected = whole.log_prob(positions).view(B, H, W)
    assert torch.allclose(prior.log_prob_map(z), expected, atol=1e-12)
    assert torch.allclose(prior.log_prob(z.flatten(1)), expected.sum((1, 2)), atol=1e-12)
    for progress in (0.0, 1.0):  # stage A and stage B
        loss, parts = prior.loss(z.flatten(1), jac, y, progress)
        loss_w, parts_w = whole.loss(positions, jac.repeat_interleave(H * W) / (H * W), y.repeat_interleave(H * W), progress)
        assert torch.allclose(loss, loss_w, atol=1e-12)
        for name in parts:
            assert torch.allclose(parts[name], parts_w[name], atol=1e-12), name


@pytest.mark.parametrize("shape, classes", [((2, 1, 1), 2), ((1, 2, 1), 1)])
def test_hgad_position_density_integrates_to_one(shape, classes):
    """Integrate exp(log_prob) over a 2-D grid: one position of 2 channels (the mixture of R^2), and two
    positions of 1 channel (the product of two 1-D mixtures: log p(z) sums over positions)."""
    prior = perturbed(HGADPositionPrior(PriorConfig(kind="hgad_position", centres=3), shape, classes))
    step = 0.05
    axis = torch.arange(-12, 12, step, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # (N, 2) = (N, D)
    mass = torch.exp(prior.log_prob(grid)).sum() * step**2
    assert abs(mass.item() - 1) < 1e-6


@pytest.mark.parametrize("levels", [1, 2])
def test_hgad_position_nll_map_averages_to_the_whole_nll(levels):
    """The flow's exact NLL map with this prior (Glow's multi-level z: the top level's z and the split-off
    halves' densities in jac_map) has the whole-window NLL as its mean, as for N(0, I)."""
    torch.manual_seed(0)
    flow = Glow(GlowConfig(steps=2, levels=levels, hidden=8), 4, 8, 8).double()
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    flow(x)  # ActNorm init
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    prior = perturbed(build_prior(POSITION, flow.top_shape, 3))
    out = flow(x)
    m = nll_map(out, prior, flow.input_dim)
    assert m.shape == (3, 8 >> levels, 8 >> levels)
    assert torch.allclose(m.mean((1, 2)), nll_per_dim(out, prior, flow.input_dim), atol=1e-12)


def test_hgad_position_classes_condition_the_loss_and_every_gradient_is_finite():
    """Windows whose every position sits at class k's main centre: L_mi and L_intra are lower with label k
    than with another label, and the loss gives every parameter a finite gradient (stage B)."""
    C, H, W, K = 6, 2, 2, 3
    prior = HGADPositionPrior(PriorConfig(kind="hgad_position", centres=4), (C, H, W), K)
    k = torch.tensor([0, 1, 2, 1])
    z = prior.mu.detach()[k][:, :, None, None].expand(-1, C, H, W) + 0.1 * torch.randn(4, C, H, W)  # (4, C, H, W)
    jac = torch.zeros(4)
    _, right = prior.loss(z.flatten(1), jac, k, 1.0)
    _, wrong = prior.loss(z.flatten(1), jac, (k + 1) % K, 1.0)
    assert right["L_mi"] < wrong["L_mi"] and right["L_intra"] < wrong["L_intra"]
    assert torch.equal(right["L_g"], wrong["L_g"]) and torch.equal(right["L_e"], wrong["L_e"])  # class-free terms
    loss, _ = prior.loss(z.flatten(1).requires_grad_(), jac, k, 1.0)
    loss.backward()
    for name, p in prior.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
