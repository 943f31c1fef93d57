"""One trial end to end on the synthetic benchmark through the DeepSpeed CPU engine: outputs, reuse,
re-scoring only when lambda_L changes, and determinism."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from vadcore.config import resolve_config
from vadcore.pipeline import run_trial
from vadcore.steps.flow import NLL_MAP_MEAN
from vadcore.scoring import anomaly_score
from vadcore.testing import TINY


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    root = tmp_path_factory.mktemp("trial")
    cfg = resolve_config("synthetic", "smoke", TINY)
    trial = run_trial(cfg, None, root / "cache", root / "out1", show=False)
    return root, trial


def test_trial_writes_its_record_and_frame_scores(first):
    root, trial = first
    record = json.loads((root / "out1/trial.json").read_text())
    assert record["metrics"]["auc_micro"] == trial["metrics"]["auc_micro"]
    for key in ("auc_micro", "auc_micro_global", "auc_macro", "r_auc_micro", "l_auc_micro", "auc_micro_motion"):
        assert 0.0 <= record["metrics"][key] <= 1.0, key
    assert {s["status"] for s in record["stages"].values()} == {"trained", "computed"}
    assert record["versions"]["deepspeed"] != "not installed" and record["history"]["itae"][0]["steps"] == 4
    table = pq.read_table(root / "out1/frame_scores.parquet")
    assert table.num_rows == 1440  # every synthetic test frame scored: none dropped
    assert {"video", "frame", "label", "score_r", "score_nll_app", "score_nll_mot", "score_l_local", "score"} <= set(table.column_names)
    assert not np.isnan(table.column("score").to_numpy()).any()


def test_score_is_eq9_plus_the_local_term_from_the_stored_columns(first):
    root, trial = first
    cfg = resolve_config("synthetic", "smoke", TINY)
    assert cfg.score.lambda_local > 0  # the smoke profile adds the local excess NLL
    t = pq.read_table(root / "out1/frame_scores.parquet").to_pydict()
    videos = np.asarray(t["video"])
    s = anomaly_score(*(np.asarray(t[k]) for k in ("score_r", "score_l")), videos, cfg.score, np.asarray(t["score_l_local"]))
    np.testing.assert_allclose(s.score, t["score"])
    assert trial["metrics"]["auc_micro"] == pytest.approx(roc_auc_score(t["label"], s.score))


def test_excess_maps_are_the_nll_maps_minus_the_training_mean(first):
    """Per frame, the NLL map's mean is the whole-latent NLL (both window-averaged the same way), so the
    excess map's mean plus the training mean map's mean of the frame's scene gives back score_nll_mot."""
    root, trial = first
    cache = root / "cache/stages"
    with np.load(cache / "score" / trial["stages"]["score"]["key"] / "scores.npz") as z:
        scores = {k: z[k] for k in z.files}
    flow = cache / "flow_mot" / trial["stages"]["flow_mot"]["key"]
    means = np.load(flow / NLL_MAP_MEAN)  # (scenes, h, w)
    scenes = json.loads((flow / "info.json").read_text())["scenes"]
    offset = means.mean((1, 2))[[scenes.index(s) for s in scores["scene"]]]
    np.testing.assert_allclose(scores["excess_mot"].mean((1, 2)) + offset, scores["nll_mot"], rtol=1e-5)


def test_rerun_reuses_every_stage_and_lambda_change_only_rescores(first):
    root, trial = first
    cfg = resolve_config("synthetic", "smoke", TINY)
    again = run_trial(cfg, None, root / "cache", root / "out2", show=False)
    assert {k: s["status"] for k, s in again["stages"].items() if k != "evaluate"} == {
        k: "reused" for k in trial["stages"] if k != "evaluate"
    }
    assert again["metrics"]["auc_micro"] == trial["metrics"]["auc_micro"]

    relambda = run_trial(resolve_config("synthetic", "smoke", [*TINY, "score.lambda_L=0.0"]), None, root / "cache", root / "out3", show=False)
    assert relambda["stages"]["score"]["status"] == "reused"
    assert relambda["metrics"]["auc_micro"] != pytest.approx(relambda["metrics"]["r_auc_micro"])  # local term left
    paper = run_trial(resolve_config("synthetic", "smoke", [*TINY, "score.lambda_L=0.0", "score.lambda_local=0.0"]), None, root / "cache", root / "out4", show=False)
    assert paper["stages"]["score"]["status"] == "reused"
    assert paper["metrics"]["auc_micro"] == pytest.approx(paper["metrics"]["r_auc_micro"])


