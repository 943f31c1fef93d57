"""Training through DeepSpeed on the CPU: the GPU's bf16 autocast path, batches per epoch whatever the loader's
workers, and flow features streamed to disk instead of held in memory."""
from __future__ import annotations

import json
import weakref

import pytest
import torch
from torch import nn

from vadcore import train
from vadcore.data.loader import load_manifest
from vadcore.steps import flow, windows
from vadcore.steps.itae import build_itae
from vadcore.config import StepConfig, resolve_config
from vadcore.data import get_benchmark
from vadcore.data.shards import ShardSpec, ensure_shards
from vadcore.errors import ConfigError
from vadcore.models.itae import ITAE
from vadcore.testing import TINY

STEP = StepConfig(epochs=1, batch_size=2, lr=1e-3, grad_clip=1.0)


@pytest.fixture(scope="module")
def train_shards(tmp_path_factory):
    """The synthetic benchmark's training shards at TINY size: 12 videos in 6 shards."""
    cfg = resolve_config("synthetic", "smoke", TINY)
    spec = ShardSpec(cfg.data.benchmark, "train", cfg.data.height, cfg.data.width, cfg.data.channels)
    folder, _ = ensure_shards(get_benchmark("synthetic", None), spec, tmp_path_factory.mktemp("cache"), show_progress=False)
    return folder


def test_gpu_bf16_runs_the_forward_in_bf16_and_keeps_float32_weights():
    """The engine autocasts its forward; the weights it trains (and a checkpoint saves) stay float32."""
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.Conv3d(4, 1, 1))
    dtypes = []

    def loss_fn(engine, x, _progress):
        y = engine(x)
        dtypes.append(y.dtype)
        return (y.float() - x).pow(2).mean(), {}

    clips = [torch.rand(2, 1, 4, 6, 6) for _ in range(2)]
    result = train.fit(model, loss_fn, lambda epoch: clips, 2, STEP, "gpu-bf16", validate=lambda m: m(clips[0]).float().mean())
    assert dtypes == [torch.bfloat16, torch.bfloat16] and result.steps == 2
    assert {p.dtype for p in model.state_dict().values()} == {torch.float32}
    assert "val_loss" in result.history[0]


def test_the_itae_trains_through_the_gpu_bf16_config_on_cpu(train_shards, tmp_path):
    """The paper profile's config, on the CPU accelerator: training steps, validation, a float32 itae.pt."""
    cfg = resolve_config("synthetic", "smoke", [*TINY, "deepspeed=gpu-bf16"])
    info = build_itae(cfg, train_shards, tmp_path, None, show=False)
    (epoch,) = info["history"]
    assert epoch["steps"] == 4 and torch.isfinite(torch.tensor([epoch["train_loss"], epoch["val_loss"]])).all()
    state = torch.load(tmp_path / "itae.pt", weights_only=True)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}


def test_a_config_that_casts_the_weights_is_refused(tmp_path, monkeypatch):
    (tmp_path / "cast.json").write_text(json.dumps({"bf16": {"enabled": True}}))
    monkeypatch.setattr(train, "DEEPSPEED_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"deepspeed='cast'.*enables 'bf16'.*torch_autocast"):
        train.deepspeed_config("cast", STEP)


def test_flows_train_without_autocast_whatever_the_config():
    assert "torch_autocast" in train.deepspeed_config("gpu-bf16", STEP)
    assert "torch_autocast" not in train.deepspeed_config("gpu-bf16", STEP, fp32=True)


def _windows_trained(folder, workers: int, batch: int) -> tuple[list[list[tuple[str, int]]], int]:
    """The windows of each step of one ITAE-style epoch through `fit`, and the steps planned for it."""
    cfg = resolve_config("synthetic", "smoke", [*TINY, f"data.loader_workers={workers}"])
    ds, _ = windows.window_loader(folder, cfg, train=True, batch=batch)
    steps = train.steps_in(ds.num_windows(), batch, 0)
    seen = []

    def loss_fn(engine, b, _progress):
        seen.append(list(zip(b["video"], b["start"].tolist())))
        return engine(torch.ones(1, 1)).sum(), {}

    epochs = lambda epoch: windows.window_loader(folder, cfg, train=True, batch=batch, epoch=epoch)[1]  # noqa: E731
    train.fit(nn.Linear(1, 1), loss_fn, epochs, steps, cfg.itae_train, "cpu")
    return seen, steps


def test_an_epoch_trains_on_every_window_in_the_same_steps_whatever_the_loader_workers(train_shards):
    """Each worker ends on a partial batch; regrouped, an epoch is ceil(windows / batch) steps and none is lost."""
    batch = 7  # 468 windows: no worker's share is a multiple of it
    single, steps = _windows_trained(train_shards, 0, batch)
    multi, _ = _windows_trained(train_shards, 2, batch)
    assert len(single) == len(multi) == steps == 67
    assert [len(b) for b in multi] == [batch] * 66 + [468 - 66 * batch]
    assert sorted(w for b in multi for w in b) == sorted(w for b in single for w in b)
    assert len({w for b in single for w in b}) == 468


def test_flow_features_are_streamed_to_a_file_one_batch_at_a_time(train_shards, tmp_path, monkeypatch):
    """extract_features keeps at most two batches of flow inputs alive (the one written and the next), however
    many windows; the file reads back the same rows, by index and in consecutive blocks."""
    cfg = resolve_config("synthetic", "smoke", [*TINY, "data.train_stride=2"])
    alive, most, computed = set(), [0], []

    def spy(*args):
        out = flow_input(*args)
        alive.add(id(out))
        weakref.finalize(out, alive.discard, id(out))
        most[0] = max(most[0], len(alive))
        computed.append(out.clone())
        return out

    flow_input = flow.flow_input
    monkeypatch.setattr(flow, "flow_input", spy)
    videos = set(load_manifest(train_shards)["per_video"])
    with torch.no_grad():
        x, y = flow.extract_features(cfg, ITAE(cfg.itae).eval(), train_shards, "mot", videos, ["s0", "s1", "s2"], tmp_path / "f.f32")
    assert len(computed) == 29 and most[0] <= 2  # 12 videos x 77 windows in batches of 32
    expected = torch.cat(computed)
    assert len(x) == len(y) == len(expected) == 12 * 77
    idx = torch.randperm(len(x))[:50]
    assert torch.equal(x[idx], expected[idx])
    assert torch.equal(torch.cat(list(x.split(100))), expected)


def _engines(monkeypatch) -> list:
    """The DeepSpeed engines `fit` makes from now on, kept for inspection."""
    import deepspeed

    made, initialize = [], deepspeed.initialize

    def keep(*args, **kwargs):
        out = initialize(*args, **kwargs)
        made.append(out[0])
        return out

    monkeypatch.setattr(deepspeed, "initialize", keep)
    return made


def test_gpu_bf16_zero_buckets_fit_the_model_and_gradients_stay_float32(monkeypatch):
    """ZeRO-1 under autocast, on the CPU accelerator: one float32 gradient bucket the model's size rounded up (not
    DeepSpeed's 5e8 elements per gradient dtype), and no layer's gradient reduced in bf16."""
    engines = _engines(monkeypatch)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.Conv3d(4, 1, 1))
    clips = [torch.rand(2, 1, 4, 6, 6) for _ in range(2)]
    train.fit(model, lambda engine, x, _p: ((engine(x).float() - x).pow(2).mean(), {}), lambda epoch: clips, 2, STEP, "gpu-bf16")
    opt = engines[0].optimizer
    assert type(opt).__name__ == "DeepSpeedZeroOptimizer" and opt.reduce_bucket_size == train.BUCKET_ROUND
    assert set(opt.ipg_buckets) == {torch.float32}
    assert all(b.numel() <= train.BUCKET_ROUND for bucket in opt.ipg_buckets.values() for b in bucket.buffer)
    assert not any(hasattr(p, "comm_dtype") for p in model.parameters())


