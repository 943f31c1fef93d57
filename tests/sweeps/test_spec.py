"""Sweep files: validation errors name the file and field; grids expand into plans with reproducing commands."""
from __future__ import annotations

import pytest

from sweeps.__main__ import main
from sweeps.plans import expand
from sweeps.spec import SEARCH_METRICS, TRIAL_METRICS, available, check, load_sweep, with_seeds, with_variants
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

SEARCH = """
name = "t"
[search]
space = { "itae.tau" = { choices = [2] } }
"""
ASHA = SEARCH + """
[scheduler]
type = "asha"
grace_period = 1
max_t = 4
reduction_factor = 2
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
    assert p.command.startswith("OMP_NUM_THREADS=1 python -m vadcore run --benchmark synthetic --profile smoke ")
    sets = [tok for tok in p.command.split()[1:] if "=" in tok]
    assert parse_sets([s.strip("'") for s in sets]) == {"score": {"lambda_L": 0.5}, "flow": {"mot": True}, "seed": 1, "itae_train": {"epochs": 1}}
    assert len(expand(load_sweep(write(tmp_path, GRID)), benchmarks=["synthetic"], profile="laptop")) == 4


@pytest.mark.parametrize(
    "text, needle",
    [
        ("bogus = 1\n" + GRID, "unknown field bogus; allowed:"),
        ('report = ["table5"]\n' + GRID, "report[0]='table5' is not allowed; allowed: 'table3', 'table4', 'per-scene'"),
        (GRID.replace("seeds = [0, 1]", 'seeds = ["x"]'), "seeds[0]='x' must be int"),
        (GRID.replace('benchmarks = ["synthetic"]', 'benchmarks = ["ped3"]'), "'ped3' unknown; allowed:"),
        ('name = "t"\ngrid = []\n', "grid must be a non-empty list"),
        ('name = "t"\n', "found neither"),
        (GRID + '[search]\nspace = { "itae.tau" = { choices = [2] } }\n', "found both"),
        (GRID.replace('"flow.mot" = true', '"flow.mot" = true, "itae.tau" = 3'), "variant 'b'"),
        (GRID.replace('"flow.mot" = true', '"flow.glow.levels" = 6'), "flow.glow.levels=6 too deep"),
        (GRID.replace('"flow.mot" = true', '"itae.bogus" = 1'), "unknown field itae.bogus"),
        (GRID.replace("lambda_L = 0.5", 'lambda_L = "high"'), "score.lambda_L='high' must be"),
        ("retries = -1\n" + GRID, "retries=-1 must be >= 0 (0: a trial whose node dies fails with it)"),
        ('retries = "2"\n' + GRID, "retries='2' must be int"),
        (GRID + '[scheduler]\ntype = "hyperband"\n', "scheduler.type='hyperband' is not allowed; allowed: 'none', 'asha'"),
        ('name = "t"\n[search]\nspace = { "itae.tau" = { choices = [2, 3] } }\n', "search.space.itae.tau=3"),
        ('name = "t"\n[search]\nspace = { "itae_train.lr" = { low = 1.0, high = 0.1 } }\n', "low=1.0 must be < high=0.1"),
        # seeds: distinct ints in numpy's range (one trial folder per seed)
        (GRID.replace("seeds = [0, 1]", "seeds = [0, 0]"), "seeds[1]=0 repeats seeds[0]: the values must be distinct"),
        (GRID.replace("seeds = [0, 1]", "seeds = [0, true]"), "seeds[1]=True must be int"),
        (GRID.replace("seeds = [0, 1]", "seeds = [1.5]"), "seeds[0]=1.5 must be int"),
        (GRID.replace("seeds = [0, 1]", "seeds = [-1]"), "seeds[0]=-1 must be in [0, 4294967295]"),
        # only the sweep's seeds set a trial's seed
        (GRID.replace('"flow.mot" = true', '"flow.mot" = true, seed = 7'), "grid[1].set.seed=7 is not allowed"),
        (GRID.replace("[fixed.score]", "[fixed]\nseed = 7\n[fixed.score]"), "fixed.seed=7 is not allowed"),
        (SEARCH.replace('"itae.tau"', 'seed = { choices = [1, 2] }, "itae.tau"'), "search.space.seed={'choices': [1, 2]} is not allowed"),
        # grid variant names: distinct single folder names
        (GRID.replace('name = "b"', 'name = "a"'), "grid[1].name='a' repeats grid[0].name: variant names must be distinct"),
        (GRID.replace('name = "b"', 'name = ".."'), "grid[1].name='..' must be a single folder name"),
        # ASHA
        (ASHA.replace("reduction_factor = 2", "reduction_factor = 1"), "scheduler.reduction_factor=1 must be > 1"),
        (ASHA.replace("grace_period = 1", "grace_period = 0"), "grace_period=0 must be in [1, max_t=4]"),
        (ASHA.replace("max_t = 4", "max_t = 0"), "grace_period=1 must be in [1, max_t=0]"),
        # the search's objective: a metric a trial reports, and a direction
        (SEARCH.replace("[search]", '[search]\nmetric = "accuracy"'), "search.metric='accuracy' is not allowed; allowed: 'dev_auc', 'dev_auc_micro',"),
        (SEARCH.replace("[search]", '[search]\nmetric = "val_loss"'), "search.metric='val_loss' is not allowed"),
        (SEARCH.replace("[search]", '[search]\nmode = "maximise"'), "search.mode='maximise' is not allowed; allowed: 'max', 'min'"),
        (SEARCH.replace("[search]", "[search]\nseed = -1"), "search.seed=-1 must be in [0, 4294967295]"),
    ],
)
def test_validation_errors_name_file_and_field(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert str(path) in str(e.value) and needle in str(e.value), str(e.value)


@pytest.mark.parametrize("name", ["../..", "..", ".", "", "a/b", "a\\b", "/tmp/x", "a..b", "-x", "a b", "a:b", "ü"])
def test_sweep_name_is_one_folder_under_results(tmp_path, name):
    """results/<name>/ is written: a name must not escape --results, nor be empty or need quoting."""
    path = write(tmp_path, GRID.replace('name = "t"', f"name = {name!r}".replace("'", '"')))
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert f"{path}: name={name!r} must be a single folder name: letters, digits, '.', '_' and '-'" in str(e.value), str(e.value)


def test_sweep_name_defaults_to_the_file_name_and_follows_the_same_rule(tmp_path):
    assert load_sweep(write(tmp_path, GRID.replace('name = "t"\n', ""), "my-sweep_2.toml")).name == "my-sweep_2"
    with pytest.raises(ConfigError, match="name='my sweep' must be a single folder name.*it is the file's name: set name"):
        load_sweep(write(tmp_path, GRID.replace('name = "t"\n', ""), "my sweep.toml"))


@pytest.mark.parametrize("metric", SEARCH_METRICS)
def test_every_reported_metric_is_a_valid_search_objective(tmp_path, metric):
    spec = load_sweep(write(tmp_path, SEARCH.replace("[search]", f'[search]\nmetric = "{metric}"\nmode = "min"')))
    assert spec.search.metric == metric and spec.search.mode == "min"


def test_trial_metrics_are_what_the_pipeline_reports():
    """TRIAL_METRICS is the numeric AUCs of frame_auc_report (R, L and local L all present) plus `auc`."""
    import numpy as np

    from vadcore.evaluate import frame_auc_report

    rng = np.random.default_rng(0)
    labels, videos = np.tile([0, 0, 1, 1], 4), np.repeat(["v1", "v2"], 8)
    r, l, local = (rng.random(16) for _ in range(3))
    reported = set(frame_auc_report(labels, videos, r, l, local=local)) - {"macro_videos_used", "macro_videos_excluded"}
    assert reported | {"auc"} == set(TRIAL_METRICS)


def test_set_seed_is_rejected_before_anything_runs(tmp_path):
    """--set applies after the sweep's seeds: every trial would run one seed under the others' folder names."""
    spec = load_sweep(write(tmp_path, GRID))
    for call in (lambda: check(spec, extra_sets=["seed=3"]), lambda: expand(spec, extra_sets=["itae_train.epochs=1", "seed=3"])):
        with pytest.raises(ConfigError, match=r"--set seed=\.\.\. is not allowed: the sweep's seeds = \[0, 1\]"):
            call()


def test_cli_error_is_one_line_exit_2(tmp_path, capsys):
    assert main(["show", str(write(tmp_path, "bogus = 1\n" + GRID))]) == 2
    err = capsys.readouterr().err
    assert "unknown field bogus" in err and "Traceback" not in err
    assert main(["show", "no-such-sweep"]) == 2
    assert "allowed: ablation-extra-input, ablation-paths" in capsys.readouterr().err
    assert main(["show", str(write(tmp_path, GRID.replace('name = "t"', 'name = "../.."')))]) == 2
    err = capsys.readouterr().err
    assert "name='../..' must be a single folder name" in err and "Traceback" not in err
    assert main(["show", str(write(tmp_path, GRID)), "--set", "seed=3"]) == 2
    err = capsys.readouterr().err
    assert "--set seed=... is not allowed" in err and "Traceback" not in err


def test_show_prints_shared_stage_keys(capsys, tmp_path):
    assert main(["show", "ablation-paths", "--cache", str(tmp_path)]) == 0
    assert "distinct stages to train: itae 2, flow_app 1, flow_mot 1" in capsys.readouterr().out


def test_a_command_resolves_each_trials_config_once(tmp_path, monkeypatch, capsys):
    """`show` (and `run`, which plans the same way) resolves a trial's config where it makes the trial's plan, and
    nowhere else: a grid of 2 variants x 2 seeds, 4 resolutions (loading the file alone resolves each variant too)."""
    import sweeps.plans
    import sweeps.spec

    calls = []

    def counted(real):
        return lambda *a, **k: calls.append(a[0]) or real(*a, **k)

    for module in (sweeps.plans, sweeps.spec):
        monkeypatch.setattr(module, "resolve_config", counted(module.resolve_config))
    assert main(["show", str(write(tmp_path, GRID)), "--cache", str(tmp_path / "cache")]) == 0
    assert len(calls) == 4, capsys.readouterr()
    load_sweep(write(tmp_path, GRID))
    assert len(calls) == 4 + 2


# ---------------------------------------------------------------------------------------------- per-scene variants

PER_SCENE = GRID + """
[[grid]]
name = "sep"
set = { "flow.mot" = true }
per_scene = true
"""


def test_per_scene_variant_expands_to_one_trial_per_scene(tmp_path):
    from results.layout import per_scene_parts

    plans = expand(load_sweep(write(tmp_path, PER_SCENE)), extra_sets=["itae_train.epochs=1"])
    assert [(p.variant, p.seed) for p in plans] == [("a", 0), ("a", 1), ("b", 0), ("b", 1), *((f"sep@s{k}", s) for k in range(3) for s in (0, 1))]
    sep = [p for p in plans if p.variant.startswith("sep")]
    assert [p.config.data.scenes for p in sep] == [(f"s{k}",) for k in range(3) for _ in (0, 1)]
    assert all(p.config.flow.mot and p.config.score.lambda_L == 0.5 and p.config.itae_train.epochs == 1 for p in sep)
    assert [p.config.data.scenes for p in plans if not p.variant.startswith("sep")] == [()] * 4
    assert sep[2].trial_id == "sep@s1-synthetic-s0" and per_scene_parts(sep[2].variant) == ("sep", "s1")
    assert per_scene_parts("b") is None
    assert "--set 'data.scenes=[\"s1\"]'" in sep[2].command and "--out runs/sep@s1-synthetic-s0" in sep[2].command


def test_per_scene_trials_have_their_own_stages(tmp_path):
    from sweeps.runner import stage_keys

    plans = [p for p in expand(load_sweep(write(tmp_path, PER_SCENE))) if p.seed == 0]
    keys = {p.variant: stage_keys(p, tmp_path / "cache", None) for p in plans}
    assert len({keys[f"sep@s{k}"]["shards_train"] for k in range(3)} | {keys["b"]["shards_train"]}) == 4
    assert len({keys[v]["itae"] for v in keys}) == 4  # a, b share the ITAE over every scene; one per scene for sep


@pytest.mark.parametrize("text, sets, needle", [
    (PER_SCENE.replace("per_scene = true", 'per_scene = "yes"'), None, "grid[2].per_scene='yes' must be bool"),
    (PER_SCENE.replace('"flow.mot" = true }\nper_scene', '"flow.mot" = true, "data.scenes" = ["s0"] }\nper_scene'), None,
     "grid[2].per_scene = true sets each trial's data.scenes to its scene: remove data.scenes from grid[2].set"),
    (PER_SCENE.replace("[fixed.score]", '[fixed.data]\nscenes = ["s0"]\n[fixed.score]'), None, "remove data.scenes from fixed"),
    (PER_SCENE, ['data.scenes=["s0"]'], "--set data.scenes=... is not allowed: variant 'sep' has per_scene = true"),
])
def test_per_scene_conflicts_are_errors(tmp_path, text, sets, needle):
    with pytest.raises(ConfigError) as e:
        expand(load_sweep(write(tmp_path, text)), extra_sets=sets)
    assert needle in str(e.value), str(e.value)


def test_unified_prior_has_the_separate_reference():
    plans = expand(load_sweep("unified-prior"))
    assert [p.variant for p in plans] == ["gaussian", "hgad", "hgad-position", "separate@s0", "separate@s1", "separate@s2"]
    assert {p.config.flow.prior.kind for p in plans[3:]} == {"gaussian"}


def test_seeds_from_the_command_line_replace_the_files(tmp_path):
    """`--seeds 2 5 7` runs the same trials with those seeds (the file says 0, 1); nonsense is refused."""
    spec = load_sweep(write(tmp_path, GRID))
    assert with_seeds(spec, None) is spec
    plans = expand(with_seeds(spec, [2, 5, 7]), extra_sets=["itae_train.epochs=1"])
    assert [(p.variant, p.seed, p.config.seed) for p in plans[:3]] == [("a", 2, 2), ("a", 5, 5), ("a", 7, 7)] and len(plans) == 6
    assert plans[1].trial_id != expand(spec)[1].trial_id  # a seed's trial has its own folder
    for bad in ([], [1, 1], [-1], [2**32]):
        with pytest.raises(ConfigError, match="--seeds"):
            with_seeds(spec, bad)


def test_variants_from_the_command_line_run_part_of_a_grid(tmp_path, capsys):
    """`--variants b` runs only b's trials, in the file's order, under the same ids; names the file lacks, repeats,
    none, or a search sweep are refused with the file's variants listed."""
    spec = load_sweep(write(tmp_path, GRID + '[[grid]]\nname = "c"\nset = {}\n'))
    assert with_variants(spec, None) is spec
    assert [(p.variant, p.seed) for p in expand(with_variants(spec, ["c", "a"]))] == [("a", 0), ("a", 1), ("c", 0), ("c", 1)]
    assert [p.trial_id for p in expand(with_variants(spec, ["b"]))] == [p.trial_id for p in expand(spec) if p.variant == "b"]
    for bad, why in ((["d"], "unknown 'd'"), ([], "one or more distinct"), (["a", "a"], "one or more distinct")):
        with pytest.raises(ConfigError, match=f"--variants.*{why}.*t.toml's variants: a, b, c"):
            with_variants(spec, bad)
    with pytest.raises(ConfigError, match="is a search"):
        with_variants(load_sweep(write(tmp_path, SEARCH, "s.toml")), ["a"])
    assert main(["show", "ablation-paths", "--variants", "both-flows", "--seeds", "0", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 trial(s)" in out and "both-flows-synthetic-s0" in out and "app-itae" not in out


def test_progress_shows_the_dev_auc_of_a_grid_that_scores_the_dev_split(tmp_path):
    """Choices are made on the development split: a grid whose trials all score it reports its best dev AUC while it
    runs, not the test AUC; otherwise the test AUC; a search its objective."""
    from sweeps.runner import progress_metric

    spec = load_sweep(write(tmp_path, GRID))
    assert progress_metric(spec, expand(spec)) == ("auc", "max")
    assert progress_metric(spec, expand(spec, extra_sets=["data.dev=true"])) == ("dev_auc", "max")
    search = load_sweep("search")
    assert progress_metric(search, []) == (search.search.metric, search.search.mode)


def test_trials_that_train_an_itae_launch_before_those_that_wait_for_one(tmp_path):
    """unified-prior's shape: three variants on one ITAE, then two with ITAEs of their own. The first of the three
    and the other two start first, so trials running at once train different ITAEs; the waiting two come last."""
    from sweeps.runner import launch_order, stage_keys

    (tmp_path / "u.toml").write_text('''
name = "u"
benchmarks = ["synthetic"]
[[grid]]
name = "g"
set = { "flow.prior.kind" = "gaussian" }
[[grid]]
name = "h"
set = { "flow.prior.kind" = "hgad", "score.lambda_local" = 0.0 }
[[grid]]
name = "hp"
set = { "flow.prior.kind" = "hgad_position" }
[[grid]]
name = "wide"
set = { "itae.width" = 0.25 }
[[grid]]
name = "tau2"
set = { "itae.tau" = 2 }
''')
    plans = expand(load_sweep(tmp_path / "u.toml"))
    keys = [stage_keys(p, tmp_path / "cache", None) for p in plans]
    order = launch_order(list(range(5)), keys)
    assert [plans[i].variant for i in order] == ["g", "wide", "tau2", "h", "hp"]
    assert launch_order([1, 2, 4], keys) == [1, 4, 2]  # finished trials are not in todo


@pytest.mark.parametrize("name", available())
def test_every_shipped_sweep_file_loads_and_expands_on_ped2(name, data_root):
    """The files in sweeps/ are checked like a user's: every variant resolves on Ped2 (where their headers say they
    are run) under their own profile, before anything would be trained."""
    spec = load_sweep(name)
    check(spec, benchmarks=("ped2",))
    assert expand(spec, benchmarks=["ped2"], data_root=str(data_root))


def test_progress_lines_show_training_epochs_and_an_eta_from_trials_that_trained(capsys):
    """A trial that reused every stage ends in seconds: no ETA from it alone. Once a trial that trained ends, the
    ETA extrapolates from the trials that trained. Replayed epochs print nothing; trained ones one indented line."""
    from types import SimpleNamespace

    from sweeps.trainable import progress_callback

    names = ["cached", "trains", "third"]
    progress = progress_callback(3, None, "max", names, retries=2)
    trials = [SimpleNamespace(trial_id=f"t{i}", config={"plan": i}, last_result={}) for i in range(3)]
    for t in trials:
        progress.on_trial_start(0, trials, t)
    progress.on_trial_result(0, trials, trials[0], {"stage": "itae", "epoch": 1, "epochs": 2, "replayed": True})
    progress.on_trial_complete(0, trials, trials[0])
    progress.on_trial_result(0, trials, trials[1], {"stage": "itae", "epoch": 1, "epochs": 2, "replayed": False, "val_loss": 0.5})
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" — ")[0] for line in out[:3]] == ["[0/3] started cached", "[0/3] started trains", "[0/3] started third"]
    assert out[3].startswith("[1/3] finished cached — 1 done, 2 running, 0 failed") and "ETA" not in out[3]
    assert out[4].startswith("      trains: itae epoch 1/2, val_loss 0.5, ") and len(out) == 5
    progress.on_trial_complete(0, trials, trials[1])
    assert ", ETA " in capsys.readouterr().out


