"""Priors: the Gaussian, HGAD's losses and density (DESIGN.md "HGAD notes"), and a toy where the mixture prior
must beat N(0, I) on held-out NLL."""
from __future__ import annotations

import pytest
import torch

from vadcore.errors import ConfigError
from vadcore.models.glow import Glow, GlowConfig, nll_per_dim
from vadcore.models.hgad_prior import GaussianPrior, HGADPrior, PriorConfig, build_prior

HGAD = PriorConfig(kind="hgad")


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
    assert isinstance(build_prior(PriorConfig(), 4, 3), GaussianPrior)
    assert isinstance(build_prior(HGAD, 4, 3), HGADPrior)
    with pytest.raises(ConfigError, match="flow.prior.kind='normal' unknown; allowed: gaussian, hgad"):
        build_prior(PriorConfig(kind="normal"), 4, 3)
    with pytest.raises(ConfigError, match=r"latent dim D=2 >= classes K=3"):
        build_prior(HGAD, 2, 3)
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
    prior = build_prior(PriorConfig(kind=kind), flow.latent_dim, 3)
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
