"""Several benchmarks as one: `ped2+avenue` is one benchmark whose scenes and videos are its members'.

HGAD's question (one flow over many scenes) needs scenes that differ as much as Ped2's and Avenue's do, and
one model trained over all of them. A composite lists its members' videos under names made unique by the
member's name, and its shards are a manifest over the members' own shards (`vadcore.data.shards`), written at
the composite's size and channels: no member frame is decoded or stored twice.

    ped2 video "01", scene "ped2"                -> "ped2-01", scene "ped2"
    shanghaitech video "01_0014", scene "01"    -> "shanghaitech-01_0014", scene "shanghaitech-01"

A member's single scene named after itself (Ped2's "ped2", Avenue's "avenue") keeps its name; any other scene
is prefixed, so a member's own scenes ("01".."13") survive and never meet another member's.

The development split: the composite has one when every member has one (`has_dev`), made of the members' dev
videos, and `dev_holdout` is the members' held-out training videos, renamed the same way.
"""
from __future__ import annotations

import dataclasses

from vadcore.configtools import stable_hash
from vadcore.data.base import DEV, Benchmark, Split, Video
from vadcore.errors import DataError

SEPARATOR = "+"  # between member names: "ped2+avenue"


def video_id(member: str, video: str) -> str:
    """A member's video id inside a composite."""
    return f"{member}-{video}"


def scene_name(member: str, scene: str) -> str:
    """A member's scene inside a composite: the member's name for its self-named single scene, else prefixed."""
    return member if scene == member else f"{member}-{scene}"


class Composite(Benchmark):
    """The union of distinct member benchmarks (instances given in order); subclasses made by `composite_class`
    set `name`, `member_classes` and `has_dev` as class attributes, so they are known without reading data."""

    member_classes: tuple[type[Benchmark], ...] = ()

    def __init__(self, members: list[Benchmark]):
        super().__init__(next((m.data_root for m in members if m.data_root is not None), None))
        self.members = list(members)

    def videos(self, split: Split) -> list[Video]:
        if split == DEV and not self.has_dev:
            lacking = [m.name for m in self.members if not getattr(m, "has_dev", False)]
            raise DataError(f"benchmark {self.name!r} has no development split: its members {', '.join(lacking)} have none")
        out = [dataclasses.replace(v, id=video_id(m.name, v.id), scene=scene_name(m.name, v.scene))
               for m in self.members for v in m.videos(split)]
        return sorted(out, key=lambda v: v.id)

    def fingerprint(self, split: Split) -> str:
        return stable_hash({m.name: m.fingerprint(split) for m in self.members})

    def dev_holdout(self) -> frozenset[str]:
        """The members' training videos held out to make their dev splits, as composite ids."""
        return frozenset(video_id(m.name, v) for m in self.members for v in getattr(m, "dev_holdout", frozenset)())


def composite_class(name: str, members: tuple[type[Benchmark], ...]) -> type[Composite]:
    """The Composite subclass of the named members: what `vadcore.data.benchmark_class` returns for `name`."""
    has_dev = all(getattr(m, "has_dev", False) for m in members)
    return type(f"Composite[{name}]", (Composite,), {"name": name, "member_classes": members, "has_dev": has_dev, "__module__": __name__})
