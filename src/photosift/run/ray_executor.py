"""The cluster executor: the same stages on Ray Data, from one local Ray instance to many machines.

```
driver: scan + plan ─► work (paths) ─► Ray Data ───────────────────────────────────────────► sink (driver)
                                        decode tasks (CPU):            inference actors:
                                        Stages.load — read, sha256,    one ORT session each (num_cpus,
                                        known?, decode, preprocess,    num_gpus), Stages.run_batch —
                                        faces                          infer + postprocess
```

The driver scans and plans as for the local engine and commits every record through the same sink, so the
catalog, its transactions and a rerun's diff are exactly the local ones; only where ``load`` and ``run_batch`` run
changes. Workers never receive the driver's live objects: they rebuild their :class:`Stages` from a picklable
:class:`WorkerSpec` (the model's path and sha256, its card, the album classifier — rules, abstract and personal
heads are plain arrays — and the face detector's factory) once per worker process and run.

What moves over the network, per photo: the file bytes from shared storage to the decode task that reads them
(every engine must read them once); a 0.6 MB tensor from a decode task to an inference actor when they are on
different nodes (Ray Data prefers local ones); ~10 KB of record (probabilities, embedding, category) to the driver.

**Known content** (a moved or copied photo whose hash the catalog already has) is recognised where the hash is
computed, in the decode task, so its bytes are never decoded nor inferred and only its path and hash travel back.
For that the decode tasks get the catalog's known hashes at the start of the run as one sorted array of raw
32-byte digests (10M photos: 320 MB), put once in Ray's object store, which every node maps read-only: a
lookup is a binary search, with no per-task copy. Checking on the driver instead would need a round trip per file
between reading and decoding, or decoding everything. A copy met twice within one run is inferred twice (the
workers' snapshot does not grow during the run); the catalog stores its result once either way.

**Faults**: Ray Data retries a decode task whose worker died and restarts a killed inference actor
(``max_restarts=-1``, ``max_task_retries=-1``: its defaults for actor pools), re-running its batch; the catalog
stores each path once (photos are keyed by path). A cancel stops reading the stream; the executor then ends the
job (``ray.shutdown`` of a local instance, or of this driver's connection) and the sink keeps what was
committed, so a rerun continues from there.

Ray is imported inside this module's functions only: importing photosift never loads it (the ``cluster`` extra).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
import socket
import threading
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np

from photosift.core import errors, imaging
from photosift.core.errors import ClusterError, ModelError, PhotosiftError
from photosift.core.scanner import FileEntry
from photosift.models.card import ModelCard
from photosift.models.session import one_line
from photosift.run.stages import Categorizer, PeopleDetector, Processed, Stages, unbatched

log = logging.getLogger("photosift")

# Files per input block: one inference batch, so a decode task is about a second of work, the driver gets
# records batch by batch (progress, commits and a cancel as fine-grained as locally) and a retried task is cheap.
# The driver puts every block in the object store before the job starts (~1.4 ms each, measured), so a huge
# library gets bigger blocks instead of more: 10M files make 10,000 blocks of 1,000 files (~14 s on the driver;
# Ray Data still hands them on in blocks of at most 128 MB, ~200 tensors).
BATCHES_PER_BLOCK = 1
MAX_INPUT_BLOCKS = 10_000
# Per photo, decoding (with face detection) costs 3-5× the inference core-ms: an actor per 4 CPUs at most.
CPU_SHARE_OF_DECODING = 4


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to build the driver's stages, picklable: no session, no lock, no connection.

    ``categorizer`` is the driver's album classifier (rules and heads are arrays); ``people`` a picklable factory
    (a module-level function) of the face detector, or None. ``key`` names this run's stages in the worker
    processes' cache, so a process that serves two runs builds each run's stages once."""

    model_name: str
    model_path: str
    model_sha256: str
    card: ModelCard
    provider: str = "auto"
    intra_op_threads: int = 1
    categorizer: Categorizer | None = None
    people: Callable[[], PeopleDetector] | None = None
    max_file_bytes: int = imaging.DEFAULT_MAX_FILE_BYTES  # PHOTOSIFT_MAX_FILE_MB, as on the driver
    decode_memory: int = imaging.DEFAULT_DECODE_MEMORY  # each worker process's decode budget
    key: str = field(default_factory=lambda: uuid4().hex)

    def engine(self) -> Any:
        """The ORT engine for this model on this node, after checking the file is the driver's model."""
        from photosift.models.registry import ResolvedModel, sha256_file
        from photosift.models.session import OrtEngine

        path = Path(self.model_path)
        where = f"on node {socket.gethostname()}"
        if not path.is_file():
            raise ModelError(
                f"{path}: model file not found {where} (every node needs the model at the driver's path: "
                "shared storage or the same install)"
            )
        if sha256_file(path) != self.model_sha256:
            raise ModelError(f"{path}: {where} differs from the driver's model (sha256 mismatch)")
        model = ResolvedModel(self.model_name, path, self.model_sha256, "file")
        model.__dict__["card"] = self.card  # the driver read it already
        return OrtEngine(model, provider=self.provider, intra_op_threads=self.intra_op_threads)

    def stages(self, *, infer: bool) -> Stages:
        """Decode tasks (``infer=False``) need only the card's preprocessing and the face detector: no session."""
        engine = self.engine() if infer else _CardOnly(self.card)
        budget = imaging.MemoryBudget(self.decode_memory)
        return Stages(
            engine, self.categorizer, self.people, budget=budget, max_file_bytes=self.max_file_bytes
        )


