"""Executors: where the stages run. An executor is a bounded map from work items to processed records.

The driver hands an executor the planned work, the :class:`~photosift.run.stages.Stages` and a cancel event, and
consumes what it yields: lists of :class:`~photosift.run.stages.Processed` records, in whatever order they finish.
An executor keeps only a bounded number of items in flight, so memory stays flat for any library; on a cancel it
stops taking new work, finishes what is in flight and returns. Another executor is another class with the same
``run`` (Ray Data on a cluster: :mod:`photosift.run.ray_executor`); the driver, the stages and the sink do not
change.
"""

from __future__ import annotations

import threading
from collections.abc import Container, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol

from photosift.core.scanner import FileEntry
from photosift.run.stages import Loaded, Processed, Stages, unbatched


class Executor(Protocol):
    def run(
        self, work: Iterable[FileEntry], stages: Stages, known: Container[str], cancel: threading.Event
    ) -> Iterator[list[Processed]]:
        """Yield the records of every work item (``known``: content hashes that need no inference)."""
        ...


@dataclass
class ThreadExecutor:
    """Decode threads feed the calling thread, which batches and runs the model.

    Pillow, simplejpeg and OpenCV release the GIL, so ``workers`` threads decode while ONNX Runtime runs the
    previous batch on the calling thread: decoding overlaps inference from the first batch. At most
    ``queue_depth`` files are in flight (default: enough to keep the workers busy during a batch), and a batch
    holds at most ``max_batch_bytes`` of tensors (106 photos at 224 px), whatever ``batch_size`` asks.
    """

    workers: int = 2
    batch_size: int = 16
    queue_depth: int | None = None
    max_batch_bytes: int = 64 * 2**20

    def effective_batch(self, stages: Stages) -> int:
        tensor_bytes = 3 * stages.pre.input_size**2 * 4
        return max(1, min(self.batch_size, self.max_batch_bytes // tensor_bytes))

    def run(
        self, work: Iterable[FileEntry], stages: Stages, known: Container[str], cancel: threading.Event
    ) -> Iterator[list[Processed]]:
        batch_size = self.effective_batch(stages)
        depth = self.queue_depth or max(2 * batch_size, 4 * self.workers)
        work_iter = iter(work)
        exhausted = False
        batch: list[Loaded] = []
        in_flight: set[Future[Loaded]] = set()
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="photosift-load")
        try:
            while True:
                while not cancel.is_set() and not exhausted and len(in_flight) < depth:
                    entry = next(work_iter, None)
                    if entry is None:
                        exhausted = True
                        break
                    in_flight.add(pool.submit(stages.load, entry, known))
                if not in_flight:
                    break
                done, in_flight = wait(in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
                ready: list[Processed] = []
                for fut in done:
                    item = fut.result()
                    if item.tensor is None:
                        ready.append(unbatched(item))
                        continue
                    batch.append(item)
                    if len(batch) >= batch_size:
                        yield stages.run_batch(batch)
                        batch = []
                if ready:
                    yield ready
                if exhausted and batch and len(in_flight) <= self.workers:
                    # The tail: only the last files are decoding, so cores are about to idle. Classify what
                    # is ready now, overlapped with those decodes, instead of one last full batch after them
                    # with the decoders idle (measured: several % of a 72-photo run).
                    yield stages.run_batch(batch)
                    batch = []
                if cancel.is_set():
                    break
            # Also on a cancel: what is already decoded costs one short inference, cheaper than decoding again.
            if batch:
                yield stages.run_batch(batch)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
