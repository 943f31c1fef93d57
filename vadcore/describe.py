"""`python -m vadcore describe`: the resolved config's sizes beside the paper's frame size for the benchmark,
every ITAE layer's output shape (Table 1), parameter counts of the ITAE and the flows, and their FLOPs per
sample, forward and training (counted: `vadcore.compute`).

    python -m vadcore describe --benchmark avenue --profile paper
    python -m vadcore describe --benchmark ped2 --profile smoke --set itae.width=0.25

Every model is built on the meta device: nothing is allocated or computed, so even the paper's models are
described in seconds on a laptop.
"""
from __future__ import annotations

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from vadcore.compute import flow_flops, itae_flops
from vadcore.config import TrialConfig, resolve_config
from vadcore.errors import ConfigError
from vadcore.models.glow import Glow, GlowConfig
from vadcore.models.itae import ITAE, ITAEConfig, count_parameters, layer_shapes


def fmt_shape(shape: tuple[int, ...]) -> str:
    """(96, 4, 128, 128) -> "96×4×128×128", Table 1's C×T×H×W."""
    return "×".join(map(str, shape))


def forward_flops(cfg: ITAEConfig, height: int, width: int, batch: int = 1) -> tuple[int, dict[str, int]]:
    """(total, per module) FLOPs of one ITAE forward pass on a (batch, C, T, height, width) input.

    Counted by torch's FlopCounterMode on meta tensors: 2 x the multiply-adds of every conv and deconv (a
    strided deconv costs its input positions x Cin x Cout x kernel); GroupNorm, activations and the sigmoid
    are not counted. Module names are those of ``layer_shapes`` ("app.conv1", "decoder.deconv4", ...).
    """
    counter = FlopCounterMode(display=False)
    with counter, torch.device("meta"):
        ITAE(cfg)(torch.empty(batch, cfg.in_channels, cfg.frames, height, width))
    per_module = {n.removeprefix("ITAE."): sum(c.values()) for n, c in counter.get_flop_counts().items() if n.startswith("ITAE.")}
    return counter.get_total_flops(), per_module


def flow_inputs(cfg: TrialConfig) -> dict[str, tuple[int, int, int]]:
    """(channels, h, w) of each enabled flow's input: pooled latents, 2 maps per time step (``pool_channels``).

    F_app: 2T/tau channels, plus T/tau with Table 4's extra input; F_mot: 2T channels.
    """
    h, w = cfg.itae.latent_size(cfg.data.height, cfg.data.width)
    t_app = cfg.itae.frames // cfg.itae.tau
    out = {}
    if cfg.flow.app:
        out["F_app"] = (2 * t_app + (t_app if cfg.flow.extra_input != "none" else 0), h, w)
    if cfg.flow.mot:
        out["F_mot"] = (2 * cfg.itae.frames, h, w)
    return out


PAPER_BENCHMARKS = ("ped2", "avenue", "shanghaitech")  # the ITAE paper's; synthetic is ours


def paper_frame_size(benchmark: str) -> str:
    """The paper's input frames for each member of `benchmark` (the paper profile's sizes, which follow its
    "Implementations"), e.g. "240×360 grey"; a synthetic member says it has none."""
    from vadcore.data import benchmark_members

    out = []
    for b in benchmark_members(benchmark):
        if b in PAPER_BENCHMARKS:
            d = resolve_config(b, "paper").data
            out.append(f"{d.height}×{d.width} {'grey' if d.channels == 1 else 'RGB'}" + (f" ({b})" if "+" in benchmark else ""))
        else:
            out.append(f"none ({b}: not in the paper)" if "+" in benchmark else "none (not in the paper)")
    return "; ".join(out)


def _config_table(cfg: TrialConfig, benchmark: str, profile: str) -> Table:
    d, m = cfg.data, cfg.itae
    h, w = m.latent_size(d.height, d.width)
    table = Table(title=f"{benchmark} / {profile}: resolved config", show_header=False)
    for key, value in (
        ("frame size H×W", f"{d.height}×{d.width}"),
        ("the paper's frame size", paper_frame_size(benchmark)),
        ("channels C", d.channels),
        ("clip length T", m.frames),
        ("tau (appearance reads T/tau frames)", f"{m.tau} ({m.frames // m.tau} frames)"),
        ("appearance channels conv1-4", ", ".join(map(str, m.app_widths))),
        ("motion channels conv1-4", ", ".join(map(str, m.mot_widths)) if m.paths == "app+mot" else "off (one-path AE)"),
        ("spatial strides / latent h×w", f"{tuple(m.spatial_strides)} / {h}×{w}"),
        ("batch size ITAE / flows", f"{cfg.itae_train.batch_size} / {cfg.flow.train.batch_size}"),
    ):
        table.add_row(key, str(value))
    return table


