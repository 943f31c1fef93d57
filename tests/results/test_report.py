"""Reports from the tables alone: Table 3 beside the paper's, embedded figures, the index, the CLI, and
`report` working after Ray's folder and even the trial folders are deleted."""
from __future__ import annotations

import fcntl
import re
import shutil
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from results.aggregate import ALL_TRIALS
from results.report import publish, report
from sweeps.__main__ import main
from tests.results.test_aggregate import make_fake_sweep


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    results = tmp_path_factory.mktemp("r") / "results"
    root = make_fake_sweep(results, "ablation-paths", failed="mot-flow")
    return results, root, publish(root)


def test_markdown_has_table3_beside_ours(published):
    results, root, paths = published
    md = paths["report_md"].read_text()
    assert "Table 3" in md
    ped2 = next(line for line in md.splitlines() if line.startswith("| ped2 |"))
    cells = [c.strip() for c in ped2.strip("|").split("|")]
    # App ITAE: ours / paper (difference) (fake auc_micro 0.900 vs the paper's .959)
    assert cells[1] == ".900 / .959 (-.059)"
    assert cells[4] == "— / .973"  # mot-flow failed: no number of ours
    assert any(line.startswith("| avenue |") and ".820" in line for line in md.splitlines())  # paper rows always shown
    assert "dropped frames | none" in md and "RuntimeError: boom" in md
    assert "lambda_i from test-set NLL ranges (Eq. 8) | 4 of 4 finished trials (with both flows) |" in md  # counted, not one trial's flag
    for name in ("roc-ped2", "timeline-ped2"):
        assert f"report_files/{name}.png" in md and (root / "report_files" / f"{name}.png").is_file()


def test_html_is_self_contained(published):
    results, root, paths = published
    page = paths["report_html"].read_text()
    assert page.count("data:image/png;base64,") >= 2
    assert "report_files/" not in page and ".959" in page


def test_index_lists_the_sweep(published):
    results, root, paths = published
    md = (results / "index.md").read_text()
    assert "ablation-paths" in md and "4 ok, 1 failed" in md and "0.9400 (both-flows, ped2)" in md
    assert "href='ablation-paths/report.html'" in (results / "index.html").read_text()


def test_report_needs_only_the_tables(tmp_path):
    results = tmp_path / "results"
    root = make_fake_sweep(results, "ablation-extra-input", variants=("none", "intensity", "error-map"))
    publish(root)
    shutil.rmtree(root / "ray")
    shutil.rmtree(root / "trials")  # not even the trial folders: trials.parquet and frame_scores.parquet suffice
    (root / "report.md").unlink()
    assert main(["report", "ablation-extra-input", "--results", str(results)]) == 0
    md = (root / "report.md").read_text()
    assert "Table 4" in md and ".974" in md
    assert main(["report", "no-such-sweep", "--results", str(results)]) == 2


def test_search_and_unified_prior_sections(tmp_path):
    results = tmp_path / "results"
    md = report(_aggregated(make_fake_sweep(results, "search", variants=("default", "trial-b", "trial-c", "trial-d"), search=True)))["report_md"].read_text()
    assert "Optuna search: objective and held-out AUC" in md and "search-history-ped2.png" in md
    assert "optuna.db not found" in md and "|Spearman" in md  # no study db: the fallback says so
    # the fake objective rises with the variant index, and so does the held-out auc_micro: rank correlation 1
    assert "Spearman rank correlation of dev_auc with the held-out auc_micro over the 4 finished trials: +1.000" in md
    assert "(trial-d: .7500) has held-out auc_micro .9300; the profile's default config (.6000) has .9000: the search beat" in md
    assert "All variants: frame AUC on the development split" in md
    md = publish(make_fake_sweep(results, "unified-prior", variants=("gaussian", "hgad")))["report_md"].read_text()
    assert "Per-scene AUC by prior" in md and "gaussian (prior gaussian)" in md and "hgad (prior hgad)" in md


def _aggregated(root):
    from results.aggregate import aggregate

    aggregate(root)
    return root


