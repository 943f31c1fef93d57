"""Priors p(z) for the flows: N(0, I) (ITAE) or HGAD's hierarchical Gaussian mixture (ECCV 2024).

All share one interface so the trainer never special-cases:

    prior = build_prior(cfg, shape=glow.top_shape, num_classes=K)
    loss, parts = prior.loss(out.z, out.logdet + out.split_logp, y, progress)   # training objective
    score = nll_per_dim(out, prior, glow.input_dim)                               # uses prior.log_prob
    nll = nll_map(out, prior, glow.input_dim)          # priors that factorise over positions: log_prob_map

``jac`` is every log-density term the flow itself contributes (logdet and the split-off halves' priors).
HGAD (formulas in DESIGN.md, "HGAD notes"): K classes (scenes or benchmarks) with a main centre mu_k each and
M intra-class centres c_km = mu_k + d_km (d_k0 = 0); class weights pi = softmax(phi), intra weights
w_k = softmax(phi_k); identity covariances. A *sample* of the mixture is the whole top latent z (``hgad``,
one per window, as DESIGN.md says) or the C-vector at each of its H*W positions (``hgad_position``, as the
HGAD reference, whose samples are a backbone's feature vectors). Every loss term is a window's sum over its
samples divided by D = dim(z), so a term's weight is the number of NLL nats one of its nats is worth.
Choices the paper leaves open: ``vadcore/models/README.md``.
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
Shape = tuple[int, int, int]  # (C, H, W) of the flow's top latent z


@dataclass(frozen=True)
class PriorConfig:
    """The flows' prior; HGAD fields are ignored by the Gaussian. Defaults: HGAD reference, see README."""

    # "gaussian" = N(0, I) (ITAE); "hgad" = hierarchical Gaussian mixture over the whole top latent (a window
    # is a sample); "hgad_position" = the same mixture over each position's C channels (the HGAD reference's
    # samples), log p(z) the sum over positions, so it has a per-position NLL map like the Gaussian
    kind: str = "gaussian"
    centres: int = 10  # M, intra-class centres per class, the main one included (HGAD reference: 10)
    lambda1: float = 1.0  # weight of L_g, the inter-class mixture NLL (reference: 1)
    lambda2: float = 1.0  # weight of L_mi; 1 = L_g + L_mi is the joint NLL -log p(x, y) / D (see README)
    label_smoothing: float = 0.02  # eps of the label-smoothed cross-entropy L_mi (reference: 0.02)
    stage_a_fraction: float = 0.08  # first fraction of training without L_intra (reference: 2 of 25 epochs)

    @property
    def per_position(self) -> bool:
        """Whether the prior factorises over the top latent's positions, so the flow has an NLL map
        (`vadcore.models.glow.nll_map`): checkable in a config, before any model is built."""
        return self.kind in PER_POSITION

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
    """HGAD's hierarchical Gaussian mixture (DESIGN.md "HGAD notes") on the whole z, trained with class labels y.

    Stage A (progress < stage_a_fraction): lambda1 L_g + lambda2 L_mi + L_e, shaping the K main centres;
    stage B adds L_intra, fitting the M intra-class centres. All four terms are computed in both stages (so
    every parameter gets a gradient, zero where unused, and the logged parts keep the same keys); L_intra
    is weighted 0 in stage A. ``log_prob`` is the class-agnostic density under the full mixture.

    The mixture lives in R^c, c = ``sample_dim``; ``samples`` cuts a window's z (B, D) into its (B*P, c)
    samples, P = D / c. Here P = 1 (c = D); `HGADPositionPrior` cuts z into its positions. Every term is a
    window's sum over its samples, divided by D.
    """

    what = "latent dim D"  # what sample_dim is, for errors

    def __init__(self, cfg: PriorConfig, dim: int, num_classes: int, sample_dim: int | None = None):
        super().__init__()
        K, M, c = num_classes, cfg.centres, sample_dim or dim
        if K < 1:
            raise ConfigError(f"flow.prior.kind={cfg.kind!r} needs >= 1 class (got num_classes={K})")
        if c < K:
            raise ConfigError(f"flow.prior.kind={cfg.kind!r} needs {self.what}={c} >= classes K={K} for orthogonal class centres")
        self.cfg, self.dim, self.sample_dim, self.num_classes = cfg, dim, c, K
        # mu_k = s on coordinates k, k+K, k+2K, ... (c//K of them): orthogonal, |mu_j - mu_k| = 5 exactly
        mu = torch.zeros(K, c)
        per_class = c // K
        eye = torch.eye(K) * CENTRE_DISTANCE / math.sqrt(2 * per_class)
        mu[:, : K * per_class] = eye.repeat(1, per_class)  # (K, K) -> (K, K*per_class): blocks of K coordinates
        self.mu = nn.Parameter(mu)
        self.offsets = nn.Parameter(torch.randn(K, M - 1, c))  # d_km, m = 1..M-1, N(0, I)
        self.class_logits = nn.Parameter(torch.zeros(K))  # phi: pi = softmax(phi)
        self.intra_logits = nn.Parameter(torch.zeros(K, M))  # phi_k: w_k = softmax(phi_k)

    def samples(self, z: Tensor) -> Tensor:
        """A window's mixture samples, (B, D) -> (B*P, c), window b's P samples in rows b*P .. b*P + P - 1."""
        return z

    def centres(self) -> Tensor:
        """c_km (K, M, c): c_k0 = mu_k, c_km = mu_k + d_km, with mu detached (only L_g, L_e, L_mi move mu)."""
        mu = self.mu.detach()[:, None]  # (K, 1, c)
        return torch.cat([mu, mu + self.offsets], dim=1)

    def _intra_terms(self, x: Tensor) -> Tensor:
        """log w_km - e_km / 2, (N, K, M), e_km = ||x - c_km||^2 for samples x (N, c)."""
        K, M = self.intra_logits.shape
        e = squared_distances(x, self.centres().reshape(K * M, -1)).view(-1, K, M)  # (N, K*M) -> (N, K, M)
        return F.log_softmax(_wide(self.intra_logits), dim=1) - e / 2

    def sample_log_prob(self, x: Tensor) -> Tensor:
        """log sum_{k,m} pi_k w_km N(x; c_km, I) in nats of samples x, (N, c) -> (N,)."""
        log_pi = F.log_softmax(_wide(self.class_logits), dim=0)[:, None]  # (K, 1)
        terms = (log_pi + self._intra_terms(x)).flatten(1)  # (N, K, M) -> (N, K*M)
        return torch.logsumexp(terms, dim=1) - 0.5 * self.sample_dim * LOG_2PI

    def log_prob(self, z: Tensor) -> Tensor:
        """The class-agnostic test density of each window, the sum over its samples, in nats, (B, D) -> (B,)."""
        return self.sample_log_prob(self.samples(z)).view(z.shape[0], -1).sum(1)  # (B*P,) -> (B, P) -> (B,)

    def loss(self, z: Tensor, jac: Tensor, y: Tensor, progress: float) -> tuple[Tensor, dict[str, Tensor]]:
        """The staged HGAD objective; `y` (B,) class indices, `progress` in [0, 1] the fraction of training done.

        Every sample of a window has the window's class. L_g and L_intra include the (c/2) log 2pi constant
        per sample, so both are NLLs per dimension comparable to the Gaussian prior's loss (for K = M = 1 they
        equal it for z - mu_1).
        """
        cfg, D, B = self.cfg, self.dim, z.shape[0]
        x = self.samples(z)  # (B*P, c)
        P = x.shape[0] // B
        ys = y.repeat_interleave(P)  # (B*P,) each sample's class

        def per_window(t: Tensor) -> Tensor:  # (B*P,) per-sample terms -> (B,) their sum over each window
            return t.view(B, P).sum(1)

        jac, const = _wide(jac), 0.5 * self.sample_dim * LOG_2PI
        half_d = squared_distances(x, self.mu) / 2  # (B*P, K) d_k / 2
        log_pi = F.log_softmax(_wide(self.class_logits), dim=0)  # (K,)
        L_g = -(per_window(torch.logsumexp(log_pi - half_d, dim=1) - const) + jac).mean() / D
        entropy = -(F.softmax(-half_d, dim=1) * F.log_softmax(-half_d, dim=1)).sum(1)  # of the posterior (B*P, K)
        L_e = per_window(entropy).mean() / D
        ce = F.cross_entropy(log_pi.detach() - half_d, ys, label_smoothing=cfg.label_smoothing, reduction="none")
        L_mi = per_window(ce).mean() / D
        own = self._intra_terms(x)[torch.arange(x.shape[0], device=x.device), ys]  # (B*P, K, M) -> (B*P, M): class y
        L_intra = -(per_window(torch.logsumexp(own, dim=1) - const) + jac).mean() / D
        stage_b = float(progress >= cfg.stage_a_fraction)
        loss = cfg.lambda1 * L_g + cfg.lambda2 * L_mi + L_e + stage_b * L_intra
        parts = {"L_g": L_g, "L_mi": L_mi, "L_e": L_e, "L_intra": L_intra}
        return loss, {name: value.detach() for name, value in parts.items()}


