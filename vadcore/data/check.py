"""`python -m vadcore data check`: is a data root fit for trials? Asked before a sweep spends hours on it.

For each benchmark found (or named): videos and frames per split beside the published benchmark's video count,
each test video's labels against its frames, the first and the last frame of every video decoded (a cut-short
download shows there), frame sizes and bytes on disk. The first problem is a DataError (exit 2) naming the file.

A benchmark that passed is remembered under the cache by its folder and its split fingerprints (file names and
sizes: the key its shards are written under), so the check before every sweep lists files and decodes nothing
until one changes.

    python -m vadcore data check --data-root ../shared/data ped2 avenue
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from vadcore import atomic
from vadcore.configtools import stable_hash
from vadcore.data import BENCHMARKS, NEEDS_DATA, SPLITS, Benchmark, benchmark_members, get_benchmark, resolve_data_root
from vadcore.data.decode import count_mismatch, list_frames, probe
from vadcore.errors import DataError
from vadcore.progress import progress_bar

CHECK_FORMAT = 1  # bump when the check asks more of a benchmark, to check remembered ones again


@dataclass(frozen=True)
class SplitSummary:
    videos: int
    published: int  # videos of the split in the published benchmark (0: not known)
    frames: int
    anomalous: int | None  # None for training splits
    sizes: list[str]  # distinct frame sizes, "HxW"
    bytes: int  # frames or video files on disk
    where: str  # the folder holding the split's videos

    def line(self, split: str) -> str:
        videos = f"{self.videos} of {self.published}" if self.published else str(self.videos)
        labels = f"{self.anomalous:,} anomalous" if self.anomalous is not None else ""
        return (f"  {split:<5} {videos:>9} videos {self.frames:>8,} frames {labels:<17} {', '.join(self.sizes):<8} "
                f"{self.bytes / 1e6:>9,.1f} MB  in {self.where}")


def check_split(bench: Benchmark, split: str, show: bool) -> SplitSummary:
    """Every video of the split probed (`vadcore.data.decode.probe`); a DataError at the first problem."""
    videos = bench.videos(split)  # listing checks the layout and reads the label files
    frames = anomalous = size = 0
    sizes: set[tuple[int, int]] = set()
    with progress_bar(f"{bench.name} {split}", len(videos), enabled=show) as advance:
        for v in videos:
            n, first, last = probe(v.source)
            if v.labels is not None and len(v.labels) != n:
                raise count_mismatch(v.source, n, v.label_source, len(v.labels))
            if first.shape != last.shape:
                raise DataError(f"{v.source}: the first frame is {first.shape[1]}x{first.shape[0]} but the last is "
                                f"{last.shape[1]}x{last.shape[0]}; a video's frames must share one size")
            frames += n
            anomalous += 0 if v.labels is None else int(v.labels.sum())
            sizes.add(first.shape[:2])
            size += sum(f.stat().st_size for f in (list_frames(v.source) if v.source.is_dir() else [v.source]))
            advance(1)
    where = Path(videos[0].source).parent
    return SplitSummary(len(videos), bench.published.get(split, 0), frames, anomalous if split == "test" else None,
                        [f"{h}x{w}" for h, w in sorted(sizes)], size, str(where))


def check_data_root(names: list[str] | tuple[str, ...] = (), data_root: str | Path | None = None, cache: Path | None = None,
                    *, show: bool = False, say: Callable[[str], None] = print) -> dict[str, dict[str, SplitSummary]]:
    """Check the named benchmarks (composites: their members; synthetic needs no files), or, with no names, every
    benchmark whose folder is under the root. {benchmark: {split: summary}}; a DataError at the first problem.
    `cache` (default: the stage cache, $VAD_CACHE or .cache/vad) remembers benchmarks that passed."""
    if cache is None:
        from vadcore.paths import cache_root

        cache = cache_root(None)
    members = [m for name in names for m in benchmark_members(name) if m in NEEDS_DATA]
    if not names:
        root = resolve_data_root(data_root)
        if root is None or not root.is_dir():
            raise DataError(f"data root {root} does not exist" if root else "no data root: pass --data-root DIR or set $VAD_DATA_ROOT")
        members = [m for m in BENCHMARKS if m in NEEDS_DATA and (root / m).is_dir()]
        if not members:
            raise DataError(f"no benchmark found under data root {root}: expected {', '.join(f'{m}/' for m in BENCHMARKS if m in NEEDS_DATA)} "
                            f"there (`python -m vadcore data fetch NAME --to DIR` makes one)")
    return {m: _checked(get_benchmark(m, data_root), cache, show, say) for m in dict.fromkeys(members)}


def _checked(bench: Benchmark, cache: Path, show: bool, say: Callable[[str], None]) -> dict[str, SplitSummary]:
    key = stable_hash({"format": CHECK_FORMAT, "benchmark": bench.name, "root": str(bench.data_root),
                       **{s: bench.fingerprint(s) for s in SPLITS}})
    record = cache / "data-checks" / f"{bench.name}-{key}.json"
    if record.is_file():
        summary = {s: SplitSummary(**d) for s, d in json.loads(record.read_text()).items()}
        say(f"{bench.name}: checked before, unchanged since ({record.name})")
    else:
        summary = {s: check_split(bench, s, show) for s in SPLITS}
        atomic.write_json(record, {s: asdict(d) for s, d in summary.items()})
        say(f"{bench.name}: every video's first and last frame decode, every test video has one label per frame")
    for s, d in summary.items():
        say(d.line(s))
    return summary