def test_html_renders_in_headless_chromium(published, tmp_path):
    import subprocess

    assert shutil.which("chromium"), "headless Chromium is needed for this test: apt-get install -y chromium (./dev does it as root)"
    results, root, paths = published
    png = tmp_path / "report.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
           "--window-size=1400,2400", paths["report_html"].as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=True)
    assert png.stat().st_size > 10_000


def test_the_report_reads_at_900_px_without_scrolling_sideways(tmp_path):
    """Table 3 beside ours on four benchmarks, every variant's ten columns, a reproducing command with a long path:
    in a 900 px wide window the page is no wider than the window (headless Chromium measures it)."""
    import json
    import subprocess

    assert shutil.which("chromium"), "headless Chromium is needed for this test: apt-get install -y chromium (./dev does it as root)"
    root = make_fake_sweep(tmp_path / "results", "ablation-paths", benchmarks=("ped2", "avenue", "shanghaitech", "synthetic"), seeds=(0, 1),
                           failed="mot-flow")
    plan = root / "trials" / "app-itae-ped2-s0" / "plan.json"
    record = json.loads(plan.read_text())
    plan.write_text(json.dumps({**record, "command": record["command"] + " --data-root /a/very/long/path/" + "x" * 120}))
    page = publish(root)["report_html"]
    probe = tmp_path / "probe.html"  # the page, with a script that writes its width into the title
    probe.write_text(page.read_text().replace("</body>", "<script>document.title = 'width ' + document.documentElement.scrollWidth</script></body>"))
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,2000", "--dump-dom",
           probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    assert 600 < int(re.search(r"<title>width (\d+)</title>", dom).group(1)) <= 900


def test_sweep_where_every_trial_failed_reports_it_and_the_folder_keeps_working(tmp_path):
    results = tmp_path / "results"
    publish(make_fake_sweep(results, "first", variants=("a", "b")))
    broken = make_fake_sweep(results, "broken", variants=("x",), seeds=(0, 1), failed="x")
    md = publish(broken)["report_md"].read_text()
    assert "no trial finished: 2 failed" in md and md.count("RuntimeError: boom") == 2
    assert main(["report", "broken", "--results", str(results)]) == 0  # `sweeps report` again: no stale-table crash
    publish(make_fake_sweep(results, "later", variants=("c",)))
    t = pq.read_table(results / ALL_TRIALS)
    assert t.num_rows == 5 and sorted(set(t["sweep"].to_pylist())) == ["broken", "first", "later"]
    index = (results / "index.md").read_text()
    row = next(line for line in index.splitlines() if line.startswith("| broken |"))
    assert "0 ok, 2 failed" in row and "no trial finished: 2 failed" in row
    assert "| first |" in index and "| later |" in index


def _locked(lock: Path) -> bool:
    """Whether another open file holds `lock` (flock locks of separate opens conflict, even in one process)."""
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def test_a_sweep_finishing_while_the_index_is_built_keeps_its_row(tmp_path, monkeypatch):
    """The race, made deterministic: sweep b finishes (table, report, index) just after sweep a listed the sweeps
    for the index. If a's listing is outside the index lock, b runs at once and a's write then drops b's row; under
    the lock, b waits (in a thread) and lists both."""
    from results import report as rep

    results = tmp_path / "results"
    a = make_fake_sweep(results, "a", variants=("x",), failed="x")
    b = make_fake_sweep(results, "b", variants=("y",), failed="y")
    real, b_publish = rep.index_row, []

    def b_finishes_meanwhile(trials):
        if not b_publish:
            b_publish.append(threading.Thread(target=publish, args=(b,)))
            if _locked(results / "index.html.lock"):
                b_publish[0].start()
            else:
                b_publish[0].run()
        return real(trials)

    monkeypatch.setattr(rep, "index_row", b_finishes_meanwhile)
    publish(a)
    if b_publish[0].ident:
        b_publish[0].join()
    index = (results / "index.md").read_text()
    assert "| a |" in index and "| b |" in index


