"""Model selection: held-out videos choose the epoch a stage keeps (or early-stop it), on every rank alike,
and the trial records which epoch that was. Scripted validation losses make each decision known in advance."""
from __future__ import annotations

import dataclasses
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from vadcore import pipeline, train
from vadcore.data.loader import load_manifest
from vadcore.steps.itae import build_itae
from vadcore.steps.windows import split_videos
from vadcore.config import StepConfig, resolve_config
from vadcore.configtools import to_dict
from vadcore.data import get_benchmark
from vadcore.data.shards import ShardSpec, ensure_shards
from vadcore.errors import ConfigError, DataError
from vadcore.stages import StageStore
from vadcore.testing import TINY, end_rank

STEP = StepConfig(epochs=4, batch_size=2, lr=1e-2)


def _fit(step: StepConfig, losses: list[float] | None):
    """fit a Linear on a constant target, validation returning `losses` in turn; (result, model, the model's
    state at the end of each epoch, as the report hook saw it, the validations run)."""
    model = nn.Linear(1, 1)
    states: dict[int, dict[str, torch.Tensor]] = {}
    calls = []

    def loss_fn(engine, x, _progress):
        return (engine(x) - 1.0).pow(2).mean(), {}

    def validate(module) -> float:
        calls.append(1)
        return losses[len(calls) - 1]

    def report(record):
        states[record["epoch"]] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    batches = [torch.ones(2, 1), torch.full((2, 1), 0.5)]
    result = train.fit(model, loss_fn, lambda epoch: batches, 2, step, "cpu", validate=validate if losses else None, report=report)
    return result, model, states, len(calls)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_best_keeps_the_weights_of_the_lowest_validation_epoch():
    result, model, states, _ = _fit(STEP, [3.0, 1.0, 2.0, 1.0])  # a tie at epoch 4: the first lowest is kept
    assert (result.kept_epoch, result.epochs_run, result.stopped_early, result.selected_by) == (2, 4, False, "val_loss")
    assert _same(model.state_dict(), states[2]) and not _same(model.state_dict(), states[4])  # training moved on, the model did not
    assert [r["val_loss"] for r in result.history] == [3.0, 1.0, 2.0, 1.0]


def test_patience_stops_after_that_many_epochs_without_improvement():
    result, model, states, validations = _fit(dataclasses.replace(STEP, epochs=8, patience=2), [3.0, 1.0, 2.0, 1.5, 0.5, 0.1, 0.1, 0.1])
    assert (result.kept_epoch, result.epochs_run, result.stopped_early) == (2, 4, True)
    assert validations == 4 and len(result.history) == 4 and result.steps == 8  # epochs 5-8 never ran
    assert _same(model.state_dict(), states[2])


def test_last_keeps_the_last_epoch_whatever_the_validation():
    result, model, states, _ = _fit(dataclasses.replace(STEP, select="last"), [3.0, 1.0, 2.0, 2.5])
    assert (result.kept_epoch, result.epochs_run, result.selected_by) == (4, 4, "last")
    assert _same(model.state_dict(), states[4]) and not _same(states[2], states[4])


def test_best_without_held_out_videos_keeps_the_last_epoch_and_says_so():
    result, model, states, _ = _fit(STEP, None)
    assert (result.kept_epoch, result.selected_by) == (4, "last") and "val_loss" not in result.history[-1]
    assert _same(model.state_dict(), states[4])


def test_a_non_finite_validation_loss_is_an_error():
    with pytest.raises(FloatingPointError, match="non-finite validation loss nan at epoch 2"):
        _fit(STEP, [1.0, float("nan"), 1.0, 1.0])


@pytest.mark.parametrize("section", ["itae_train", "flow.train"])
@pytest.mark.parametrize(
    "sets, message",
    [
        (["select='first'"], r"select='first' is not allowed; allowed: 'best', 'last'"),
        (["patience=-1"], r"patience=-1 must be >= 0"),
        (["select='last'", "patience=3"], r"patience=3 needs {s}\.select='best' \(got 'last'\)"),
    ],
)
def test_selection_settings_are_validated(section, sets, message):
    with pytest.raises(ConfigError, match=message.format(s=section.replace(".", r"\."))):
        resolve_config("ped2", "smoke", [f"{section}.{s}" for s in sets])


# ---------------------------------------------------------------------------------------------- held-out videos

SYNTHETIC = get_benchmark("synthetic")  # whose source files the native floors read, in stage_slices

MANIFEST = {"per_video": {f"v{i:02d}": {} for i in range(10)}}


def test_split_videos_holds_out_the_benchmarks_holdout_else_a_seeded_share():
    fit_videos, val = split_videos(MANIFEST, 0.1, 0, frozenset({"v03", "v07"}))
    assert val == {"v03", "v07"} and fit_videos == set(MANIFEST["per_video"]) - val  # val_fraction plays no part
    seeded = split_videos(MANIFEST, 0.2, 5)
    assert len(seeded[1]) == 2 and seeded == split_videos(MANIFEST, 0.2, 5, frozenset())
    assert split_videos(MANIFEST, 0.0, 5)[1] == set()


def test_a_holdout_outside_the_training_videos_is_a_data_error():
    with pytest.raises(DataError, match=r"dev holdout video\(s\) v99, zz are not training videos of these shards \(10 videos: v00, v01"):
        split_videos(MANIFEST, 0.1, 0, frozenset({"v01", "v99", "zz"}))
    with pytest.raises(DataError, match="holds out all 10 training videos"):
        split_videos(MANIFEST, 0.1, 0, frozenset(MANIFEST["per_video"]))


