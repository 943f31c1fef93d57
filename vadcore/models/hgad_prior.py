"""Priors p(z) for the flows: N(0, I) (ITAE) or HGAD's hierarchical Gaussian mixture (ECCV 2024).

Both share one interface so the trainer never special-cases:

    prior = build_prior(cfg, dim=glow.latent_dim, num_classes=K)
    loss, parts = prior.loss(out.z, out.logdet + out.split_logp, y, progress)   # training objective
    score = nll_per_dim(out, prior, glow.input_dim)                               # uses prior.log_prob

``jac`` is every log-density term the flow itself contributes (logdet and the split-off halves' priors).
HGAD (formulas in DESIGN.md, "HGAD notes"): K classes (scenes or benchmarks) with a main centre mu_k each and
M intra-class centres c_km = mu_k + d_km (d_k0 = 0); class weights pi = softmax(phi), intra weights
w_k = softmax(phi_k); identity covariances. Every loss term is divided by D = dim(z), so a term's weight is
the number of NLL nats one of its nats is worth. Choices the paper leaves open: ``vadcore/models/README.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vadcore.errors import ConfigError

LOG_2PI = math.log(2 * math.pi)
CENTRE_DISTANCE = 5.0  # distance between the initial main centres (HGAD reference)


@dataclass(frozen=True)
class PriorConfig:
    """The flows' prior; HGAD fields are ignored by the Gaussian. Defaults: HGAD reference, see README."""

    kind: str = "gaussian"  # "gaussian" = N(0, I) (ITAE), "hgad" = hierarchical Gaussian mixture
    centres: int = 10  # M, intra-class centres per class, the main one included (HGAD reference: 10)
    lambda1: float = 1.0  # weight of L_g, the inter-class mixture NLL (reference: 1)
    lambda2: float = 1.0  # weight of L_mi; 1 = L_g + L_mi is the joint NLL -log p(x, y) / D (see README)
    label_smoothing: float = 0.02  # eps of the label-smoothed cross-entropy L_mi (reference: 0.02)
    stage_a_fraction: float = 0.08  # first fraction of training without L_intra (reference: 2 of 25 epochs)

    def validate(self) -> None:
        """Raise ConfigError naming the first field out of range."""
        if self.kind not in PRIORS:
            raise ConfigError(f"flow.prior.kind={self.kind!r} unknown; allowed: {', '.join(PRIORS)}")
        if self.centres < 1:
            raise ConfigError(f"flow.prior.centres={self.centres} must be >= 1")
        for name in ("lambda1", "lambda2"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"flow.prior.{name}={getattr(self, name)} must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"flow.prior.label_smoothing={self.label_smoothing} must be in [0, 1)")
        if not 0 <= self.stage_a_fraction <= 1:
            raise ConfigError(f"flow.prior.stage_a_fraction={self.stage_a_fraction} must be in [0, 1]")


def _wide(t: Tensor) -> Tensor:
    """`t` in at least float32: squared distances of D ~ 10^3 coordinates are meaningless in 16-bit floats."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def squared_distances(z: Tensor, centres: Tensor) -> Tensor:
    """||z_i - c_j||^2, (B, D) x (N, D) -> (B, N), via |z|^2 - 2 z.c + |c|^2 (memory B*N, not B*N*D).

    Autocast is off and inputs are widened: the expansion cancels terms of size ~D, so bf16 would swamp the
    distance differences the mixture weights depend on.
    """
    with torch.autocast(z.device.type, enabled=False):
        z, centres = _wide(z), _wide(centres)
        d = (z * z).sum(1, keepdim=True) - 2 * z @ centres.T + (centres * centres).sum(1)
    return d.clamp_min(0)


class GaussianPrior(nn.Module):
    """N(0, I) on z (ITAE, Glow): loss = mean over the batch of -(log p(z) + jac) / D."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) in nats, (B, D) -> (B,)."""
        z = _wide(z)
        return -0.5 * (z * z).sum(1) - 0.5 * self.dim * LOG_2PI

    def log_prob_map(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) per spatial position, (B, C, H, W) -> (B, H, W); sums to ``log_prob`` of the flat z."""
        z = _wide(z)
        return -0.5 * (z * z).sum(1) - 0.5 * z.shape[1] * LOG_2PI

    def loss(self, z: Tensor, jac: Tensor, y: Tensor, progress: float) -> tuple[Tensor, dict[str, Tensor]]:
        """-log p(x) / D with D = dim(z) (= nll_per_dim when L = 1); `y` and `progress` are unused."""
        nll = -(self.log_prob(z) + jac).mean() / self.dim
        return nll, {"nll": nll.detach()}


class HGADPrior(nn.Module):
    """HGAD's hierarchical Gaussian mixture (DESIGN.md "HGAD notes"), trained with class labels y.

    Stage A (progress < stage_a_fraction): lambda1 L_g + lambda2 L_mi + L_e, shaping the K main centres;
    stage B adds L_intra, fitting the M intra-class centres. All four terms are computed in both stages (so
    every parameter gets a gradient, zero where unused, and the logged parts keep the same keys); L_intra
    is weighted 0 in stage A. ``log_prob`` is the class-agnostic density under the full mixture.
    """

    def __init__(self, cfg: PriorConfig, dim: int, num_classes: int):
        super().__init__()
        K, M = num_classes, cfg.centres
        if K < 1:
            raise ConfigError(f"flow.prior.kind='hgad' needs >= 1 class (got num_classes={K})")
        if dim < K:
            raise ConfigError(
                f"flow.prior.kind='hgad' needs latent dim D={dim} >= classes K={K} for orthogonal class centres"
            )
        self.cfg, self.dim, self.num_classes = cfg, dim, K
        # mu_k = s on coordinates k, k+K, k+2K, ... (D//K of them): orthogonal, |mu_j - mu_k| = 5 exactly
        mu = torch.zeros(K, dim)
        per_class = dim // K
        eye = torch.eye(K) * CENTRE_DISTANCE / math.sqrt(2 * per_class)
        mu[:, : K * per_class] = eye.repeat(1, per_class)  # (K, K) -> (K, K*per_class): blocks of K coordinates
        self.mu = nn.Parameter(mu)
        self.offsets = nn.Parameter(torch.randn(K, M - 1, dim))  # d_km, m = 1..M-1, N(0, I)
        self.class_logits = nn.Parameter(torch.zeros(K))  # phi: pi = softmax(phi)
        self.intra_logits = nn.Parameter(torch.zeros(K, M))  # phi_k: w_k = softmax(phi_k)

    def centres(self) -> Tensor:
        """c_km (K, M, D): c_k0 = mu_k, c_km = mu_k + d_km, with mu detached (only L_g, L_e, L_mi move mu)."""
        mu = self.mu.detach()[:, None]  # (K, 1, D)
        return torch.cat([mu, mu + self.offsets], dim=1)

    def _intra_terms(self, z: Tensor) -> Tensor:
        """log w_km - e_km / 2, (B, K, M), e_km = ||z - c_km||^2."""
        K, M = self.intra_logits.shape
        e = squared_distances(z, self.centres().reshape(K * M, -1)).view(-1, K, M)  # (B, K*M) -> (B, K, M)
        return F.log_softmax(_wide(self.intra_logits), dim=1) - e / 2

    def log_prob(self, z: Tensor) -> Tensor:
        """log sum_{k,m} pi_k w_km N(z; c_km, I) in nats, (B, D) -> (B,): the class-agnostic test density."""
        log_pi = F.log_softmax(_wide(self.class_logits), dim=0)[:, None]  # (K, 1)
        terms = (log_pi + self._intra_terms(z)).flatten(1)  # (B, K, M) -> (B, K*M)
        return torch.logsumexp(terms, dim=1) - 0.5 * self.dim * LOG_2PI

    def loss(self, z: Tensor, jac: Tensor, y: Tensor, progress: float) -> tuple[Tensor, dict[str, Tensor]]:
        """The staged HGAD objective; `y` (B,) class indices, `progress` in [0, 1] the fraction of training done.

        L_g and L_intra include the (D/2) log 2pi constant, so both are NLLs per dimension comparable to the
        Gaussian prior's loss (for K = M = 1 they equal it for z - mu_1).
        """
        cfg, D = self.cfg, self.dim
        jac, const = _wide(jac), 0.5 * D * LOG_2PI
        half_d = squared_distances(z, self.mu) / 2  # (B, K) d_k / 2
        log_pi = F.log_softmax(_wide(self.class_logits), dim=0)  # (K,)
        L_g = -(torch.logsumexp(log_pi - half_d, dim=1) - const + jac).mean() / D
        posterior = F.softmax(-half_d, dim=1)  # (B, K)
        L_e = -(posterior * F.log_softmax(-half_d, dim=1)).sum(1).mean() / D
        L_mi = F.cross_entropy(log_pi.detach() - half_d, y, label_smoothing=cfg.label_smoothing) / D
        own = self._intra_terms(z)[torch.arange(z.shape[0], device=z.device), y]  # (B, K, M) -> (B, M): class y
        L_intra = -(torch.logsumexp(own, dim=1) - const + jac).mean() / D
        stage_b = float(progress >= cfg.stage_a_fraction)
        loss = cfg.lambda1 * L_g + cfg.lambda2 * L_mi + L_e + stage_b * L_intra
        parts = {"L_g": L_g, "L_mi": L_mi, "L_e": L_e, "L_intra": L_intra}
        return loss, {name: value.detach() for name, value in parts.items()}


PRIORS: dict[str, Callable[[PriorConfig, int, int], nn.Module]] = {
    "gaussian": lambda cfg, dim, num_classes: GaussianPrior(dim),
    "hgad": HGADPrior,
}


def build_prior(cfg: PriorConfig, dim: int, num_classes: int) -> nn.Module:
    """The prior named by ``cfg.kind`` for a latent of ``dim`` dimensions and ``num_classes`` classes."""
    if cfg.kind not in PRIORS:
        raise ConfigError(f"flow.prior.kind={cfg.kind!r} unknown; allowed: {', '.join(PRIORS)}")
    cfg.validate()
    return PRIORS[cfg.kind](cfg, dim, num_classes)