def _layer_table(model: ITAE, cfg: TrialConfig) -> tuple[Table, int]:
    d = cfg.data
    total, flops = forward_flops(cfg.itae, d.height, d.width)
    shapes = layer_shapes(model, (1, d.channels, cfg.itae.frames, d.height, d.width))
    table = Table(title=f"ITAE layers on a 1×{d.channels}×{cfg.itae.frames}×{d.height}×{d.width} clip (Table 1)")
    for col in ("layer", "output C×T×H×W", "params", "fwd GFLOP"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for name, shape in shapes:
        table.add_row(name, fmt_shape(shape[1:]), f"{count_parameters(model.get_submodule(name)):,}", f"{flops[name] / 1e9:.2f}")
    return table, total


def _glow_rows(glow_cfg: GlowConfig, cfg: TrialConfig, suffix: str) -> list[tuple[str, ...]]:
    rows = []
    for name, (c, h, w) in flow_inputs(cfg).items():
        with torch.device("meta"):
            glow = Glow(glow_cfg, c, h, w)
        train = flow_flops(glow_cfg, cfg.flow.prior, c, h, w, 1).train  # one scene's prior: HGAD's grows with the scenes
        rows.append((name + suffix, f"{glow_cfg.steps} / {glow_cfg.levels} / {glow_cfg.hidden}", fmt_shape((c, h, w)), f"{glow.latent_dim:,}",
                     f"{count_parameters(glow):,}", f"{train / 1e9:.1f}"))
    return rows


def describe(benchmark: str, profile: str, sets: list[str]) -> None:
    """Print the resolved config, the ITAE's layers, parameters and FLOPs, and the flows' parameters."""
    cfg = resolve_config(benchmark, profile, sets)
    console = Console()
    console.print(_config_table(cfg, benchmark, profile))
    if "synthetic" in benchmark.split("+"):
        sizes = ", ".join(f"{b} {paper_frame_size(b)}" for b in PAPER_BENCHMARKS)
        console.print(f"synthetic: its {cfg.data.height}×{cfg.data.width} frames are this project's size, not the paper's "
                      f"({sizes}); describe --benchmark ped2 or avenue shows the paper's models", highlight=False)

    with torch.device("meta"):
        model = ITAE(cfg.itae)
    layers, flops = _layer_table(model, cfg)
    console.print(layers)

    params = Table(title="ITAE parameters")
    params.add_column("part")
    params.add_column("params", justify="right")
    for name, part in model.named_children():
        params.add_row(name, f"{count_parameters(part):,}")
    params.add_row("total", f"{count_parameters(model):,}", style="bold")
    console.print(params)
    console.print(f"ITAE forward: {flops / 1e9:.2f} GFLOP per clip (2 × conv/deconv multiply-adds)")
    train = itae_flops(cfg.itae, cfg.loss, cfg.data.height, cfg.data.width).train
    console.print(f"ITAE training step: {train / 1e9:.2f} GFLOP per clip (forward, loss and backward, counted)")

    flows = Table(title="flow models (Glow; paper: K=32, L=3)")
    for col in ("model", "K / L / hidden", "input C×h×w", "latent dim", "params", "train GFLOP/sample"):
        flows.add_column(col, justify="left" if col == "model" else "right")
    rows = _glow_rows(cfg.flow.glow, cfg, "")
    note = None
    if profile == "paper" and cfg.flow.glow != GlowConfig():  # not the K=32, L=3 of GlowConfig() (Ped2: L=1)
        try:
            rows += _glow_rows(GlowConfig(), cfg, " (paper K=32, L=3)")
        except ConfigError as e:
            note = f"Glow with K=32, L=3 does not fit this latent: {e}"
    for row in rows:
        flows.add_row(*row)
    console.print(flows)
    if note:
        console.print(note)