def test_the_holdout_is_part_of_the_itae_stage_key(tmp_path):
    cfg = resolve_config("synthetic", "smoke", TINY)
    store = StageStore(tmp_path)
    keys = [{n: store.key(n, s) for n, s in pipeline.stage_slices(cfg, {"train": "t", "test": "u"}, store, h, SYNTHETIC).items()}
            for h in (frozenset(), frozenset({"a"}), frozenset({"b"}))]
    assert len({k["itae"] for k in keys}) == 3 and len({k["flow_mot"] for k in keys}) == 3  # and everything downstream


def test_a_one_path_ae_is_shared_by_configs_that_differ_only_in_the_motion_path(tmp_path):
    """The one-path AE builds no motion path: its key ignores the motion fields, a two-path ITAE's does not."""
    store = StageStore(tmp_path)

    def itae_key(*sets: str) -> str:
        cfg = resolve_config("synthetic", "smoke", [*TINY, *(s for s in sets if s)])
        return store.key("itae", pipeline.stage_slices(cfg, {"train": "t", "test": "u"}, store, frozenset(), SYNTHETIC)["itae"])

    motion = ("itae.motion_ratio=1.0", "itae.lateral=false", "itae.mot_temporal_kernels=[3, 3, 3, 3]")
    assert len({itae_key("itae.paths='app'", "flow.mot=false", m) for m in ("", *motion)}) == 1
    assert len({itae_key(m) for m in ("", *motion)}) == 4
    assert itae_key("itae.paths='app'", "flow.mot=false") != itae_key("itae.paths='app'", "flow.mot=false", "itae.tau=4")  # tau: the frames it reads
    two_path = resolve_config("synthetic", "smoke", TINY).itae
    assert two_path.built_fields() == to_dict(two_path)  # two-path ITAEs keep the keys they had: every field builds


def test_the_itae_trains_without_the_holdout_and_selects_on_it(tmp_path):
    cfg = resolve_config("synthetic", "smoke", [*TINY, "itae_train.epochs=2"])
    spec = ShardSpec(cfg.data.benchmark, "train", cfg.data.height, cfg.data.width, cfg.data.channels)
    folder, _ = ensure_shards(get_benchmark("synthetic", None), spec, tmp_path / "cache", show_progress=False)
    videos = sorted(load_manifest(folder)["per_video"])
    info = build_itae(cfg, folder, tmp_path, None, False, holdout=frozenset(videos[:2]))
    assert info["val_videos"] == videos[:2] and info["fit_videos"] == videos[2:]
    losses = [r["val_loss"] for r in info["history"]]
    assert info["kept_epoch"] == 1 + losses.index(min(losses)) and info["selected_by"] == "val_loss" and info["epochs_run"] == 2


# ---------------------------------------------------------------------------------------------- the trial


def test_a_trial_records_the_kept_epoch_of_every_training_stage(tmp_path):
    from results.aggregate import column_type, trial_row

    sets = [*TINY, "itae_train.epochs=2", "flow.train.epochs=2", "flow.train.patience=1"]
    trial = pipeline.run_trial(resolve_config("synthetic", "smoke", sets), None, tmp_path / "cache", tmp_path / "out", show=False)
    recorded = json.loads((tmp_path / "out/trial.json").read_text())["training"]
    assert set(recorded) == {"itae", "flow_app", "flow_mot"}
    for name, t in recorded.items():
        losses = [r["val_loss"] for r in trial["history"][name]]
        assert t["kept_epoch"] == 1 + losses.index(min(losses)) and t["epochs_run"] == len(losses) and t["selected_by"] == "val_loss", name
    (tmp_path / "out/plan.json").write_text("{}")
    row = trial_row(tmp_path / "out", "sweep", "commit")
    assert row["training.itae.kept_epoch"] == recorded["itae"]["kept_epoch"] and row["training.flow_mot.stopped_early"] == recorded["flow_mot"]["stopped_early"]
    assert str(column_type("training.flow_app.kept_epoch")) == "int64"


# ---------------------------------------------------------------------------------------------- two ranks

# Each rank's validation disagrees on the best epoch (rank 0 alone: epoch 2; rank 1 alone: epoch 3): their
# mean, which both ranks act on, says epoch 3; patience 2 then stops both after epoch 5 of 6.
RANK_LOSSES = {0: [3.0, 1.0, 2.0, 5.0, 5.0, 5.0], 1: [3.0, 2.0, 0.5, 5.0, 5.0, 5.0]}


def _rank(rank: int, store: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE="2", OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    # a rank that stopped alone would leave the other waiting in the next epoch's all-reduce: the timeout fails it
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=timedelta(seconds=60))
    torch.manual_seed(0)
    losses = iter(RANK_LOSSES[rank])
    result = train.fit(nn.Linear(1, 1), lambda engine, x, _p: ((engine(x) - 1.0).pow(2).mean(), {}), lambda epoch: [torch.ones(2, 1)], 1,
                       StepConfig(epochs=6, batch_size=2, lr=1e-2, patience=2), "cpu", validate=lambda module: next(losses))
    Path(out, f"rank{rank}.json").write_text(json.dumps({**result.selection(), "val": [r["val_loss"] for r in result.history]}))
    torch.distributed.destroy_process_group()
    end_rank()


def test_two_ranks_keep_and_stop_at_the_same_epoch(tmp_path):
    mp.start_processes(_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]
    assert ranks[0]["val"] == [3.0, 1.5, 1.25, 5.0, 5.0]
    assert (ranks[0]["kept_epoch"], ranks[0]["epochs_run"], ranks[0]["stopped_early"]) == (3, 5, True)