class _CardOnly:
    """The engine side of a decode task's stages: it has the card that ``Stages.load`` reads, and no model."""

    provider = "none"

    def __init__(self, card: ModelCard) -> None:
        self.card = card

    def run(self, batch: Any) -> dict[str, np.ndarray]:
        raise RuntimeError("decode tasks do not run the model")


class KnownHashes(Container[str]):
    """Content hashes as a sorted array of raw sha256 digests: 32 bytes each, shareable zero-copy by Ray."""

    def __init__(self, digests: np.ndarray) -> None:
        self.digests = digests

    @classmethod
    def of(cls, hashes: Iterable[str]) -> KnownHashes:
        raw = sorted(d for d in map(_digest, hashes) if d is not None)
        return cls(np.array(raw, dtype="S32") if raw else np.empty(0, dtype="S32"))

    def __contains__(self, content_hash: object) -> bool:
        key = _digest(content_hash)
        if key is None or len(self.digests) == 0:
            return False
        i = int(np.searchsorted(self.digests, np.bytes_(key)))
        return i < len(self.digests) and self.digests[i] == key

    def __len__(self) -> int:
        return len(self.digests)


def _digest(content_hash: object) -> bytes | None:
    """The raw sha256 of a hex content hash; None for anything else (it cannot be a file's content hash)."""
    if not isinstance(content_hash, str) or len(content_hash) != 64:
        return None
    try:
        return bytes.fromhex(content_hash)
    except ValueError:
        return None


# -- what runs on the workers ------------------------------------------------------------------------------------
_WORKER_STAGES: dict[tuple[str, bool], Stages] = {}
_WORKER_LOCK = threading.Lock()


def _worker_stages(spec: WorkerSpec, infer: bool) -> Stages:
    """This process's stages for ``spec`` (Ray reuses worker processes across tasks: build them once)."""
    with _WORKER_LOCK:
        stages = _WORKER_STAGES.get((spec.key, infer))
        if stages is None:
            stages = _WORKER_STAGES[(spec.key, infer)] = spec.stages(infer=infer)
        return stages


def decode_block(batch: dict[str, np.ndarray], spec: WorkerSpec, known: np.ndarray) -> dict[str, np.ndarray]:
    """Decode task: ``Stages.load`` on each file of the batch; the loaded items travel pickled (a tensor only
    for files that need inference)."""
    stages = _worker_stages(spec, infer=False)
    hashes = KnownHashes(known)
    items = [
        stages.load(FileEntry(str(p), int(s), int(m)), hashes)
        for p, s, m in zip(batch["path"], batch["size"], batch["mtime_ns"], strict=True)
    ]
    return {"item": _pickled(items)}