def test_a_config_file_that_sets_the_buckets_or_safe_modules_keeps_them(tmp_path, monkeypatch):
    (tmp_path / "mine.json").write_text(json.dumps({"zero_optimization": {"stage": 2, "reduce_bucket_size": 1000},
                                                    "torch_autocast": {"enabled": True, "lower_precision_safe_modules": ["torch.nn.Linear"]}}))
    monkeypatch.setattr(train, "DEEPSPEED_DIR", tmp_path)
    cfg = train.deepspeed_config("mine", STEP, params=3 * train.BUCKET_ROUND + 1)
    assert cfg["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 1000, "allgather_bucket_size": 4 * train.BUCKET_ROUND}
    assert cfg["torch_autocast"]["lower_precision_safe_modules"] == ["torch.nn.Linear"]
    (tmp_path / "zero0.json").write_text(json.dumps({"zero_optimization": {"stage": 0}}))
    assert train.deepspeed_config("zero0", STEP, params=10)["zero_optimization"] == {"stage": 0}  # no ZeRO: no buckets


def test_a_diverged_loss_stops_the_run_within_the_check_interval(monkeypatch):
    """No per-step wait on the device: finiteness is checked every FINITE_CHECK_EVERY steps and at the epoch's end,
    so a loss that turns NaN at step 6 stops the run after step 8 with a check every 4 steps."""
    monkeypatch.setattr(train, "FINITE_CHECK_EVERY", 4)
    calls = []

    def loss_fn(engine, x, _progress):
        calls.append(1)
        loss = engine(x).pow(2).mean()
        return (loss * float("nan") if len(calls) >= 6 else loss), {}

    batches = [torch.rand(2, 3) for _ in range(12)]
    with pytest.raises(FloatingPointError, match=r"non-finite training loss at epoch 1, steps 5-8 .*checked every 4 steps"):
        train.fit(nn.Linear(3, 1), loss_fn, lambda epoch: batches, 12, STEP, "cpu")
    assert len(calls) == 8
    calls.clear()
    with pytest.raises(FloatingPointError, match=r"epoch 1, steps 5-6 "):  # the epoch's end checks its last steps
        train.fit(nn.Linear(3, 1), loss_fn, lambda epoch: batches[:6], 6, STEP, "cpu")


def test_step_time_leaves_out_the_warm_up_and_the_validation():
    batches = [torch.rand(2, 3) for _ in range(5)]
    step = StepConfig(epochs=2, batch_size=2, lr=1e-3)
    result = train.fit(nn.Linear(3, 1), lambda engine, x, _p: (engine(x).pow(2).mean(), {}), lambda epoch: batches, 5, step, "cpu",
                       validate=lambda m: 0.0)
    assert [e["timed_steps"] for e in result.history] == [5 - train.WARMUP_STEPS, 5]
    t = train.timing(result.history)
    assert t["timed_steps"] == 10 - train.WARMUP_STEPS and t["train_seconds"] > 0
    assert t["step_ms"] == pytest.approx(1000 * t["train_seconds"] / t["timed_steps"], rel=1e-3)
