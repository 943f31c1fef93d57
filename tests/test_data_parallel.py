"""Data parallelism changes speed, not results: an ITAE stage and a flow stage trained by 2 ranks (gloo, each
with half of every global batch) against 1 rank with the whole batch, same seed and data order. The ranks are
processes started here and joined through a file store, as Ray Train would start them (vadcore.train)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from vadcore.config import resolve_config
from vadcore.data import get_benchmark
from vadcore.data.shards import ShardSpec, ensure_shards
from vadcore.testing import TINY, end_rank

STEPS = 20
SETS = [*TINY, "itae_train.batch_size=8", f"itae_train.max_steps={STEPS}", "flow.train.batch_size=16", f"flow.train.max_steps={STEPS}"]
LOSS_RTOL = 1e-4  # per-step loss, the mean over ranks against one rank's (acceptance of the scale-up issue)
# Saved weights: Adam divides each gradient by its own running scale, so the float32 rounding of a gradient
# summed in another order moves a weight by up to a few % of one step; bound: 2.5% of the farthest Adam can
# move a weight in STEPS steps (lr per step). Measured: ITAE 1.5e-4 with lr 1e-3 (0.7%).
WEIGHT_SHARE = 0.025


def _rank(rank: int, world: int, store: str, stage: str, train_folder: str, out: str, itae_dir: str | None) -> None:
    """One rank: join the group, train the stage with its loss recorded per step, write what it saw."""
    os.environ.update(RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    from vadcore.steps import flow, itae
    from vadcore.models import hgad_prior
    from vadcore.stages import StageRecord

    losses: list[float] = []

    def recorded(fn):
        def wrapper(*args, **kw):
            loss, parts = fn(*args, **kw)
            if torch.is_grad_enabled():  # training steps, not validation
                losses.append(loss.item())
            return loss, parts
        return wrapper

    itae.reconstruction_loss = recorded(itae.reconstruction_loss)
    hgad_prior.GaussianPrior.loss = recorded(hgad_prior.GaussianPrior.loss)
    cfg = resolve_config("synthetic", "smoke", SETS)
    out_dir = Path(out)
    if stage == "itae":
        info = itae.build_itae(cfg, Path(train_folder), out_dir, None, False)
    else:
        itae_info = json.loads((Path(itae_dir) / "info.json").read_text())
        itae_stage = StageRecord("itae", "k", Path(itae_dir), "trained", 0.0, itae_info)
        info = flow.build_flow(cfg, "mot", itae_stage, Path(train_folder), out_dir, None, False)
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"losses": losses, "info": info}))
    torch.distributed.destroy_process_group()
    end_rank()


def _train(tmp: Path, name: str, world: int, stage: str, train_folder: Path, itae_dir: Path | None = None) -> tuple[list[float], dict, Path]:
    out = tmp / name
    out.mkdir()
    mp.start_processes(_rank, args=(world, str(tmp / f"{name}.store"), stage, str(train_folder), str(out), str(itae_dir) if itae_dir else None),
                       nprocs=world, start_method="spawn")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
    assert len({len(r["losses"]) for r in ranks}) == 1, "ranks took different step counts"
    losses = [sum(r["losses"][i] for r in ranks) / world for i in range(len(ranks[0]["losses"]))]
    if stage == "itae":
        (out / "info.json").write_text(json.dumps(ranks[0]["info"]))
    return losses, ranks[0]["info"], out


@pytest.fixture(scope="module")
def train_folder(tmp_path_factory) -> Path:
    cfg = resolve_config("synthetic", "smoke", SETS)
    spec = ShardSpec("synthetic", "train", cfg.data.height, cfg.data.width, cfg.data.channels)
    return ensure_shards(get_benchmark("synthetic"), spec, tmp_path_factory.mktemp("cache"), show_progress=False)[0]


def _same_weights(a: Path, b: Path) -> float:
    wa, wb = (torch.load(p, weights_only=True) for p in (a, b))
    assert wa.keys() == wb.keys()
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def test_itae_and_flow_on_two_ranks_match_one_rank_with_the_whole_batch(tmp_path, train_folder):
    one, info1, out1 = _train(tmp_path, "itae-1", 1, "itae", train_folder)
    two, info2, out2 = _train(tmp_path, "itae-2", 2, "itae", train_folder)
    assert len(one) == len(two) == STEPS
    assert two == pytest.approx(one, rel=LOSS_RTOL)
    assert (info1["world_size"], info2["world_size"]) == (1, 2)
    cfg = resolve_config("synthetic", "smoke", SETS)
    assert _same_weights(out1 / "itae.pt", out2 / "itae.pt") < WEIGHT_SHARE * cfg.itae_train.lr * STEPS
    assert info2["history"][0]["train_loss"] == pytest.approx(info1["history"][0]["train_loss"], rel=LOSS_RTOL)  # averaged over ranks

    f_one, _, f_out1 = _train(tmp_path, "flow-1", 1, "flow", train_folder, out1)
    f_two, f_info2, f_out2 = _train(tmp_path, "flow-2", 2, "flow", train_folder, out1)
    assert len(f_one) == len(f_two) == STEPS and f_info2["world_size"] == 2
    assert f_two == pytest.approx(f_one, rel=LOSS_RTOL)
    assert _same_weights(f_out1 / "flow.pt", f_out2 / "flow.pt") < WEIGHT_SHARE * cfg.flow.train.lr * STEPS
    written = [sorted(p.name for p in d.iterdir() if not p.name.startswith("rank")) for d in (f_out1, f_out2)]
    assert written[0] == written[1] == ["flow.pt", "nll_map_mean.npy"]  # rank 0 wrote the stage, and nothing is left behind


def test_without_a_compiler_the_ranks_train_through_gloo_and_say_so(tmp_path, train_folder, monkeypatch, capfd):
    """No C++ compiler ($CXX names none): DeepSpeed's shared-memory all-reduce op is not built (it would fail), a
    note says so once per rank, and the two ranks train as usual through gloo."""
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    two, info, out = _train(tmp_path, "itae-2", 2, "itae", train_folder)
    assert len(two) == STEPS and info["world_size"] == 2 and (out / "itae.pt").is_file()
    assert capfd.readouterr().err.count("no C++ compiler") == 2