class InferActor:
    """Inference actor: one ORT session for its life; ``Stages.run_batch`` on what needs the model."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.stages = _worker_stages(spec, infer=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [pickle.loads(b) for b in batch["item"]]
        out = [unbatched(i) for i in items if i.tensor is None]
        todo = [i for i in items if i.tensor is not None]
        if todo:
            out.extend(self.stages.run_batch(todo))
        return {"record": _pickled(out)}


def _pickled(objs: list[Any]) -> np.ndarray:
    arr = np.empty(len(objs), dtype=object)
    arr[:] = [pickle.dumps(o, protocol=pickle.HIGHEST_PROTOCOL) for o in objs]
    return arr


# -- the driver side ---------------------------------------------------------------------------------------------
def input_blocks(files: int, batch_size: int) -> int:
    return max(1, min(MAX_INPUT_BLOCKS, math.ceil(files / (batch_size * BATCHES_PER_BLOCK))))


def import_ray(local: bool) -> Any:
    """Ray, or a one-line error naming the extra. ``local``: a local instance will be started, so Ray must keep
    it on the loopback interface (its default binds every interface and connects through the host's address)."""
    if local:
        # Ray's own switch for a single-machine instance (what it does on macOS and Windows): 127.0.0.1 only.
        # It is read when Ray is imported; set the constant too in case Ray was imported already.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # photosift sends nothing anywhere: no usage statistics from Ray either.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        import ray
        import ray.data  # the Data library is part of the extra
    except ImportError as exc:
        raise ClusterError(
            f"--engine ray needs the cluster extra: pip install 'photosift[cluster]' ({exc})"
        ) from None
    if local:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


def connect(address: str | None, *, cpus: int | None = None, object_store_mb: int = 1024) -> Any:
    """``ray.init`` as photosift wants it: a running cluster at ``address``, or (None) a new local instance on
    127.0.0.1 with ``cpus`` logical CPUs; no dashboard, Ray's console logs quiet (its log files keep them)."""
    ray = import_ray(local=address is None)
    common: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.ERROR,
        "log_to_driver": False,
    }
    try:
        if address is None:
            ray.init(address="local", num_cpus=cpus, object_store_memory=object_store_mb * 2**20, **common)
        else:
            ray.init(address=address, **common)
    except Exception as exc:
        raise ClusterError(f"cannot start Ray on {address or 'a local instance'}: {one_line(exc)}") from None
    from ray.data import DataContext

    # Ray Data logs every job's plan and progress, and a failed job's stack trace, to the console; the CLI
    # reports its own.
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.CRITICAL)
    _reports_to_log(ray)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI draws its own
    ctx.print_on_execution_start = False
    ctx.wait_for_min_actors_s = (
        600  # inference workers no node can hold: an error after 10 minutes, not a hang
    )
    return ray


