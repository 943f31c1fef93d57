"""A sweep's compute bill before it runs (sweeps.bill): distinct stages paid once, counted FLOPs and steps, hours
at a measured or an assumed throughput."""
from __future__ import annotations

import json

import pytest

from sweeps.__main__ import main
from sweeps.bill import ASSUMED, load_throughput, sweep_bill
from sweeps.runner import stage_keys
from sweeps.plans import expand
from sweeps.spec import load_sweep
from vadcore.errors import ConfigError
from vadcore.testing import TINY


def _bill(name, benchmarks, profile, sets, data_root, cache, throughput=None):
    plans = expand(load_sweep(name), benchmarks, profile, sets, data_root=data_root)
    return sweep_bill(plans, [stage_keys(p, cache, data_root) for p in plans], load_throughput(throughput), data_root, cache)


def test_table3_on_ped2_at_paper_sizes(data_root, tmp_path):
    """Ablation-paths on Ped2, paper profile: two ITAEs (60 epochs of 1,020 steps of batch 2), the two flows (40 epochs
    of 102 steps of batch 20) and five scoring stages; 271.8 PFLOP, of which the full variant's stages are 165."""
    bill = _bill("ablation-paths", ["ped2"], "paper", [], str(data_root), tmp_path)
    lines = {(x.stage, x.trials[0]): x for x in bill.lines}
    assert len(bill.lines) == 9 and not bill.missing
    assert [x.stage for x in bill.lines].count("score") == 5
    two_path = lines[("itae", "app-mot-itae-ped2-s0")]
    assert two_path.steps == 60 * 1020 and two_path.trials[1:] == ["app-flow-ped2-s0", "mot-flow-ped2-s0", "both-flows-ped2-s0"]
    assert two_path.train_flops / 1e15 == pytest.approx(60 * 2040 * 987.54 / 1e6, rel=1e-4)  # every fit window once an epoch
    assert lines[("flow_mot", "mot-flow-ped2-s0")].steps == 40 * 102
    total = bill.total
    assert (total["train_flops"] + total["forward_flops"]) / 1e15 == pytest.approx(271.8, abs=0.1)
    full = [x for x in bill.lines if "both-flows-ped2-s0" in x.trials]
    assert sum(x.train_flops + x.forward_flops for x in full) / 1e15 == pytest.approx(165.4, abs=0.1)
    assert total["hours"] == pytest.approx(sum(x.hours for x in bill.lines)) and bill.source == "assumed"


def test_hours_are_the_flops_at_the_measured_rates(tmp_path):
    """A benchmark gpu-check measured uses its own rate, another the mean of those measured."""
    (tmp_path / "t.json").write_text(json.dumps({"gpu": "Test GPU", "tflops": {"itae": {"synthetic": 2.0}, "flow": {"ped2": 1.0, "avenue": 3.0},
                                                                              "forward": {"synthetic": 4.0}}}))
    bill = _bill("ablation-paths", None, None, TINY, None, tmp_path / "cache", tmp_path / "t.json")
    assert bill.gpu == "Test GPU" and "measured by gpu-check" in bill.source
    for x in bill.lines:
        rate = {"itae": 2.0, "flow_app": 2.0, "flow_mot": 2.0, "score": None}[x.stage]
        train = x.train_flops / (rate * 1e12) if rate else 0.0
        assert x.hours * 3600 == pytest.approx(train + x.forward_flops / 4e12), x.stage
    flow = next(x for x in bill.lines if x.stage == "flow_mot")
    assert flow.rates == {"flow": "2 (mean of avenue/ped2)", "forward": "4 (synthetic)"}


def test_a_file_that_is_not_a_throughput_is_refused(tmp_path):
    (tmp_path / "bad.json").write_text('{"gpu": "x"}')
    with pytest.raises(ConfigError, match=r"--throughput .*bad.json: not a gpu-check throughput.json"):
        load_throughput(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="no such file"):
        load_throughput(tmp_path / "none.json")
    assert load_throughput(None).tflops["itae"] == {"*": ASSUMED["tflops"]["itae"]}


def test_show_ends_with_the_bill(capsys, tmp_path):
    assert main(["show", "ablation-paths", "--cache", str(tmp_path), *(a for s in TINY for a in ("--set", s))]) == 0
    out = capsys.readouterr().out
    assert "compute bill" in out and "9 stages" in out and "assumed" in out
