"""Many processes, one job: ``torchrun ... -m rmis eval`` (one process per GPU, on one or many
nodes, e.g. under SLURM with ``srun torchrun``).

Every rank embeds its share of each dataset's missing files (balanced by duration) on its own
device and writes its own parts into the shared embedding store (:mod:`rmis.store`); rank 0
plans the shares, shows one progress bar for the whole job, then merges, scores and writes the
results. The processes only exchange small Python objects (plans, counts, error messages), so
the process group is always ``gloo``, on GPUs too: nothing large travels between ranks.

Plain ``rmis eval`` (no ``WORLD_SIZE`` above 1 in the environment) never touches
``torch.distributed``.
"""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rmis.errors import RMISError

#: How long a rank waits for the others at a synchronisation point (rank 0 scores a dataset
#: while the others wait; a rank may finish its share long before the slowest one).
TIMEOUT = datetime.timedelta(hours=6)

_current: Dist | None = None


class JobError(RMISError):
    """An error every rank of the job raises together (:meth:`Dist.agree`); rank 0 reports it."""


class Dist:
    """This process's place in a ``torchrun`` job and the few collectives rmis needs."""

    def __init__(self, rank: int, world: int, local_rank: int) -> None:
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self._seq = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        import torch.distributed as td

        box = [obj if self.is_main else None]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        import torch.distributed as td

        out: list[Any] = [None] * self.world
        td.all_gather_object(out, obj)
        return out

    def agree(self, error: str | None) -> None:
        """A synchronisation point: if any rank met an error, every rank raises it (the lowest
        rank's message, naming the rank when it is not rank 0)."""
        errors = self.gather(error)
        for rank, err in enumerate(errors):
            if err is not None:
                raise JobError(err if rank == 0 else f"rank {rank}: {err}")

    def counter(self) -> Counter:
        """A fresh job-wide counter (the same on every rank: created in the same order)."""
        self._seq += 1
        return Counter(f"rmis/count/{self._seq}")


class Counter:
    """A job-wide integer in the process group's key-value store (progress of all ranks)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.store = _default_store()

    def add(self, n: int) -> None:
        if self.store is not None and n:
            self.store.add(self.key, n)

    def value(self) -> int | None:
        return None if self.store is None else int(self.store.add(self.key, 0))


def _default_store() -> Any:
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except (AttributeError, ImportError, RuntimeError, ValueError):
        return None  # no job-wide progress: rank 0 shows its own share


class Poller:
    """Calls ``update(counter value)`` every ``interval`` seconds in a thread, until stopped."""

    def __init__(self, counter: Counter, update: Callable[[int], None], interval=0.5) -> None:
        self.counter, self.update, self.interval = counter, update, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._tick()

    def _tick(self) -> None:
        try:
            value = self.counter.value()
        except Exception:  # the store went away: the job is ending
            return
        if value is not None:
            self.update(value)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._tick()


def current() -> Dist | None:
    """This process's job (None: a plain single-process run)."""
    return _current


def is_quiet() -> bool:
    """True on ranks other than 0: they print nothing (rank 0 reports for the job)."""
    return _current is not None and not _current.is_main


def setup() -> Dist | None:
    """Join the ``torchrun`` job described by the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); None when ``WORLD_SIZE`` is not above 1.
    """
    global _current
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    if _current is None:
        import torch.distributed as td

        if not td.is_available():
            raise RMISError("this torch build has no torch.distributed; run without torchrun")
        if not td.is_initialized():
            td.init_process_group("gloo", timeout=TIMEOUT)
        _current = Dist(td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return _current


def teardown() -> None:
    """Leave the job (end of the command)."""
    global _current
    if _current is None:
        return
    import torch.distributed as td

    if td.is_initialized():
        td.destroy_process_group()
    _current = None


def rank_device(device: str) -> str:
    """The device of this process: under ``torchrun``, ``cuda`` means ``cuda:LOCAL_RANK``."""
    local = os.environ.get("LOCAL_RANK")
    if local is not None and device == "cuda":
        return f"cuda:{int(local)}"
    return device


def shares(durations: Sequence[float], world: int) -> list[list[int]]:
    """Split item indices into ``world`` shares of nearly equal total duration: longest first,
    each to the least-loaded rank (ties: the lower rank), each share back in input order.
    Deterministic."""
    order = sorted(range(len(durations)), key=lambda i: (-durations[i], i))
    load = np.zeros(world)
    out: list[list[int]] = [[] for _ in range(world)]
    for i in order:
        r = int(np.argmin(load))
        out[r].append(i)
        load[r] += durations[i]
    return [sorted(s) for s in out]


def duration(path: Any) -> float:
    """Seconds of audio of a file from its header (the encoded size for an in-memory source,
    or a file whose header cannot be read: it is reported when embedded)."""
    from rmis.audio import is_source

    if is_source(path):
        frames, rate = getattr(path, "frames", 0), getattr(path, "sample_rate", 0)
        return frames / rate if frames and rate else float(path.size) / 32000.0
    try:
        import soundfile as sf

        info = sf.info(str(path))
        return info.frames / info.samplerate
    except Exception:
        try:
            return os.path.getsize(path) / 32000.0
        except OSError:
            return 0.0


__all__ = [
    "Dist",
    "JobError",
    "current",
    "duration",
    "is_quiet",
    "rank_device",
    "setup",
    "shares",
    "teardown",
]