# The floors of vadcore.baselines as trial.json holds them (metrics.baselines.<name>.<auc>), per benchmark and shard
# height: avenue at two resolutions, where frame difference differs and position does not.
FLOOR_AUCS = {("ped2", 64): {"frame_difference": (0.854, 0.710, 0.882), "position": (0.749, 0.749, 0.625)},
              ("avenue", 64): {"frame_difference": (0.689, 0.392, 0.806), "position": (0.734, 0.734, 0.763)},
              ("avenue", 128): {"frame_difference": (0.701, 0.400, 0.810), "position": (0.734, 0.734, 0.763)}}


def _sweep_with_floors(results: Path) -> Path:
    """A fake Table 3 sweep on ped2 and avenue whose finished trials carry floors; avenue's app-itae ran at 128x192,
    the rest at 64x96. Plans get the trial's config, as the runner writes it."""
    import json

    from results.rows import AUCS

    root = make_fake_sweep(results, "ablation-paths", benchmarks=("ped2", "avenue"), failed="mot-flow")
    for d in sorted(root.glob("trials/*")):
        trial, plan = d / "trial.json", json.loads((d / "plan.json").read_text())
        if not trial.is_file():
            continue
        t = json.loads(trial.read_text())
        h = 128 if d.name == "app-itae-avenue-s0" else 64
        t["config"]["data"].update(height=h, width=h * 3 // 2, channels=1)
        t["metrics"]["baselines"] = {name: dict(zip(AUCS, v)) for name, v in FLOOR_AUCS[(plan["benchmark"], h)].items()}
        trial.write_text(json.dumps(t))
        (d / "plan.json").write_text(json.dumps({**plan, "config": t["config"]}))
    return root


def _table_after(md: str, heading: str) -> list[str]:
    """The rows of the first Markdown table after `heading`."""
    lines = md.splitlines()[md.splitlines().index(heading):]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start + 2 : end]


def test_floors_beside_the_variants_in_every_table(tmp_path):
    import pyarrow as pa

    root = _sweep_with_floors(tmp_path / "results")
    paths = publish(root)
    t = pq.read_table(root / "trials.parquet")
    assert t.schema.field("metrics.baselines.frame_difference.auc_micro").type == pa.float64()
    md = paths["report_md"].read_text()

    # Table 3: ours beside the paper's, then a block of floors per benchmark and resolution
    floors = md.split("## Table 3")[1].split("## All variants")[0].split("Floors (no model)")[1]
    assert _table_after(floors, floors.splitlines()[0]) == [
        "| ped2 | baseline: frame difference | 64x96 grey | .854 | .710 | .882 |",
        "| ped2 | baseline: position in video | 64x96 grey | .749 | .749 | .625 |",
        "| avenue | baseline: frame difference | 128x192 grey | .701 | .400 | .810 |",
        "| avenue | baseline: position in video | 128x192 grey | .734 | .734 | .763 |",
        "| avenue | baseline: frame difference | 64x96 grey | .689 | .392 | .806 |",
        "| avenue | baseline: position in video | 64x96 grey | .734 | .734 | .763 |",
    ]

    # all variants: each benchmark's floors right under its variants, numbers in the AUC columns, none in the parts
    rows = _table_after(md, next(line for line in md.splitlines() if line.startswith("## All variants")))
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert [c[:2] for c in cells] == [
        *(["ped2", v] for v in ("app-itae", "app-mot-itae", "app-flow", "mot-flow", "both-flows")),
        ["ped2", "baseline: frame difference"], ["ped2", "baseline: position in video"],
        *(["avenue", v] for v in ("app-itae", "app-mot-itae", "app-flow", "mot-flow", "both-flows")),
        *(["avenue", f"baseline: {b}"] for _ in (128, 64) for b in ("frame difference", "position in video")),
    ]
    assert cells[5][2:] == ["—", "no model, 64x96 grey frames", "0.8540", "0.7100", "0.8820", "—", "—", "—", ""]
    assert cells[-4][3] == "no model, 128x192 grey frames" and cells[-4][4] == "0.7010"

    # protocol: what each floor is and its three AUCs, per benchmark and resolution
    protocol = _table_after(md, "## Protocol")
    position = next(r for r in protocol if r.startswith("| baseline: position in video (ped2, 64x96 grey frames) |"))
    assert "reads no pixel" in position and "auc_micro .749, auc_micro_global .749, auc_macro .625" in position
    assert sum(r.startswith("| baseline: frame difference (avenue") for r in protocol) == 2
    assert "baseline: position in video" in paths["report_html"].read_text()


