"""Data-parallel stage training inside a Tune trial: Ray Train starts the ranks, the trial drives them.

A `RayTrain` is the pipeline's launcher (`vadcore.train.in_process` is the one-process one): for each stage the
trial builds, it starts a `TorchTrainer` of N workers (Ray Train V2 sets up the process group: gloo on CPU,
nccl on GPU), every worker runs the stage's build (`vadcore.steps.itae.build_itae`, `vadcore.steps.flow.build_flow`
call `vadcore.train.fit`, which gives each rank its slice of every global batch), rank 0 writes the stage's files
into the build folder and its info beside them, and the trial keeps the stage lock and the atomic rename
(`vadcore.stages.StageStore`). Rank 0's per-epoch records come back through a queue while the workers train
and go to the trial's report callback (Tune, hence ASHA) as they arrive.
"""
from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vadcore import atomic
from vadcore.errors import VadError

INFO = ".rank0-info.json"  # rank 0's info, handed to the trial through the build folder, then removed


@dataclass(frozen=True)
class RayTrain:
    workers: int  # ranks per training stage
    cpu: float = 1.0  # per worker
    gpu: float = 0.0  # per worker

    def __call__(self, build: Callable[[Callable | None], dict[str, Any]], report: Callable | None, out: Path, ranks: int | None = None) -> dict[str, Any]:
        import ray.train
        from ray.train.torch import TorchTrainer
        from ray.util.queue import Empty, Queue

        # outside the trial's placement group (its one-byte bundle holds no CPU for an actor)
        records = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": "DEFAULT"}) if report is not None else None

        def loop(_config: dict) -> None:
            rank = ray.train.get_context().get_world_rank()
            info = build(records.put if records is not None and rank == 0 else None)
            if rank == 0:
                atomic.write_json(out / INFO, info)

        storage = out / ".ray-train"
        trainer = TorchTrainer(
            loop,
            scaling_config=ray.train.ScalingConfig(num_workers=ranks or self.workers, use_gpu=self.gpu > 0,
                                                   resources_per_worker={"CPU": self.cpu, **({"GPU": self.gpu} if self.gpu else {})}),
            run_config=ray.train.RunConfig(storage_path=str(storage), name="stage"),
        )
        outcome: dict[str, Any] = {}
        runner = threading.Thread(target=lambda: outcome.update(result=_fit(trainer)), daemon=True)
        runner.start()
        while records is not None and (runner.is_alive() or not records.empty()):  # rank 0's epochs, as they come
            try:
                report(records.get(timeout=0.2))
            except Empty:
                pass
        runner.join()
        shutil.rmtree(storage, ignore_errors=True)
        if isinstance(outcome.get("result"), BaseException):
            raise outcome["result"]
        info = json.loads((out / INFO).read_text())
        (out / INFO).unlink()
        return info


def _fit(trainer) -> Any:
    """trainer.fit(), with a rank's user error (bad data, a diverging loss) raised as itself: the trial's
    record then says what the user can fix, not that a worker group failed."""
    import ray.train

    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as e:
        for failure in getattr(e, "worker_failures", {}).values():
            cause = getattr(failure, "cause", failure)
            if isinstance(cause, (VadError, FloatingPointError)):
                return cause
        return e