@dataclass
class RayExecutor:
    """Runs the stages on Ray Data: decode tasks feed an actor pool of inference workers.

    ``address``: a running cluster (``ray://HEAD:10001``, ``HOST:6379`` or ``auto``); None starts a local
    instance for the run (on ``127.0.0.1``) and stops it after. ``workers``: inference actors (None: from 1 up
    to what the cluster's CPUs, or GPUs, allow). ``cpus_per_worker``/``gpus_per_worker``: what each actor
    reserves; its ORT session gets that many intra-op threads. ``local_cpus``: the local instance's logical CPUs
    (None: the cores plus what the actors reserve, so decoding may use every core while the actors wait for
    batches — the OS shares the cores, as it does for the local engine's threads)."""

    spec: WorkerSpec
    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    batch_size: int = 16
    local_cpus: int | None = None
    object_store_mb: int = 1024  # a local instance's shared memory for blocks in flight

    def run(
        self, work: Iterable[FileEntry], stages: Stages, known: Container[str], cancel: threading.Event
    ) -> Iterator[list[Processed]]:
        """Yield the records of ``work`` as the cluster finishes them; ``stages`` stay on the driver (the
        workers build theirs from :attr:`spec`)."""
        items = list(work)
        if not items:
            return
        ray, started_here = self._connect()
        _ENDING.clear()
        batches: Any = None
        try:
            self._check_fits(ray)
            dataset = self.dataset(ray, items, known)
            batches = iter(dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1))
            for batch in batches:
                yield [pickle.loads(b) for b in batch["record"]]
                if cancel.is_set():
                    break
        except PhotosiftError:
            raise
        except Exception as exc:  # a Ray error: one line, the worker's own typed error where there is one
            raise one_line_error(exc) from None
        finally:
            _ENDING.set()  # what Ray reports about the actors it now stops is no news
            if batches is not None:
                batches.close()  # shuts the streaming job down: no task or actor outlives the run
            if started_here:
                ray.shutdown()

    def _connect(self) -> tuple[Any, bool]:
        """Ray, connected; True when this run made the connection (and so ends it)."""
        ray = import_ray(local=self.address is None)
        if ray.is_initialized():
            return ray, False  # the caller's instance (a notebook, the tests): use it, leave it running
        cpus = self.local_cpus or (os.cpu_count() or 1) + math.ceil(self.pool_cpus())
        return connect(self.address, cpus=cpus, object_store_mb=self.object_store_mb), True

    def _check_fits(self, ray: Any) -> None:
        """An inference worker that no node can hold would wait for one forever. A local instance will never
        grow: refuse at once. A cluster may add nodes on demand (its autoscaler): say so, and Ray Data gives up
        if none has come after ``wait_for_min_actors_s`` (set by :func:`connect`)."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if any(
            r.get("CPU", 0) >= self.cpus_per_worker and r.get("GPU", 0) >= self.gpus_per_worker for r in nodes
        ):
            return
        need = f"{self.cpus_per_worker:g} CPU" + (
            f" and {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        )
        have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes) or "no node"
        if self.address is None:
            raise ClusterError(
                f"no node of the local Ray instance has {need} for an inference worker ({have})"
            )
        log.warning(
            "ray: no node has %s for an inference worker yet (%s); waiting for the cluster to add one",
            need,
            have,
        )

    def describe(self) -> str:
        """One line for the run's notes: where it runs and with what."""
        where = f"Ray cluster at {self.address}" if self.address else "a local Ray instance"
        actors = f"{self.workers}" if self.workers is not None else "1 to as many as the cluster allows"
        gpus = f", {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        return (
            f"engine: ray on {where}; inference workers: {actors} ({self.cpus_per_worker:g} CPU{gpus} each)"
        )

    def pool_cpus(self) -> float:
        return (self.workers or 1) * self.cpus_per_worker

    def dataset(self, ray: Any, work: list[FileEntry], known: Container[str]) -> Any:
        """The streaming dataset: work items ─► decode tasks ─► inference actors (lazy until iterated)."""
        from ray.data import ActorPoolStrategy

        hashes = known if isinstance(known, KnownHashes) else KnownHashes.of(known)  # type: ignore[arg-type]
        rows = [{"path": e.path, "size": e.size, "mtime_ns": e.mtime_ns} for e in work]
        ds = ray.data.from_items(rows, override_num_blocks=input_blocks(len(rows), self.batch_size))
        ds = ds.map_batches(
            decode_block,
            batch_size=self.batch_size,
            batch_format="numpy",
            fn_kwargs={"spec": self.spec, "known": hashes.digests},
            num_cpus=1,
            # A worker process runs any number of decode tasks (Ray's default, stated because the stages cache
            # above relies on it). Stating it also keeps decoding in tasks of its own: Ray Data fuses two map
            # stages whose remote args match, which would decode inside the inference actors.
            max_calls=0,
        )
        pool = (
            ActorPoolStrategy(size=self.workers)
            if self.workers is not None
            else ActorPoolStrategy(min_size=1, max_size=self._max_actors(ray))
        )
        return ds.map_batches(
            InferActor,
            fn_constructor_kwargs={"spec": self.spec},
            batch_size=self.batch_size,
            batch_format="numpy",
            compute=pool,
            num_cpus=self.cpus_per_worker,
            num_gpus=self.gpus_per_worker or None,
        )

    def _max_actors(self, ray: Any) -> int:
        """The autoscaling pool's ceiling: one actor per GPU share; on CPUs, a quarter of the cluster's CPUs,
        since decoding costs ~3× inference per photo (docs/BENCHMARKS.md). Ray Data adds actors only while
        batches queue up in front of them."""
        res = ray.cluster_resources()
        if self.gpus_per_worker > 0:
            return max(1, int(res.get("GPU", 0) / self.gpus_per_worker))
        return max(1, int(res.get("CPU", 1) / (CPU_SHARE_OF_DECODING * self.cpus_per_worker)))


# The last line of a worker's traceback, as Ray's errors carry it: "photosift.core.errors.ModelError: message".
_WORKER_ERROR = re.compile(r"^photosift\.core\.errors\.(\w+): (.+)$", re.M)


def one_line_error(exc: BaseException) -> PhotosiftError:
    """A Ray error as one typed line: the worker's own photosift error (a model missing on a node) when the
    report carries one, else a :class:`ClusterError` with Ray's first line."""
    found = _WORKER_ERROR.findall(str(exc))
    if found:
        name, message = found[-1]
        kind = getattr(errors, name, None)
        if isinstance(kind, type) and issubclass(kind, PhotosiftError) and kind is not errors.UnreadableImage:
            return kind(message)
    return ClusterError(f"the Ray job failed: {one_line(exc)}")


def _reports_to_log(ray: Any) -> None:
    """Ray's driver prints the cluster's error reports (a worker died, a task will be retried) on stdout, each
    with the worker's traceback; photosift's stdout is for results (``--json``). Make each report one warning
    line on stderr instead. Ray looks the printer up by name, so replacing it is enough; a Ray without it keeps
    printing as it did."""
    worker: Any = getattr(getattr(ray, "_private", None), "worker", None)
    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "photosift", False):
        return

    def report(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            original(data, ignore_prefix)
            return
        if _ENDING.is_set():
            return
        for text in data.get("lines", []):
            line = _ANSI.sub("", str(text)).strip().split("\n", 1)[0].split(" Error: Traceback")[0]
            log.warning("ray: %s", line[:300])

    report.photosift = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = report


_ENDING = threading.Event()
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