def test_a_search_shows_the_development_splits_floors(tmp_path):
    """A search's variants table shows development-split AUCs: its floors are metrics.dev_baselines, never the test's."""
    import json

    from results.aggregate import aggregate

    root = make_fake_sweep(tmp_path / "results", "search", variants=("default", "trial-b"), search=True)
    for f in root.glob("trials/*/trial.json"):
        t = json.loads(f.read_text())
        t["metrics"]["baselines"] = {"position": {"auc_micro": 0.749, "auc_micro_global": 0.749, "auc_macro": 0.625}}
        t["metrics"]["dev_baselines"] = {"position": {"auc_micro": 0.512, "auc_micro_global": 0.512, "auc_macro": 0.5}}
        f.write_text(json.dumps(t))
    aggregate(root)
    md = report(root)["report_md"].read_text()
    rows = _table_after(md, "## All variants: frame AUC on the development split, mean ± std over seeds")
    assert rows[-1].startswith("| ped2 | baseline: position in video | — | no model, 32x? frames | 0.5120 | 0.5120 | 0.5000 |")
    assert "0.7490" not in md.split("## All variants")[1].split("##")[0]


@pytest.mark.parametrize("width", [80, 160])
def test_terminal_summary_has_dim_floor_rows_under_the_variants(tmp_path, width):
    import io

    from rich.console import Console

    from sweeps.summary import collect, print_summary
    from sweeps.spec import SweepSpec, Variant

    root = _sweep_with_floors(tmp_path / "results")
    spec = SweepSpec("ablation-paths", root / "ablation-paths.toml", "Table 3", benchmarks=("ped2", "avenue"),
                     grid=tuple(Variant(v) for v in ("app-itae", "app-mot-itae", "app-flow", "mot-flow", "both-flows")))
    out = io.StringIO()
    print_summary(spec, collect(root / "trials"), Console(file=out, width=width, color_system=None))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width, text
    lines = text.splitlines()
    last_variant = max(i for i, line in enumerate(lines) if "both-flows" in line)
    floor_lines = [i for i, line in enumerate(lines) if "0.8540" in line or "0.6890" in line or "0.7010" in line]
    assert len(floor_lines) == 3 and min(floor_lines) > last_variant, text  # ped2, avenue at 64 and at 128
    assert "0.7490" in text and text.count("no model") == 6
    if width >= 120:
        assert "0.8820" in text  # auc_macro: only where the table has room for it
    shown = re.findall(r"\d\.\d+(?: ± \d\.\d+)?", text)  # every number whole on its line, as the record has it
    assert shown and all(len(n.split(".")[-1]) == 4 for n in shown), text
    assert "(stages: t = trained, r = reused)" in text if width >= 120 else "t = trained" not in text  # only beside its column


# ---------------------------------------------------------------------------------------------- unified vs separate models