def test_same_config_in_a_fresh_cache_gives_the_same_auc(first, tmp_path):
    _, trial = first
    again = run_trial(resolve_config("synthetic", "smoke", TINY), None, tmp_path / "cache", tmp_path / "out", show=False)
    assert again["stages"]["itae"]["status"] == "trained"
    assert again["metrics"]["auc_micro"] == pytest.approx(trial["metrics"]["auc_micro"], abs=1e-6)


def test_a_corrupt_stage_file_rebuilds_that_stage_and_its_dependants(first, tmp_path):
    """A truncated itae.pt retrains the ITAE; seeded CPU training gives it back byte for byte, so the flows and
    scores built from it verify and are reused (tests/test_stages.py: a changed upstream rebuilds them). A
    deleted nll_map_mean.npy retrains only the motion flow, again to the same bytes. Same AUC both times."""
    root, trial = first
    cache = tmp_path / "cache"
    shutil.copytree(root / "cache", cache)
    cfg = resolve_config("synthetic", "smoke", TINY)
    stages = cache / "stages"
    itae_pt = stages / "itae" / trial["stages"]["itae"]["key"] / "itae.pt"
    itae_pt.write_bytes(itae_pt.read_bytes()[:100])
    again = run_trial(cfg, None, cache, tmp_path / "out1", show=False)
    assert {k: s["status"] for k, s in again["stages"].items() if k in ("itae", "flow_app", "flow_mot", "score")} == {
        "itae": "trained", "flow_app": "reused", "flow_mot": "reused", "score": "reused"}
    assert "itae.pt has 100 bytes" in again["stages"]["itae"]["rebuilt_because"]

    (stages / "flow_mot" / trial["stages"]["flow_mot"]["key"] / NLL_MAP_MEAN).unlink()
    third = run_trial(cfg, None, cache, tmp_path / "out2", show=False)
    assert {k: s["status"] for k, s in third["stages"].items() if k in ("itae", "flow_app", "flow_mot", "score")} == {
        "itae": "reused", "flow_app": "reused", "flow_mot": "trained", "score": "reused"}
    assert f"{NLL_MAP_MEAN} is missing" in third["stages"]["flow_mot"]["rebuilt_because"]
    assert again["metrics"]["auc_micro"] == pytest.approx(trial["metrics"]["auc_micro"], abs=1e-6)
    assert third["metrics"]["auc_micro"] == pytest.approx(trial["metrics"]["auc_micro"], abs=1e-6)


def test_a_trial_reusing_its_itae_reports_the_same_itae_epochs(tmp_path):
    """A scheduler (ASHA) compares trials epoch by epoch: one that reuses a cached ITAE replays that ITAE's
    recorded epochs, so at each rung every trial reports the same quantity (sweeps.trainable.rung)."""
    from sweeps.trainable import rung

    fresh, reusing = [], []
    cfg = resolve_config("synthetic", "smoke", TINY)
    run_trial(cfg, None, tmp_path / "cache", tmp_path / "out1", show=False, report=fresh.append)
    again = run_trial(resolve_config("synthetic", "smoke", [*TINY, "flow.glow.steps=1"]), None, tmp_path / "cache", tmp_path / "out2", show=False, report=reusing.append)
    assert again["stages"]["itae"]["status"] == "reused" and again["stages"]["flow_mot"]["status"] == "trained"
    rungs = [[rung(r) for r in reports if rung(r)] for reports in (fresh, reusing)]
    assert rungs[0] == rungs[1] and [r["itae_epoch"] for r in rungs[0]] == [1]
    assert [r["stage"] for r in reusing] == ["itae", "flow_app", "flow_mot"] and reusing[0]["replayed"]
    assert not rung(reusing[-1])  # flow epochs make no rung


