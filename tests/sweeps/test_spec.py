"""Sweep files: validation errors name the file and field; grids expand into plans with reproducing commands."""
from __future__ import annotations

import pytest

from sweeps.__main__ import main
from sweeps.spec import available, expand, load_sweep
from vadcore.configtools import parse_sets
from vadcore.errors import ConfigError

GRID = """
name = "t"
benchmarks = ["synthetic"]
seeds = [0, 1]
[fixed.score]
lambda_L = 0.5
[[grid]]
name = "a"
set = { "flow.mot" = false }
[[grid]]
name = "b"
set = { "flow.mot" = true }
"""


def write(tmp_path, text, name="t.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", available())
def test_shipped_sweeps_load_and_expand(name):
    spec = load_sweep(name)
    assert expand(spec) and spec.benchmarks == ("synthetic",)


def test_ablation_paths_is_table_3():
    plans = expand(load_sweep("ablation-paths"))
    assert [p.variant for p in plans] == ["app-itae", "app-mot-itae", "app-flow", "mot-flow", "both-flows"]
    assert plans[0].config.itae.paths == "app" and not plans[0].config.flow.app
    assert plans[-1].config.flow.app and plans[-1].config.flow.mot


def test_grid_expands_variants_times_seeds_with_commands(tmp_path):
    plans = expand(load_sweep(write(tmp_path, GRID)), extra_sets=["itae_train.epochs=1"])
    assert [(p.variant, p.seed) for p in plans] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    p = plans[3]
    assert p.config.score.lambda_L == 0.5 and p.config.flow.mot and p.config.seed == 1 and p.config.itae_train.epochs == 1
    assert p.command.startswith("python -m vadcore run --benchmark synthetic --profile smoke ")
    sets = [tok for tok in p.command.split() if "=" in tok]
    assert parse_sets([s.strip("'") for s in sets]) == {"score": {"lambda_L": 0.5}, "flow": {"mot": True}, "seed": 1, "itae_train": {"epochs": 1}}
    assert len(expand(load_sweep(write(tmp_path, GRID)), benchmarks=["synthetic"], profile="laptop")) == 4


@pytest.mark.parametrize(
    "text, needle",
    [
        ("bogus = 1\n" + GRID, "unknown field bogus; allowed:"),
        (GRID.replace("seeds = [0, 1]", 'seeds = ["x"]'), "seeds[0]='x' must be int"),
        (GRID.replace('benchmarks = ["synthetic"]', 'benchmarks = ["ped3"]'), "'ped3' unknown; allowed:"),
        ('name = "t"\ngrid = []\n', "grid must be a non-empty list"),
        ('name = "t"\n', "found neither"),
        (GRID + '[search]\nspace = { "itae.tau" = { choices = [2] } }\n', "found both"),
        (GRID.replace('"flow.mot" = true', '"flow.mot" = true, "itae.tau" = 3'), "variant 'b'"),
        (GRID.replace('"flow.mot" = true', '"flow.glow.levels" = 6'), "flow.glow.levels=6 too deep"),
        (GRID.replace('"flow.mot" = true', '"itae.bogus" = 1'), "unknown field itae.bogus"),
        (GRID.replace("lambda_L = 0.5", 'lambda_L = "high"'), "score.lambda_L='high' must be"),
        (GRID + '[scheduler]\ntype = "hyperband"\n', "scheduler.type='hyperband' is not allowed; allowed: 'none', 'asha'"),
        ('name = "t"\n[search]\nspace = { "itae.tau" = { choices = [2, 3] } }\n', "search.space.itae.tau=3"),
        ('name = "t"\n[search]\nspace = { "itae_train.lr" = { low = 1.0, high = 0.1 } }\n', "low=1.0 must be < high=0.1"),
    ],
)
def test_validation_errors_name_file_and_field(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert str(path) in str(e.value) and needle in str(e.value), str(e.value)


def test_cli_error_is_one_line_exit_2(tmp_path, capsys):
    assert main(["show", str(write(tmp_path, "bogus = 1\n" + GRID))]) == 2
    err = capsys.readouterr().err
    assert "unknown field bogus" in err and "Traceback" not in err
    assert main(["show", "no-such-sweep"]) == 2
    assert "allowed: ablation-extra-input, ablation-paths" in capsys.readouterr().err


def test_show_prints_shared_stage_keys(capsys, tmp_path):
    assert main(["show", "ablation-paths", "--cache", str(tmp_path)]) == 0
    assert "distinct stages to train: itae 2, flow_app 1, flow_mot 1" in capsys.readouterr().out
