"""Sweeps command line: list, show (expanded trials and their stage keys, nothing runs), run, resume, report.

    python -m sweeps list
    python -m sweeps show ablation-paths
    python -m sweeps show ablation-paths --profile paper --benchmarks ped2 --data-root ../shared/data   # + the bill on a GPU
    python -m sweeps run ablation-paths                       # synthetic benchmark, smoke profile, Ray in-process
    python -m sweeps run ablation-paths --benchmarks ped2 --data-root ../shared/data --profile smoke
    python -m sweeps run path/to/my-sweep.toml --set itae_train.epochs=1 --results /tmp/results
    python -m sweeps run search --num-samples 24               # Optuna on the development split, ASHA on ITAE epochs
    python -m sweeps resume ablation-paths                    # same options as the last run; finished trials kept
    python -m sweeps report ablation-paths                    # tables + report.md/html from results/ablation-paths/ (no Ray)
    ray job submit --working-dir . -- python -m sweeps run search --results /shared/vad/results --cache /shared/vad/cache
                                                              # on a cluster: results and cache on storage every node mounts

NAME is a file in sweeps/ (without .toml) or a path to a .toml file. Errors the user can fix print one line
and exit with code 2.
"""
from __future__ import annotations

import argparse
import sys

from vadcore.errors import guarded
from vadcore.paths import CACHE_ENV, DATA_ROOT_ENV, DEFAULT_CACHE, DEFAULT_RESULTS, RAY_ADDRESS_ENV, RESULTS_ENV