def test_the_flow_is_on_the_device_before_its_first_batch(first, tmp_path, monkeypatch):
    """ActNorm's data-dependent init runs on a batch on `device()`: the flow must be moved there first (a flow
    left on the CPU fails on CUDA). Checked through `.to` calls, since on this machine the device is the CPU.
    The cached ITAE is reused; its flows train again with a narrower coupling network."""
    import torch

    from vadcore.steps import flow
    from vadcore.train import device

    root, _ = first
    firsts = []

    class Spy(flow.FlowModel):
        placed = None

        def __init__(self, *args):
            super().__init__(*args)
            self.glow.register_forward_pre_hook(lambda module, inputs: firsts.append((self.placed, inputs[0].device)))

        def to(self, *args, **kwargs):
            self.placed = torch._C._nn._parse_to(*args, **kwargs)[0]
            return super().to(*args, **kwargs)

    monkeypatch.setattr(flow, "FlowModel", Spy)
    shutil.copytree(root / "cache", tmp_path / "cache")
    trial = run_trial(resolve_config("synthetic", "smoke", [*TINY, "flow.glow.hidden=8"]), None, tmp_path / "cache", tmp_path / "out", show=False)
    assert trial["stages"]["itae"]["status"] == "reused" and trial["stages"]["flow_mot"]["status"] == "trained"
    assert firsts[0] == (device(), device())


CROPS = ["itae_train.crop=[16, 24]", "flow.train.crop=[2, 4]", "deepspeed=cpu-bf16", "score.patch=8", "score.patch_stride=4"]


def test_crops_inference_precision_and_patch_stride_enter_stage_keys_only_when_set():
    """Older caches keep their keys: a config without the new fields has none of them in its slices."""
    from vadcore.data import get_benchmark
    from vadcore.pipeline import stage_slices
    from vadcore.stages import StageStore

    bench, store = get_benchmark("synthetic"), StageStore("unused")
    plain, cropped = (stage_slices(resolve_config("synthetic", "smoke", [*TINY, *extra]), {"train": "t", "test": "u"}, store, frozenset(), bench)
                      for extra in ([], CROPS))
    assert "crop" not in plain["itae"]["train"] and "crop" not in plain["flow_mot"]["train"]
    assert not {"inference", "patch_stride"} & {*plain["itae"], *plain["flow_app"], *plain["score"]}
    assert cropped["itae"]["train"]["crop"] == [16, 24] and cropped["flow_mot"]["train"]["crop"] == [2, 4]
    assert cropped["itae"]["inference"] == cropped["flow_app"]["inference"] == cropped["score"]["inference"] == "bfloat16"
    assert cropped["score"]["patch_stride"] == 4


def test_a_trial_trained_on_crops_in_bf16_scores_whole_frames(tmp_path):
    """The ITAE trains on 16x24 crops of the 32x48 frames under bf16 autocast, the flows on 2x4 crops of its 4x6
    latent maps (synthetic's strides halve the frame three times); validation, features and scores read whole
    frames, every test frame gets a finite score."""
    trial = run_trial(resolve_config("synthetic", "smoke", [*TINY, *CROPS]), None, tmp_path / "cache", tmp_path / "out", show=False)
    assert trial["training"]["itae"]["precision"] == "bfloat16 autocast, fp32 weights"
    assert trial["training"]["flow_mot"]["precision"] == "fp32"
    info = json.loads((tmp_path / "cache/stages/flow_mot" / trial["stages"]["flow_mot"]["key"] / "info.json").read_text())
    assert info["input_shape"][1:] == [4, 6]  # features of whole frames; the flow trained on crops of them
    table = pq.read_table(tmp_path / "out/frame_scores.parquet")
    assert table.num_rows == 1440 and np.isfinite(table.column("score").to_numpy()).all()


def test_random_crops_cut_each_map_at_its_own_place():
    import torch

    from vadcore.steps.flow import random_crops

    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    assert random_crops(x, (), torch.Generator()) is x
    crops = random_crops(x, (2, 3), torch.Generator().manual_seed(0))
    assert crops.shape == (2, 3, 2, 3)
    for m, c in zip(x, crops):
        top, left = divmod(int(c[0, 0, 0]) % 30, 6)
        torch.testing.assert_close(c, m[:, top : top + 2, left : left + 3])
