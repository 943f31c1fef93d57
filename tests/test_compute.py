"""Counted FLOPs and window counts (vadcore.compute): the issue's paper figures, a hand-computed identity of the
backward pass, and parity with what the loader and the pipeline really read and train."""
from __future__ import annotations

import dataclasses

import pytest

from vadcore.compute import flow_flops, itae_flops, per_sample, stage_work, training_windows, trial_videos, window_count
from vadcore.config import resolve_config
from vadcore.data.loader import ClipDataset, load_manifest
from vadcore.describe import flow_inputs, forward_flops
from vadcore.pipeline import run_trial
from vadcore.testing import TINY


def test_paper_ped2_training_flops_per_sample():
    """Ped2 at the paper's sizes: two-path ITAE 988 GFLOP a training sample (MS-SSIM included), the one-path
    AE 812, F_app 126, F_mot 302 (L = 1); Avenue's ITAE 258.5 (the issue rounded 259)."""
    cfg = resolve_config("ped2", "paper")
    assert itae_flops(cfg.itae, cfg.loss, 240, 360).train / 1e9 == pytest.approx(987.5, abs=0.1)
    one_path = dataclasses.replace(cfg.itae, paths="app")
    assert itae_flops(one_path, cfg.loss, 240, 360).train / 1e9 == pytest.approx(812.0, abs=0.1)
    flows = {name: flow_flops(cfg.flow.glow, cfg.flow.prior, c, h, w, 1).train / 1e9 for name, (c, h, w) in flow_inputs(cfg).items()}
    assert flows == {"F_app": pytest.approx(125.6, abs=0.1), "F_mot": pytest.approx(302.2, abs=0.1)}
    avenue = resolve_config("avenue", "paper")
    assert itae_flops(avenue.itae, avenue.loss, 256, 256).train / 1e9 == pytest.approx(258.5, abs=0.1)


def test_a_training_step_is_three_forwards_less_the_input_gradients_nobody_needs():
    """Without MS-SSIM the loss has no convolution, so training = forward + 2 x forward (input and weight
    gradients of every layer), less the input gradients of the two layers that read the clip (app.conv1,
    mot.conv1): the clip needs none. Counted per layer by describe.forward_flops."""
    cfg = resolve_config("avenue", "paper")
    total, per_layer = forward_flops(cfg.itae, 256, 256)
    counted = itae_flops(cfg.itae, cfg.loss, 256, 256)
    assert cfg.loss.ms_ssim == 0 and counted.forward == total
    assert counted.train == 3 * total - per_layer["app.conv1"] - per_layer["mot.conv1"]


def test_window_counts_by_hand():
    assert window_count(20, 8, 4, cover_all=False) == 4  # starts 0, 4, 8, 12: the last ends at frame 19
    assert window_count(20, 8, 4, cover_all=True) == 4  # ... which is the video's last: no tail window
    assert window_count(22, 8, 4, cover_all=False) == 4
    assert window_count(22, 8, 4, cover_all=True) == 5  # + the window flush with the end, starting at 14
    assert window_count(7, 8, 1, cover_all=True) == 0


@pytest.fixture(scope="module")
def tiny_trial(tmp_path_factory):
    root = tmp_path_factory.mktemp("compute")
    cfg = resolve_config("synthetic", "smoke", [*TINY, "flow.train.epochs=2"])
    trial = run_trial(cfg, None, root / "cache", root / "out", show=False)
    return cfg, trial, root / "cache"


def test_stage_work_counts_the_windows_and_steps_the_trial_ran(tiny_trial):
    """Counted from the reader before any shard exists, and from the shards' manifests after: the windows the
    loader yields and the optimiser steps each stage took."""
    cfg, trial, cache = tiny_trial
    before, after = trial_videos(cfg, None), trial_videos(cfg, None, cache)
    assert before == after and len(before.fit) + len(before.val) == 12 and len(before.test) == 9
    folder = cache / "shards/synthetic" / trial["stages"]["shards_train"]["key"]
    loader = ClipDataset(folder, cfg.itae.frames, cfg.data.train_stride, train=True, videos=set(before.fit))
    assert training_windows(cfg, before) == loader.num_windows()
    test = cache / "shards/synthetic" / trial["stages"]["shards_test"]["key"]
    scored = sum(window_count(n, cfg.itae.frames, cfg.data.test_stride, True) for n in before.test.values())
    assert scored == ClipDataset(test, cfg.itae.frames, cfg.data.test_stride, train=False).num_windows()
    assert sum(i["frames"] for i in load_manifest(test)["per_video"].values()) == sum(before.test.values())
    work = stage_work(cfg, before)
    for stage in ("itae", "flow_app", "flow_mot"):
        assert work[stage].steps == sum(e["steps"] for e in trial["history"][stage]), stage
    flops = itae_flops(cfg.itae, cfg.loss, cfg.data.height, cfg.data.width)
    assert work["itae"].train_flops == 4 * 4 * flops.train  # TINY: one epoch of 4 steps of 4 windows
    assert work["flow_mot"].steps == 2 * 4 and work["flow_mot"].samples == 2 * 4 * 16
    assert set(work) == {"itae", "flow_app", "flow_mot", "score"} and work["score"].steps == 0 and work["score"].forward_flops > 0


def test_a_stage_trained_on_crops_is_billed_at_the_crop_size_and_scored_whole():
    cfg = resolve_config("synthetic", "smoke", [*TINY, "itae_train.crop=[16, 24]", "flow.train.crop=[2, 4]"])
    per = per_sample(cfg, 3)
    assert per["itae"].train == itae_flops(cfg.itae, cfg.loss, 16, 24).train
    assert per["itae"].forward == itae_flops(cfg.itae, cfg.loss, 32, 48).forward
    (c, h, w) = flow_inputs(cfg)["F_mot"]
    assert per["flow_mot"].train == flow_flops(cfg.flow.glow, cfg.flow.prior, c, 2, 4, 3).train
    assert per["flow_mot"].forward == flow_flops(cfg.flow.glow, cfg.flow.prior, c, h, w, 3).forward