def test_progress_lines_tell_a_lost_trial_run_again_from_one_that_failed_on_its_own(capsys):
    """A lost attempt (Ray's error: its process or node died) says where and which attempt comes next, and is not
    counted as failed; a trial that failed for its own reason (its last result says so) is, with its error."""
    from types import SimpleNamespace

    import ray.exceptions as rx

    from sweeps.trainable import progress_callback

    progress = progress_callback(2, None, "max", ["lost", "diverges"], retries=2)
    died = rx.ActorDiedError()
    lost = SimpleNamespace(trial_id="t0", config={"plan": 0}, last_result={"node_ip": "10.0.0.7"}, num_failures=1, get_pickled_error=lambda: died)
    bad = SimpleNamespace(trial_id="t1", config={"plan": 1}, last_result={"stage": "failed", "error": "FloatingPointError: non-finite loss"})
    for t in (lost, bad):
        progress.on_trial_start(0, [lost, bad], t)
    progress.on_trial_recover(0, [lost, bad], lost)
    progress.on_trial_complete(0, [lost, bad], bad)
    out = capsys.readouterr().out.splitlines()[2:]
    assert out[0].startswith("[0/2] LOST lost (trial process died, 10.0.0.7): running it again, attempt 2 of 3 — 0 done, 1 running, 0 failed"), out
    assert out[1].startswith("[1/2] FAILED diverges: FloatingPointError: non-finite loss — 0 done, 0 running, 1 failed"), out