class HGADPositionPrior(HGADPrior):
    """HGAD's mixture per position (``hgad_position``): each of the top latent's H*W positions is a sample,
    its C channels a point of R^C, as the HGAD reference scores each feature vector of a backbone's map.

    log p(z) is the sum over positions, so the prior factorises over positions and, like N(0, I), gives the
    flow its exact NLL map (``log_prob_map``). The centres live in R^C: C >= K is needed, not D >= K.
    """

    what = "top-level channels C"

    def __init__(self, cfg: PriorConfig, shape: Shape, num_classes: int):
        super().__init__(cfg, math.prod(shape), num_classes, sample_dim=shape[0])

    def samples(self, z: Tensor) -> Tensor:
        """(B, D) -> (B*H*W, C): flat z is (C, H, W) channel-major (Glow's z), each position's C-vector a row."""
        b, c = z.shape[0], self.sample_dim
        return z.view(b, c, -1).transpose(1, 2).reshape(-1, c)  # (B, C, H*W) -> (B, H*W, C) -> (B*H*W, C)

    def log_prob_map(self, z: Tensor) -> Tensor:
        """log p per spatial position, (B, C, H, W) -> (B, H, W); sums to ``log_prob`` of the flat z."""
        b, _, h, w = z.shape
        return self.sample_log_prob(self.samples(z.flatten(1))).view(b, h, w)  # rows (b, h, w) in order


PRIORS: dict[str, Callable[[PriorConfig, Shape, int], nn.Module]] = {
    "gaussian": lambda cfg, shape, num_classes: GaussianPrior(math.prod(shape)),
    "hgad": lambda cfg, shape, num_classes: HGADPrior(cfg, math.prod(shape), num_classes),
    "hgad_position": HGADPositionPrior,
}
PER_POSITION = ("gaussian", "hgad_position")  # the kinds with log_prob_map (tested against the modules)


def build_prior(cfg: PriorConfig, shape: Shape, num_classes: int) -> nn.Module:
    """The prior named by ``cfg.kind`` for a top latent of ``shape`` (C, H, W) and ``num_classes`` classes."""
    if cfg.kind not in PRIORS:
        raise ConfigError(f"flow.prior.kind={cfg.kind!r} unknown; allowed: {', '.join(PRIORS)}")
    cfg.validate()
    return PRIORS[cfg.kind](cfg, tuple(shape), num_classes)
