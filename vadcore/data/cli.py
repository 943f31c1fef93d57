"""`python -m vadcore data`: get a benchmark as its authors publish it, and check a data root before a sweep.

    python -m vadcore data fetch ped2 --to ~/vad-data          # UCSD's archive (706 MB, Ped1 + Ped2): Ped2 kept, checked
    python -m vadcore data fetch avenue --to ~/vad-data        # Avenue's videos zip and labels zip
    python -m vadcore data fetch shanghaitech --to ~/vad-data
    python -m vadcore data fetch ped2 --to ~/vad-data --from ~/Downloads/UCSD_Anomaly_Dataset.tar.gz
    python -m vadcore data fetch ped2 --to ~/vad-data --mirror http://mirror.example.edu/vad/ --sha256 HEX
    python -m vadcore data check --data-root ~/vad-data        # every benchmark there (or name some)

Interrupted at any point, the same command again finishes the job (vadcore/data/fetch.py says how).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    """The `data` subcommand and its two verbs, on the CLI's subparsers."""
    from vadcore.data.archives import ARCHIVES

    data = sub.add_parser("data", help="fetch a benchmark's published archives; check a data root",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = data.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("fetch", help="download, verify (SHA-256) and unpack a benchmark into DIR/NAME, then check it")
    p.add_argument("benchmark", metavar="NAME", help=f"one of {', '.join(ARCHIVES)}")
    p.add_argument("--to", required=True, metavar="DIR", help="the data root: NAME/ is made in it (use it as --data-root)")
    p.add_argument("--from", dest="local", action="append", default=[], metavar="FILE",
                   help="an archive already downloaded, under its published name (repeatable); never modified")
    p.add_argument("--mirror", metavar="URL", help="download URL/FILE instead of the published address (same file names)")
    p.add_argument("--sha256", dest="sums", action="append", default=[], metavar="[FILE=]HEX",
                   help="expect this SHA-256 instead of the published one (FILE= where NAME has several archives)")
    p.add_argument("--keep-archives", action="store_true", help="keep downloaded archives in DIR/.downloads/")
    p.add_argument("--cache", help="where `data check` remembers what passed (default: $VAD_CACHE or .cache/vad)")
    p.add_argument("--no-progress", action="store_true", help="no live progress bars")
    p.set_defaults(func=cmd_fetch)

    p = verbs.add_parser("check", help="videos, frames, labels and first/last frames of each benchmark under a data root")
    p.add_argument("benchmarks", nargs="*", metavar="NAME", help="only these (default: every benchmark folder found)")
    p.add_argument("--data-root", help="the folder holding ped2/, avenue/, shanghaitech/ (default: $VAD_DATA_ROOT)")
    p.add_argument("--cache", help="where a check that passed is remembered (default: $VAD_CACHE or .cache/vad)")
    p.add_argument("--no-progress", action="store_true", help="no live progress bars")
    p.set_defaults(func=cmd_check)


def _say():
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    return lambda text, style=None: console.print(Text(text, style=style or ""))


def cmd_fetch(args: argparse.Namespace) -> int:
    from vadcore.data.fetch import fetch, sources

    to = Path(args.to).expanduser().resolve()
    srcs = sources(args.benchmark, to, args.mirror, args.local, args.sums)
    say = _say()
    fetch(args.benchmark, to, srcs, keep_archives=args.keep_archives, show=not args.no_progress, say=say)
    return _check([args.benchmark], to, args, say)


def cmd_check(args: argparse.Namespace) -> int:
    return _check(args.benchmarks, args.data_root, args, _say())


def _check(names: list[str], data_root, args: argparse.Namespace, say) -> int:
    from vadcore.paths import cache_root
    from vadcore.data import resolve_data_root
    from vadcore.data.check import check_data_root

    checked = check_data_root(names, data_root, cache_root(args.cache), show=not args.no_progress, say=say)
    say(f"{', '.join(checked)} ready: pass --data-root {resolve_data_root(data_root)} to `vadcore run` or `sweeps run`", "bold green")
    return 0