def _unified_prior_sweep(results: Path) -> Path:
    """results/unified-prior/ by hand: one unified trial over scenes s0, s1 ("gaussian") and separate models
    ("separate@s0", "separate@s1"), with R only (no flow) so every AUC is computable by hand:
    video v0 (s0): R 0, 1, 2, 3, labels 0, 0, 1, 1; video v1 (s1): R 0, 10, 20, 30, labels 0, 1, 1, 1."""
    import json

    import pyarrow as pa

    videos = {"v0": ("s0", [0.0, 1, 2, 3], [0, 0, 1, 1]), "v1": ("s1", [0.0, 10, 20, 30], [0, 1, 1, 1])}
    homogeneous = {"gaussian": {"app": {"all": 0.2, "per_scene": {"s0": 0.1, "s1": 0.3}}, "mot": {"all": 0.4, "per_scene": {"s0": 0.5, "s1": 0.35}}},
                   "separate@s0": {"app": {"all": 0.05, "per_scene": {"s0": 0.05}}, "mot": {"all": 0.15, "per_scene": {"s0": 0.15}}},
                   "separate@s1": {"app": {"all": 0.25, "per_scene": {"s1": 0.25}}, "mot": {"all": 0.45, "per_scene": {"s1": 0.45}}}}
    root = results / "unified-prior"
    for variant, vids in (("gaussian", ["v0", "v1"]), ("separate@s0", ["v0"]), ("separate@s1", ["v1"])):
        d = root / "trials" / f"{variant}-synthetic-s0"
        d.mkdir(parents=True)
        scenes = [videos[v][0] for v in vids]
        (d / "plan.json").write_text(json.dumps({"variant": variant, "benchmark": "synthetic", "seed": 0, "overrides": {},
                                                 "command": f"python -m vadcore run --profile smoke --out runs/{variant}",
                                                 "report_sections": ["per-scene"]}))
        metrics = {"auc_micro": 0.5, "homogeneous": homogeneous[variant],
                   **{f"homogeneous_{p}": homogeneous[variant][p]["all"] for p in ("app", "mot")}}
        config = {"data": {"benchmark": "synthetic", "scenes": [] if variant == "gaussian" else scenes},
                  "flow": {"prior": {"kind": "gaussian"}}, "score": {"lambda_L": 1.0, "lambda_local": 0.0}}
        (d / "trial.json").write_text(json.dumps({"config": config, "metrics": metrics, "stages": {}, "seconds": 1.0, "seed": 0}))
        r = [x for v in vids for x in videos[v][1]]
        nan = [float("nan")] * len(r)
        pq.write_table(pa.table({"video": [v for v in vids for _ in range(4)], "frame": pa.array(list(range(4)) * len(vids), pa.int32()),
                                 "label": pa.array([x for v in vids for x in videos[v][2]], pa.int8()),
                                 "scene": [videos[v][0] for v in vids for _ in range(4)], "score_r": r, "score_nll_app": nan,
                                 "score_nll_mot": nan, "score_l": nan, "score_l_local": nan, "score": r}), d / "frame_scores.parquet")
    return root


def _table_rows(md: str, first_header_cell: str) -> dict[str, list[str]]:
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header_cell} |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_unified_prior_report_joins_separate_models_into_one_row(tmp_path):
    md = publish(_unified_prior_sweep(tmp_path / "results"))["report_md"].read_text()
    rows = _table_rows(md, "synthetic: variant")
    assert list(rows) == ["gaussian (prior gaussian)", "separate (prior gaussian, a model per scene)"]
    # unified: one model, min-max over its whole test set for micro_global (v0's R is 10x smaller: all anomalies
    # above all normals, AUC 1); per video, both videos span [0, 1] and v1's .33 anomaly ties v0's .33 normal frame
    assert rows["gaussian (prior gaussian)"] == ["1", ".967 / 1.000 / 1.000", "1.000 / 1.000 / 1.000", "1.000 / 1.000 / 1.000"]
    # separate: each model normalised over its own scene's test set, then the frames pooled: .967 under both
    assert rows["separate (prior gaussian, a model per scene)"] == ["2", ".967 / .967 / 1.000", "1.000 / 1.000 / 1.000", "1.000 / 1.000 / 1.000"]
    assert "union of their frame scores" in md and "per-scene-synthetic.png" in md
    homogeneous = _table_rows(md, "synthetic: scene")
    assert homogeneous["s0"] == [".100", ".500", ".050", ".150"]  # gaussian app, mot; separate app, mot
    assert homogeneous["s1"] == [".300", ".350", ".250", ".450"]
    assert homogeneous["mean over scenes"] == [".200", ".425", ".150", ".300"]
    assert homogeneous["all test windows"] == [".200", ".400", "—", "—"]
    assert "lower is better" in md


