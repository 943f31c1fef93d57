"""`python -m vadcore describe`: Table 1 shapes, parameter counts and FLOPs of the paper's models, in seconds."""

import torch

from vadcore.__main__ import main
from vadcore.config import resolve_config
from vadcore.describe import forward_flops
from vadcore.models.glow import Glow
from vadcore.models.itae import ITAE, count_parameters

TABLE1 = (  # C×T×H×W outputs of Table 1 for a 3×16×256×256 clip, as describe prints them
    "96×4×128×128", "128×4×64×64", "256×4×32×32",
    "12×16×128×128", "16×16×64×64", "32×16×32×32",
    "128×8×64×64", "96×16×128×128", "3×16×256×256",
)


def test_describe_paper_avenue_prints_table1_and_counts(capsys):
    assert main(["describe", "--profile", "paper", "--benchmark", "avenue"]) == 0
    out = capsys.readouterr().out
    for shape in TABLE1:
        assert shape in out, shape
    cfg = resolve_config("avenue", "paper", [])
    with torch.device("meta"):
        itae = ITAE(cfg.itae)
        glows = [Glow(cfg.flow.glow, c, 32, 32) for c in (8, 32)]  # F_app: 2T/tau, F_mot: 2T channels
    for n in (count_parameters(itae), count_parameters(itae.app), count_parameters(itae.decoder)):
        assert f"{n:,}" in out
    for glow in glows:
        assert f"{count_parameters(glow):,}" in out
    assert f"ITAE forward: {forward_flops(cfg.itae, 256, 256)[0] / 1e9:.2f} GFLOP per clip" in out


def test_forward_flops_match_multiply_adds_of_table1():
    """app.conv1 (3 -> 96, kernel 1×3×3, 4×128×128 outputs) and deconv4 (96 -> 3, kernel 3×3×3, a stride-2
    deconv costs its 16×128×128 input positions) by hand."""
    cfg = resolve_config("avenue", "paper", []).itae
    _, per_layer = forward_flops(cfg, 256, 256)
    assert per_layer["app.conv1"] == 2 * 96 * 3 * 9 * 4 * 128 * 128
    assert per_layer["decoder.deconv4"] == 2 * 3 * 96 * 27 * 16 * 128 * 128


def test_describe_shows_the_papers_frame_size_and_says_when_the_benchmark_is_synthetic(capsys):
    assert main(["describe", "--profile", "paper", "--benchmark", "ped2"]) == 0
    out = capsys.readouterr().out
    assert "the paper's frame size" in out and "240×360 grey" in out and "987.54 GFLOP per clip" in out  # counted, not 3 × forward
    assert main(["describe", "--profile", "paper", "--benchmark", "synthetic"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "the paper's frame size │ none (not in the paper)" in out
    assert "synthetic: its 64×96 frames are this project's size, not the paper's (ped2 240×360 grey, avenue 256×256 RGB" in out
