"""vadcore command line: shard a benchmark, look at its development split, describe the models, run one trial,
look at where a trial's ITAE errs.

    python -m vadcore shard ped2 --data-root ../shared/data --profile smoke
    python -m vadcore shard ped2 --data-root ../shared/data --profile smoke --split dev
    python -m vadcore shard synthetic --profile smoke
    python -m vadcore devsplit ped2 --data-root ../shared/data --profile smoke --out runs/devsplit-ped2
    python -m vadcore errmaps results/laptop-levers/trials/recipe-ped2-s0 --out runs/errmaps-recipe.png
    python -m vadcore describe --profile paper
    python -m vadcore run --benchmark synthetic --profile smoke --out runs/t1
    python -m vadcore run --benchmark ped2 --data-root ../shared/data --profile smoke --set score.lambda_L=0.5 --out runs/t2

Data root: --data-root, else $VAD_DATA_ROOT. Cache (shards, stages): --cache, else $VAD_CACHE, else .cache/vad.
Errors the user can fix print one paragraph and exit with code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vadcore.errors import ConfigError, guarded
from vadcore.paths import CACHE_ENV, DATA_ROOT_ENV, DEFAULT_CACHE, cache_root


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help=f"folder holding ped2/, avenue/, shanghaitech/ (default: ${DATA_ROOT_ENV})")
    p.add_argument("--profile", default="smoke", help="smoke | laptop | paper (default: smoke)")
    p.add_argument("--cache", help=f"cache folder for shards and stages (default: ${CACHE_ENV} or {DEFAULT_CACHE})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")


def cmd_shard(args: argparse.Namespace) -> int:
    from rich.console import Console

    from vadcore.config import resolve_config
    from vadcore.data import DEV, SPLITS, get_benchmark
    from vadcore.data.loader import load_manifest
    from vadcore.data.shards import ShardSpec, ensure_shards

    console = Console()
    cfg = resolve_config(args.benchmark, args.profile, args.sets)
    bench = get_benchmark(args.benchmark, args.data_root)
    splits = args.splits or SPLITS
    if DEV in splits and not bench.has_dev:
        raise ConfigError(f"--split {DEV}: benchmark {args.benchmark!r} has no development split")
    for split in dict.fromkeys(splits):
        spec = ShardSpec(args.benchmark, split, cfg.data.height, cfg.data.width, cfg.data.channels, cfg.data.scenes)
        folder, written = ensure_shards(bench, spec, cache_root(args.cache))
        m = load_manifest(folder)
        state = "written" if written else "already present, nothing to do"
        console.print(
            f"{args.benchmark}/{split}: {m['videos']} videos, {m['frames']} frames, {m['anomalous']} anomalous, "
            f"{len(m['shards'])} shards — {state}: {folder}"
        )
    return 0


def cmd_devsplit(args: argparse.Namespace) -> int:
    """Contact sheets of every pseudo-anomalous dev copy at the profile's shard resolution, one PNG each, then the
    model-free floors on the whole split and on each kind's copies: how hard the split is before anything trains."""
    from rich.console import Console

    from vadcore import atomic
    from vadcore.config import resolve_config
    from vadcore.data import get_benchmark
    from vadcore.data.devsplit import contact_sheet, dev_copies

    cfg = resolve_config(args.benchmark, args.profile, args.sets)
    bench = get_benchmark(args.benchmark, args.data_root)
    held = bench.dev_holdout()
    if not held:
        raise ConfigError(f"benchmark {args.benchmark!r} has no development split made from training videos")
    out, console = Path(args.out), Console()
    console.print(f"{args.benchmark} dev split: training videos held out {', '.join(sorted(held))}")
    for c in dev_copies(bench.videos("train")):
        line = f"  {c.id}: {len(c.labels)} frames, {int(c.labels.sum())} anomalous"
        if c.kind != "normal":
            atomic.write_png(out / f"{c.id}.png", contact_sheet(c, cfg.data.height, cfg.data.width, cfg.data.channels))
            line += f" -> {out / f'{c.id}.png'}"
        console.print(line, highlight=False)
    console.print(_dev_floors(args, cfg, bench))
    return 0


def _dev_floors(args: argparse.Namespace, cfg, bench):
    """A table of `vadcore.baselines`' floors on the dev shards (written if missing), over the whole split and per
    kind, smoothed as the profile's scores: a kind that frame differencing already finds cannot rank models."""
    import numpy as np
    from rich.table import Table

    from vadcore import baselines
    from vadcore.data import DEV
    from vadcore.data.devsplit import kind_masks
    from vadcore.data.shards import ShardSpec, ensure_shards

    d = cfg.data
    folder, _ = ensure_shards(bench, ShardSpec(args.benchmark, DEV, d.height, d.width, d.channels, d.scenes), cache_root(args.cache))
    scores = baselines.baseline_scores(folder)
    groups = {"whole split": np.ones(len(scores["video"]), bool), **{f"+{k}": m for k, m in kind_masks(scores["video"]).items()}}
    table = Table(title=f"floors on the dev split at {d.height}x{d.width} (auc_micro / auc_micro_global), "
                        f"smoothed with sigma {cfg.score.smooth:g} as the profile's scores", title_justify="left")
    for col in ("dev videos", "frames", "anomalous", *(b.replace("_", " ") for b in baselines.BASELINES)):
        table.add_column(col)
    for (name, m), aucs in zip(groups.items(), baselines.group_aucs(scores, groups, cfg.score.smooth).values()):
        table.add_row(name, str(int(m.sum())), str(int(scores["label"][m].sum())),
                      *(f"{aucs[b]['auc_micro']:.3f} / {aucs[b]['auc_micro_global']:.3f}" for b in baselines.BASELINES))
    return table