def test_unified_prior_report_without_homogeneous_metrics_says_so(tmp_path):
    import json

    root = _unified_prior_sweep(tmp_path / "results")
    for t in (root / "trials").glob("*/trial.json"):
        record = json.loads(t.read_text())
        record["metrics"] = {"auc_micro": 0.5}
        t.write_text(json.dumps(record))
    md = publish(root)["report_md"].read_text()
    assert "synthetic: no trial reports metrics.homogeneous" in md and "| synthetic: scene |" not in md
    assert _table_rows(md, "synthetic: variant")["separate (prior gaussian, a model per scene)"][1] == ".967 / .967 / 1.000"


def test_a_grid_that_scored_the_dev_split_sets_it_beside_the_test_set(tmp_path, published):
    """Dev AUCs that rank the trials exactly against the test set's: Spearman -1 under both protocols, the
    floors on both splits, one row per variant. A sweep without dev numbers has no such section."""
    import json

    from results.rows import AUCS

    assert "Development split beside the test set" not in published[2]["report_md"].read_text()
    root = make_fake_sweep(tmp_path / "results", "ablation-paths", seeds=(0, 1))
    for d in sorted(root.glob("trials/*")):
        t = json.loads((d / "trial.json").read_text())
        m = t["metrics"]
        m.update(dev_auc_micro=2 - m["auc_micro"], dev_auc_micro_global=2 - m["auc_micro_global"],
                 baselines={"frame_difference": dict(zip(AUCS, (0.85, 0.7, 0.9)))}, dev_baselines={"frame_difference": dict(zip(AUCS, (0.95, 0.9, 0.97)))})
        (d / "trial.json").write_text(json.dumps(t))
    md = publish(root)["report_md"].read_text()
    rows = _table_after(md, "## Development split beside the test set")
    assert [r.split("|")[2].strip() for r in rows] == ["app-itae", "app-mot-itae", "app-flow", "mot-flow", "both-flows", "baseline: frame difference, 32x?"]
    assert rows[0].split("|")[4].strip() == f"{2 - 0.901:.4f} ± 0.0014"  # dev auc_micro of seeds 0 and 1: 1.1, 1.098
    assert [c.strip() for c in rows[-1].split("|")[4:8]] == ["0.9500", "0.9000", "0.8500", "0.7000"]
    assert "over the 10 finished trials: auc_micro -1.000, auc_micro_global -1.000" in md
    assert "| benchmark | variant | seeds | dev +" not in md  # no per-kind numbers, no per-kind table


def test_the_dev_section_shows_each_pseudo_anomaly_kind_beside_its_floor(tmp_path):
    """metrics.dev_kinds.<kind> as "auc_micro / auc_micro_global" means over seeds, kinds in the split's order
    whatever the JSON's, and the frame-difference floor of each kind's copies as the last row."""
    import json

    root = make_fake_sweep(tmp_path / "results", "ablation-paths", seeds=(0, 1))
    for d in sorted(root.glob("trials/*")):
        t = json.loads((d / "trial.json").read_text())
        m, seed = t["metrics"], t["seed"]
        m.update(dev_auc_micro=0.9, dev_auc_micro_global=0.8,
                 dev_kinds={"patch": {"auc_micro": 1.0, "auc_micro_global": 0.9},
                            "object": {"auc_micro": 0.7 + 0.1 * seed, "auc_micro_global": 0.6}},
                 dev_kinds_baselines={"object": {"frame_difference": {"auc_micro": 0.8, "auc_micro_global": 0.75}},
                                      "patch": {"frame_difference": {"auc_micro": 0.7, "auc_micro_global": 0.65}}})
        (d / "trial.json").write_text(json.dumps(t))
    md = publish(root)["report_md"].read_text()
    lines = md.splitlines()
    start = lines.index("| benchmark | variant | seeds | dev +object | dev +patch |")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[start + 2 : start + 8]]
    assert [r[1] for r in rows] == ["app-itae", "app-mot-itae", "app-flow", "mot-flow", "both-flows", "baseline: frame difference, 32x?"]
    assert rows[0] == ["ped2", "app-itae", "0,1", ".750 / .600", "1.000 / .900"]  # object: (0.7 + 0.8) / 2
    assert rows[-1][2:] == ["—", ".800 / .750", ".700 / .650"]