RESULTS_HELP = f"results folder (default: ${RESULTS_ENV} or {DEFAULT_RESULTS}/)"


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", help="smoke | laptop | paper (default: the sweep file's)")
    p.add_argument("--benchmarks", nargs="+", help="benchmarks to run (default: the sweep file's)")
    p.add_argument("--data-root", help=f"folder holding ped2/, avenue/, shanghaitech/ (default: ${DATA_ROOT_ENV})")
    p.add_argument("--cache", help=f"shared stage cache (default: ${CACHE_ENV} or {DEFAULT_CACHE})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="config override on every trial, repeatable")
    p.add_argument("--seeds", type=int, nargs="+", help="every trial's seeds (default: the sweep file's seeds)")
    p.add_argument("--variants", nargs="+", metavar="NAME", help="grid sweeps: only these variants (default: all)")
    p.add_argument("--throughput", metavar="FILE", help="the bill's TFLOP/s, measured by benchmarks/gpu_check.py (its throughput.json; "
                   "default: $VAD_THROUGHPUT, else assumed H100 rates, said so)")


def cmd_list(args) -> int:
    from rich.console import Console

    from sweeps.spec import available, load_sweep

    console = Console()
    for name in available():
        spec = load_sweep(name)
        kind = f"grid of {len(spec.grid)}" if spec.grid else f"search, {spec.search.num_samples} samples"
        console.print(f"[bold]{name}[/]: {spec.description} ({kind}; {', '.join(spec.benchmarks)}; {spec.profile})", highlight=False, soft_wrap=True)
    return 0


def cmd_show(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from sweeps.bill import bill_table, load_throughput, sweep_bill
    from sweeps.plans import expand
    from sweeps.runner import stage_keys
    from sweeps.spec import load_sweep, with_seeds, with_variants
    from vadcore.paths import cache_root, data_root as resolve_data_root

    console = Console()
    spec = with_seeds(with_variants(load_sweep(args.name, resolve=False), args.variants), args.seeds)
    root = resolve_data_root(args.data_root)
    data_root = str(root) if root else None
    plans = expand(spec, args.benchmarks, args.profile, args.sets, data_root=data_root)
    table = Table(title=f"{spec.name}: {len(plans)} trial(s)" + (" (search: the base config sampled parameters are set on)" if spec.search else ""))
    for col in ("trial", "itae", "flow_app", "flow_mot", "score"):
        table.add_column(col)
    cache = cache_root(args.cache)
    distinct: dict[str, set[str]] = {}
    all_keys = []
    for p in plans:
        keys = stage_keys(p, cache, data_root)
        all_keys.append(keys)
        for k in ("itae", "flow_app", "flow_mot"):
            if k in keys:
                distinct.setdefault(k, set()).add(keys[k])
        table.add_row(p.trial_id, *(keys.get(k, "-")[:10] for k in ("itae", "flow_app", "flow_mot", "score")))
    console.print(table)
    console.print("distinct stages to train: " + ", ".join(f"{k} {len(v)}" for k, v in distinct.items()), soft_wrap=True)
    for p in plans:
        console.print(f"{p.trial_id}: {p.command}", highlight=False, soft_wrap=True)
    if spec.search:
        console.print("search space: " + ", ".join(f"{k}={v}" for k, v in spec.search.space.items()), highlight=False, soft_wrap=True)
    bill = sweep_bill(plans, all_keys, load_throughput(args.throughput), data_root, cache)
    per = f" per sampled trial (a search of {spec.search.num_samples} samples: up to {spec.search.num_samples}x)" if spec.search else ""
    console.print(bill_table(bill, f"{spec.name}: compute bill{per}, distinct stages"))
    for line in bill.missing:
        console.print(f"not billed: {line}", highlight=False, soft_wrap=True)
    return 0


def _sweep(spec, opts) -> int:
    """Run the sweep and print its summary; on Ctrl-C, once Ray has stopped, what finished, what was interrupted
    and the command that continues it (exit 130)."""
    from rich.console import Console

    from sweeps.runner import SweepInterrupted, run_sweep
    from sweeps.summary import print_summary

    console = Console()
    try:
        records = run_sweep(spec, opts, console)
    except SweepInterrupted as stop:
        print_summary(spec, stop.records, console)
        cut = sorted(r["id"] for r in stop.records if r["status"] == "stopped" and not r.get("stop_reason"))
        done = sum(r["status"] == "finished" for r in stop.records)
        results = f" --results {opts.results}" if opts.results else ""
        console.print(f"interrupted: {done} trial(s) finished and kept, {len(cut)} interrupted ({', '.join(cut) or 'none started'}); "
                      f"continue with: python -m sweeps resume {stop.name}{results}", highlight=False, soft_wrap=True)
        return 130
    print_summary(spec, records, console)
    return 1 if any(r["status"] == "failed" for r in records) else 0


def cmd_run(args) -> int:
    from sweeps.options import RunOptions
    from sweeps.spec import load_sweep

    spec = load_sweep(args.name, resolve=False)  # run_sweep resolves every trial's config, once
    opts = RunOptions(args.profile, args.benchmarks, args.data_root, args.results, args.cache, args.address, args.sets, args.num_samples,
                      args.seeds, args.variants, args.workers_per_trial, args.max_concurrent, args.share_stages, args.throughput)
    return _sweep(spec, opts)


def cmd_resume(args) -> int:
    from sweeps.options import load_run_options
    from sweeps.spec import load_sweep

    file, opts = load_run_options(args.name, args.results)
    if args.address:
        opts.address = args.address
    return _sweep(load_sweep(file, resolve=False), opts)


def cmd_report(args) -> int:
    from results.report import publish
    from sweeps.options import results_name
    from vadcore.errors import ConfigError
    from vadcore.paths import results_root

    results = results_root(args.results)
    name = results_name(args.name, args.results)
    root = results / name
    if not (root / "trials").is_dir() and not (root / "trials.parquet").is_file():
        have = sorted(p.parent.name for p in results.glob("*/trials")) + sorted(p.parent.name for p in results.glob("*/trials.parquet"))
        raise ConfigError(f"no sweep {name!r} in {results}/ (neither trials/ nor trials.parquet); sweeps there: {', '.join(sorted(set(have))) or 'none'}")
    paths = publish(root)
    print("\n".join(f"wrote {p}" for p in paths.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the sweeps in sweeps/").set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="expanded trials, their stage keys, reproducing commands and compute bill; runs nothing")
    p.add_argument("name")
    _run_args(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("run", help="run a sweep on Ray Tune (in-process Ray unless --address / $RAY_ADDRESS)")
    p.add_argument("name")
    _run_args(p)
    p.add_argument("--results", help=RESULTS_HELP + "; the sweep writes <results>/<name>/")
    p.add_argument("--address", help=f"Ray cluster address (default: ${RAY_ADDRESS_ENV}, else Ray starts in-process)")
    p.add_argument("--num-samples", type=int, help="search sweeps: Optuna samples per benchmark (default: the file's search.num_samples)")
    p.add_argument("--workers-per-trial", type=int, help="Ray Train workers per training stage, data-parallel (default: the file's resources.workers, 0)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: the file's max_concurrent; 0: as many as resources allow)")
    p.add_argument("--no-stage-sharing", dest="share_stages", action="store_false",
                   help="every trial trains its own stages, as a plain Ray Tune sweep would (shards stay shared): to measure what sharing buys")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="re-run a sweep with its last options; finished trials and stages are kept")
    p.add_argument("name")
    p.add_argument("--results", help=RESULTS_HELP)
    p.add_argument("--address")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("report", help="aggregate a sweep's trials into Parquet tables and write report.md/html and results/index (no Ray)")
    p.add_argument("name")
    p.add_argument("--results", help=RESULTS_HELP)
    p.set_defaults(func=cmd_report)

    args = parser.parse_args(argv)
    return guarded(args.func, args, "interrupted: `python -m sweeps resume NAME` continues where this stopped")


if __name__ == "__main__":
    sys.exit(main())