def cmd_errmaps(args: argparse.Namespace) -> int:
    """One PNG: input, reconstruction and Eq. 7's error of a window of each video of a finished trial's split."""
    from vadcore import atomic
    from vadcore.errmaps import error_rows, sheet

    rows = error_rows(Path(args.trial), cache_root(args.cache), args.split, args.videos)
    atomic.write_png(Path(args.out), sheet(rows))
    for caption, *_ in rows:
        print(f"  {caption}")
    print(f"{len(rows)} rows -> {args.out}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from vadcore.describe import describe

    describe(args.benchmark, args.profile, args.sets)
    return 0


def check_out_folder(value: str) -> None:
    """--out is written only after the whole trial, so a path that cannot be a folder fails here, up front."""
    out = Path(value).expanduser().absolute()
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--out={value!r}: {existing} is not a folder; --out must be a folder (existing or new)")


def cmd_run(args: argparse.Namespace) -> int:
    """One trial in-process; its stages' table and AUCs at the end."""
    check_out_folder(args.out)
    import json

    from rich.console import Console
    from rich.table import Table

    from vadcore.config import resolve_config
    from vadcore.pipeline import run_trial

    console = Console()
    cfg = resolve_config(args.benchmark, args.profile, args.sets)
    trial = run_trial(cfg, args.data_root, cache_root(args.cache), Path(args.out), show=not args.no_progress)
    table = Table(title=f"{cfg.data.benchmark} / {args.profile}: trial in {trial['seconds']:.1f} s")
    for col, justify in (("stage", "left"), ("status", "left"), ("seconds", "right")):
        table.add_column(col, justify=justify)
    for name, s in trial["stages"].items():
        table.add_row(name, s["status"], f"{s['seconds']:.1f}")
    console.print(table)
    m = trial["metrics"]
    keys = [k for k in m if k.startswith(("auc", "r_auc", "l_auc", "local_auc")) and isinstance(m[k], float)]
    console.print(json.dumps({k: round(m[k], 4) for k in keys}), soft_wrap=True)
    console.print(f"wrote {Path(args.out) / 'trial.json'} and frame_scores.parquet", soft_wrap=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vadcore", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("shard", help="write WebDataset shards + manifest for a benchmark (once)")
    p.add_argument("benchmark")
    p.add_argument("--split", dest="splits", action="append", choices=("train", "test", "dev"),
                   help="split to shard, repeatable (default: train and test)")
    _common(p)
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser("devsplit", help="contact sheets (PNG) of the development split's pseudo-anomalies and its floors per kind")
    p.add_argument("benchmark")
    p.add_argument("--out", required=True, help="folder for one <video>+<kind>.png per pseudo-anomalous copy")
    _common(p)
    p.set_defaults(func=cmd_devsplit)

    p = sub.add_parser("errmaps", help="where a finished trial's ITAE errs: input, reconstruction, Eq. 7 error per video (PNG)")
    p.add_argument("trial", help="a finished trial's folder (results/<sweep>/trials/<id>, or a `run --out` folder)")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--split", default="dev", choices=("dev", "train", "test"), help="which scored split's videos (default: dev)")
    p.add_argument("--video", dest="videos", action="append", metavar="ID", help="only this video, repeatable (default: all)")
    p.add_argument("--cache", help=f"the cache the trial ran with (default: ${CACHE_ENV} or {DEFAULT_CACHE})")
    p.set_defaults(func=cmd_errmaps)

    p = sub.add_parser("describe", help="print ITAE layer shapes (Table 1) and parameter counts")
    p.add_argument("--benchmark", default="synthetic")
    _common(p)
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("run", help="run one trial in-process (no Ray): shards -> ITAE -> flows -> scores -> AUC")
    p.add_argument("--benchmark", default="synthetic")
    p.add_argument("--out", required=True, help="folder for trial.json and frame_scores.parquet")
    p.add_argument("--no-progress", action="store_true", help="no live progress bars")
    _common(p)
    p.set_defaults(func=cmd_run)

    from vadcore.data.cli import add_parser as add_data_parser  # data fetch | data check

    add_data_parser(sub)

    args = parser.parse_args(argv)
    return guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