def test_sections_follow_the_sweep_file_not_the_sweep_name(tmp_path):
    """A sweep called ablation-paths whose file asks for nothing gets no Table 3; one of another name that asks for
    `report = ["table3"]` does."""
    plain = publish(make_fake_sweep(tmp_path / "a" / "results", "ablation-paths", report=()))["report_md"].read_text()
    asked = publish(make_fake_sweep(tmp_path / "b" / "results", "my-table-3", report=("table3",)))["report_md"].read_text()
    assert "Table 3" not in plain and "Table 3: contribution of each path and each flow (frame AUC): ours beside the paper's" in asked


def test_native_floors_show_once_per_benchmark_and_every_variant_says_whether_it_beats_them(tmp_path):
    """The native motion floors are one row per benchmark whatever the trials' resolution; each variant's row in
    the report and in the terminal summary says in words whether it is below the strongest floor, from its seeds'
    metrics.below_floor (here ped2's app-itae is below optical flow under both protocols, both-flows under the
    global one only, the rest above every floor)."""
    import io
    import json

    from rich.console import Console

    from sweeps.spec import SweepSpec, Variant
    from sweeps.summary import collect, print_summary

    root = _sweep_with_floors(tmp_path / "results")
    verdicts = {"app-itae-ped2-s0": {"auc_micro": "flow_magnitude 0.916", "auc_micro_global": "flow_magnitude 0.930"},
                "both-flows-ped2-s0": {"auc_micro": "", "auc_micro_global": "flow_magnitude 0.930"}}
    for d in sorted(root.glob("trials/*")):
        if (d / "trial.json").is_file():
            t = json.loads((d / "trial.json").read_text())
            t["metrics"]["baselines"]["flow_magnitude"] = {"auc_micro": 0.916, "auc_micro_global": 0.93, "auc_macro": 0.9}
            t["metrics"]["below_floor"] = verdicts.get(d.name, {"auc_micro": "", "auc_micro_global": ""})
            (d / "trial.json").write_text(json.dumps(t))
    md = publish(root)["report_md"].read_text()
    floors = md.split("## Table 3")[1].split("## All variants")[0]
    assert floors.count("optical flow magnitude | native |") == 2  # ped2 and avenue, once each (avenue ran at two sizes)
    rows = {tuple(c.strip() for c in r.strip("|").split("|")[:2]): r.strip("|").split("|")[-1].strip()
            for r in _table_after(md, next(line for line in md.splitlines() if line.startswith("## All variants")))}
    assert rows[("ped2", "app-itae")] == "BELOW optical flow magnitude: auc_micro (1 of 1 seeds), auc_micro_global (1 of 1 seeds)"
    assert rows[("ped2", "both-flows")] == "BELOW optical flow magnitude: auc_micro_global (1 of 1 seeds)"
    assert rows[("ped2", "app-flow")] == rows[("avenue", "app-itae")] == "above every floor"
    spec = SweepSpec("ablation-paths", root / "ablation-paths.toml", "Table 3", benchmarks=("ped2", "avenue"),
                     grid=tuple(Variant(v) for v in ("app-itae", "app-mot-itae", "app-flow", "mot-flow", "both-flows")))
    out = io.StringIO()
    print_summary(spec, collect(root / "trials"), Console(file=out, width=250, color_system=None))
    text = out.getvalue()
    assert "BELOW optical flow magnitude: micro 1/1, global 1/1" in text and "BELOW optical flow magnitude: global 1/1" in text, text
    assert text.count("above every floor") == 6, text  # the other finished variants: avenue's four, ped2's two
