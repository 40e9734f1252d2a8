"""Fault injection: run the real `photosift` CLI through what a real library and machine do to it, and count.

Each scenario builds its files in a work folder, runs `python -m photosift ...` as subprocesses and returns a
:class:`FaultResult`: how many faults it tried, how many files were lost (a file of the corpus without its row
after the final clean run, or a committed row that later vanished), how many wrong results were kept (a stored
content hash that is not the file's), and how many tracebacks reached a user. The goal for the last three is 0.

* ``odd_names``: names that are not UTF-8, newlines, brackets, NFC/NFD twins, 255-byte names, 3 KB paths.
* ``special_files``: a 4 GB sparse .jpg, a FIFO, a /dev/zero symlink, a folder named .jpg, an unreadable file
  (as root: run without the capabilities that let root read any file), an empty and a truncated JPEG.
* ``swapped_files``: files swapped atomically (mtime kept, as ``rsync -t`` does) while a run reads them.
* ``catalog_faults``: a damaged catalog (then ``doctor --recover``), another program's database, a JPEG as
  ``--db``, a read-only catalog, a catalog locked by another process.
* ``disk_full``: the catalog on a tiny tmpfs that fills mid-run, then more space and a rerun (needs a mount
  namespace: root, or unprivileged user namespaces; skipped with the reason otherwise).
* ``sigkill``: SIGKILL a seeded random delay after a run's first commit (scan, decode, commit), then a run to
  the end.

``tools/fault_suite.py`` runs them at scale and prints the table of docs/RELIABILITY.md; tests/test_faults.py
runs them small. ``target_env`` lets the suite run another checkout's photosift (the numbers before a fix).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from photosift.bench.corpus import default_sources, small_jpeg_bytes, with_comment

TRACEBACK = b"Traceback (most recent call last)"


@dataclass
class FaultResult:
    fault: str
    tried: int = 0
    files_lost: int = 0
    wrong_kept: int = 0
    tracebacks: int = 0
    skipped: str = ""  # why this machine could not run it
    notes: list[str] = field(default_factory=list)


@dataclass
class Suite:
    """Where to work and which photosift to run (``env``: e.g. PYTHONPATH of another checkout)."""

    work: Path
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 600.0

    def run(
        self,
        *args: str | bytes | Path,
        extra_env: dict[str, str] | None = None,
        result: FaultResult | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        res = subprocess.run(
            [sys.executable, "-m", "photosift", *map(_arg, args)],
            capture_output=True,
            timeout=self.timeout,
            env={**os.environ, **self.env, **(extra_env or {})},
        )
        if result is not None:
            result.tracebacks += _tracebacks(res.stdout + res.stderr)
        return res

    def popen(self, *args: str | Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "photosift", *map(_arg, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **self.env},
        )

    def folder(self, name: str) -> Path:
        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


def _arg(value: str | bytes | Path) -> str | bytes:
    return value if isinstance(value, str | bytes) else str(value)


def _tracebacks(output: bytes) -> int:
    return output.count(TRACEBACK)


def photos(folder: Path, count: int, seed: int = 0, prefix: str = "p") -> list[Path]:
    """``count`` small distinct JPEGs (distinct bytes, so distinct hashes) in ``folder``."""
    sources = default_sources()
    base = small_jpeg_bytes(sources[seed % len(sources)], seed=seed)
    made = []
    for i in range(count):
        path = folder / f"{prefix}{i:04d}.jpg"
        path.write_bytes(with_comment(base, b"%d-%d" % (seed, i)))
        made.append(path)
    return made


def stored(db: Path) -> dict[bytes, tuple[str, str | None, bool]]:
    """Every photo row by the exact bytes of its path: (status, content hash, has a result)."""
    from photosift.core.catalog import from_db_path

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT p.path, p.status, p.content_hash, "
            "EXISTS(SELECT 1 FROM results r WHERE r.content_hash = p.content_hash) FROM photos p"
        ).fetchall()
    finally:
        con.close()
    return {os.fsencode(from_db_path(p)): (s, h, bool(r)) for p, s, h, r in rows}


def _missing(expected: Sequence[bytes | Path], db: Path) -> int:
    have = stored(db) if db.is_file() else {}
    return sum(1 for p in expected if os.fsencode(p) not in have)


def _sha(path: str | bytes | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# -- odd names ---------------------------------------------------------------------------------------------------
def odd_names(suite: Suite) -> FaultResult:
    result = FaultResult("odd file names (not UTF-8, newline, brackets, NFC/NFD, 255-byte, 3 KB path)")
    lib = suite.folder("odd")
    root = os.fsencode(lib)
    deep = os.path.join(root, *([b"d" * 200] * 15))
    os.makedirs(deep)
    os.mkdir(os.path.join(root, b"caf\xe9"))
    names = [
        b"m\xe9nu.jpg",
        b"caf\xe9/chat.jpg",
        b"line\nbreak.jpg",
        b"tab\there\r.jpg",
        b"[holiday] beach [red].jpg",
        b"x[" + b"]y.jpg",
        "caf\u00e9.jpg".encode(),
        "cafe\u0301.jpg".encode(),
        b"-rf --db.jpg",
        b"l" * 251 + b".jpg",
        os.path.relpath(os.path.join(deep, b"deep.jpg"), root),
    ]
    sources = photos(suite.folder("odd-src"), len(names), seed=1)
    expected = []
    for name, source in zip(names, sources, strict=True):
        target = os.path.join(root, name)
        shutil.copy(os.fsencode(source), target)
        expected.append(target)
    result.tried = len(names)
    db = suite.work / "odd.db"
    db.unlink(missing_ok=True)
    first = suite.run("classify", lib, "--db", db, "--no-people", result=result)
    if first.returncode != 0:
        result.notes.append(f"classify exit {first.returncode}")
    result.files_lost = _missing(expected, db)
    again = suite.run("classify", lib, "--db", db, "--no-people", "--json", result=result)
    if b'"unchanged": %d' % len(names) not in again.stdout:
        result.notes.append("rescan did not find every stored name")
    for fmt in ("json", "csv", "table"):
        out = suite.run("results", "--db", db, "--format", fmt, result=result)
        try:
            out.stdout.decode("utf-8")
        except UnicodeDecodeError:
            result.notes.append(f"results --format {fmt}: output is not valid UTF-8")
    return result


# -- special files -------------------------------------------------------------------------------------------------
def without_root_reads(env: dict[str, str]) -> list[str]:
    """A command prefix under which root obeys file permissions (root reads any file otherwise): root without
    CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (it still reads its own checkout, wherever that is), else `nobody`
    (which needs a checkout others may read); [] when neither works here."""
    if shutil.which("setpriv") is None:
        return []
    for prefix in (
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search"],
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
    ):
        probe = subprocess.run(
            [*prefix, sys.executable, "-c", "import photosift"], capture_output=True, env=env
        )
        if probe.returncode == 0:
            return prefix
    return []


def special_files(suite: Suite) -> FaultResult:
    result = FaultResult(
        "huge and special files (4 GB sparse, FIFO, /dev/zero link, folder .jpg, no permission)"
    )
    # A world-writable folder outside the work dir (which may be private), so that a run as `nobody` (the
    # fallback of without_root_reads) can write its catalog there.
    base = Path(tempfile.mkdtemp(prefix="photosift-faults-"))
    os.chmod(base, 0o777)
    lib = base / "lib"
    lib.mkdir()
    good = photos(lib, 3, seed=2)
    with (lib / "sparse.jpg").open("wb") as f:
        f.truncate(4 * 2**30)
    os.mkfifo(lib / "fifo.jpg")
    (lib / "zero.jpg").symlink_to("/dev/zero")
    (lib / "folder.jpg").mkdir()
    (lib / "empty.jpg").write_bytes(b"")
    (lib / "truncated.jpg").write_bytes(good[0].read_bytes()[:300])
    secret = lib / "secret.jpg"
    secret.write_bytes(good[1].read_bytes() + b"x")
    secret.chmod(0)
    result.tried = 7
    db = base / "c.db"
    env = {"PHOTOSIFT_DATA_DIR": str(base / "data"), "PHOTOSIFT_CONFIG_DIR": str(base / "config")}
    prefix: list[str] = []
    if os.geteuid() == 0:
        prefix = without_root_reads({**os.environ, **suite.env, **env})
        if not prefix:
            result.notes.append(
                "root, and no way to drop the right to read any file: the unreadable file is read"
            )
    res = subprocess.run(
        [*prefix, sys.executable, "-m", "photosift", "classify", str(lib), "--db", str(db), "--no-people"],
        capture_output=True,
        timeout=suite.timeout,
        env={**os.environ, **suite.env, **env},
    )
    result.tracebacks += _tracebacks(res.stdout + res.stderr)
    if res.returncode != 0:
        result.notes.append(f"classify exit {res.returncode}: {res.stderr[-300:]!r}")
    result.files_lost = _missing([*good, lib / "sparse.jpg", lib / "empty.jpg", lib / "truncated.jpg"], db)
    if prefix and secret.exists():
        have = stored(db).get(os.fsencode(secret)) if db.is_file() else None
        if have is None or have[0] != "error":
            result.notes.append("the unreadable file was not recorded as an error")
    shutil.rmtree(base, ignore_errors=True)
    return result


# -- files swapped while a run reads them ----------------------------------------------------------------------------
def swapped_files(suite: Suite, files: int = 40, seconds: float = 20.0, seed: int = 0) -> FaultResult:
    """Swap files between two versions (different sizes, the same mtime: rsync -t) while classify runs."""
    result = FaultResult("files swapped during a run (atomic rename, mtime kept)")
    lib = suite.folder("swap")
    versions = suite.folder("swap-versions")
    a = photos(versions, files, seed=3, prefix="a")
    b = [versions / f"b{i:04d}.jpg" for i in range(files)]
    for i, path in enumerate(b):
        path.write_bytes(
            a[i].read_bytes() + b"\xff\xd9" * (1 + i % 7)
        )  # another content and size, still a JPEG
    mtime = time.time_ns() - 3600 * 10**9
    targets = [lib / f"{i:04d}.jpg" for i in range(files)]
    rng = random.Random(seed)

    def put(i: int, source: Path) -> None:
        tmp = lib / f".tmp-{i}"
        shutil.copyfile(source, tmp)
        os.utime(tmp, ns=(mtime, mtime))
        os.replace(tmp, targets[i])

    for i in range(files):
        put(i, a[i])
    db = suite.work / "swap.db"
    db.unlink(missing_ok=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stop = threading.Event()

        def swapper(stop: threading.Event = stop) -> None:
            while not stop.is_set():
                i = rng.randrange(files)
                put(i, rng.choice((a[i], b[i])))
                result.tried += 1
                time.sleep(0.002)

        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        suite.run(
            "classify", lib, "--db", db, "--batch-size", "2", "--workers", "2", "--no-people", result=result
        )
        stop.set()
        thread.join()
    suite.run("classify", lib, "--db", db, "--no-people", result=result)  # the library at rest
    have = stored(db)
    for path in targets:
        row = have.get(os.fsencode(path))
        if row is None:
            result.files_lost += 1
        elif row[1] != _sha(path):
            result.wrong_kept += 1
    return result


# -- the catalog file ----------------------------------------------------------------------------------------------------
HOLD_LOCK = (
    "import sqlite3, sys, time\ndb = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "db.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\ntime.sleep(120)\n"
)


def _one_error(
    res: subprocess.CompletedProcess[bytes], result: FaultResult, what: str, code: int = 1
) -> None:
    lines = [line for line in res.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if res.returncode != code or len(lines) != 1 or not lines[0].startswith("error: "):
        result.notes.append(f"{what}: exit {res.returncode}, {len(lines)} stderr lines")


def catalog_faults(suite: Suite) -> FaultResult:
    result = FaultResult("damaged, foreign, non-SQLite, read-only and locked catalogs")
    lib = suite.folder("cat-lib")
    corpus = photos(lib, 60, seed=4)
    db = suite.work / "cat.db"
    for leftover in suite.work.glob("cat*.db*"):
        leftover.unlink()
    suite.run("classify", lib, "--db", db, "--no-people", result=result)
    # damaged: 8 KB of garbage in the middle; refused before any write, recovered, and a rerun completes it
    data = bytearray(db.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8192] = random.Random(5).randbytes(8192)
    db.write_bytes(bytes(data))
    result.tried += 1
    _one_error(
        suite.run("classify", lib, "--db", db, "--no-people", result=result), result, "damaged classify"
    )
    if db.read_bytes() != bytes(data):
        result.notes.append("the damaged catalog was written to")
    recovered = suite.work / "cat-recovered.db"
    suite.run("doctor", "--db", db, "--recover", recovered, result=result)
    if recovered.is_file():
        suite.run("classify", lib, "--db", recovered, "--no-people", result=result)
        result.files_lost += _missing(corpus, recovered)
    else:
        result.files_lost += len(corpus)
        result.notes.append("no recovered catalog")
    # another program's database, and a photo passed as --db: refused and byte-identical
    other = suite.work / "cat-other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE notes (body TEXT)")
    con.execute("INSERT INTO notes VALUES ('keep me')")
    con.commit()
    con.close()
    for target in (other, corpus[0]):
        before = target.read_bytes()
        result.tried += 1
        _one_error(
            suite.run("classify", lib, "--db", target, "--no-people", result=result), result, target.name
        )
        if target.read_bytes() != before:
            result.files_lost += 1
            result.notes.append(f"{target.name} was changed")
    # read-only: a read-only mount when we are root (root writes through file modes), else file modes
    result.tried += 1
    good = suite.work / "cat-good.db"
    if recovered.is_file():
        shutil.copy(recovered, good)
    else:
        suite.run("classify", lib, "--db", good, "--no-people", result=result)
    extra = photos(suite.folder("cat-new"), 2, seed=6)
    if os.geteuid() == 0 and shutil.which("unshare"):
        script = (
            f'mount --bind "{suite.work}" "{suite.work}" && mount -o remount,ro,bind "{suite.work}" && '
            f'"{sys.executable}" -m photosift classify "{extra[0].parent}" --db "{good}" --no-people'
        )
        res = subprocess.run(
            ["unshare", "-m", "sh", "-c", script], capture_output=True, env={**os.environ, **suite.env}
        )
    else:
        good.chmod(0o444)
        suite.work.chmod(0o555)
        try:
            res = suite.run("classify", extra[0].parent, "--db", good, "--no-people")
        finally:
            suite.work.chmod(0o755)
            good.chmod(0o644)
    result.tracebacks += _tracebacks(res.stdout + res.stderr)
    _one_error(res, result, "read-only catalog")
    # locked by another process for longer than the wait
    result.tried += 1
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(good)], stdout=subprocess.PIPE)
    try:
        if holder.stdout is not None:
            holder.stdout.readline()
        res = suite.run(
            "classify",
            extra[0].parent,
            "--db",
            good,
            "--no-people",
            extra_env={"PHOTOSIFT_BUSY_TIMEOUT_S": "1"},
        )
        result.tracebacks += _tracebacks(res.stdout + res.stderr)
        _one_error(res, result, "locked catalog")
    finally:
        holder.kill()
        holder.wait()
    suite.run("classify", extra[0].parent, "--db", good, "--no-people", result=result)
    result.files_lost += _missing(extra, good)
    return result


# -- disk full ------------------------------------------------------------------------------------------------------
DISK_FULL = """
set -u
mount -t tmpfs -o size={size} tmpfs "{mnt}" || exit 90
"{py}" -m photosift classify "{lib}" --db "{mnt}/c.db" --batch-size 4 --workers 1 --no-people
echo "first-exit=$?"
cp "{mnt}/c.db" "{mnt}/c.db-wal" "{mnt}/c.db-shm" "{keep}/" 2>/dev/null
mount -o remount,size=64m "{mnt}"
"{py}" -m photosift classify "{lib}" --db "{mnt}/c.db" --no-people
echo "second-exit=$?"
cp "{mnt}/c.db" "{keep}/final.db"
"""


def namespace_prefix() -> list[str] | str:
    """The command that gives a private mount namespace, or why there is none."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        probe = subprocess.run([*prefix, "true"], capture_output=True)
        if probe.returncode == 0:
            return prefix
    return "no mount namespace here (not root, and unprivileged user namespaces are off)"


def disk_full(suite: Suite, files: int = 120, size: str = "256k") -> FaultResult:
    result = FaultResult(f"disk full (catalog on a {size} tmpfs, then more space)")
    prefix = namespace_prefix()
    if isinstance(prefix, str):
        result.skipped = prefix
        return result
    lib = suite.folder("full-lib")
    corpus = photos(lib, files, seed=7)
    mnt, keep = suite.folder("full-mnt"), suite.folder("full-keep")
    script = DISK_FULL.format(size=size, mnt=mnt, lib=lib, keep=keep, py=sys.executable)
    res = subprocess.run(
        [*prefix, "sh", "-c", script],
        capture_output=True,
        timeout=suite.timeout,
        env={**os.environ, **suite.env},
    )
    if res.returncode == 90:
        result.skipped = "cannot mount a tmpfs here: " + res.stderr.decode(errors="replace").strip()[:200]
        return result
    result.tried = 1
    result.tracebacks += _tracebacks(res.stdout + res.stderr)
    out = res.stdout.decode()
    if "first-exit=1" not in out:
        result.notes.append("the full disk did not stop the first run with exit 1 (tmpfs too large?)")
    committed = stored(keep / "c.db") if (keep / "c.db").is_file() else {}
    final = stored(keep / "final.db") if (keep / "final.db").is_file() else {}
    result.files_lost = sum(1 for p in committed if p not in final) + _missing(corpus, keep / "final.db")
    return result


# -- SIGKILL -------------------------------------------------------------------------------------------------------------
def _catalog_signature(db: Path) -> tuple[tuple[int, int], ...]:
    """Size and mtime of the catalog and its WAL: they change when a run commits."""
    out = []
    for path in (db, db.with_name(db.name + "-wal")):
        try:
            st = path.stat()
            out.append((st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append((-1, -1))
    return tuple(out)


def _kill_during_writes(proc: subprocess.Popen[bytes], db: Path, delay: float, timeout: float) -> bool:
    """SIGKILL `proc` `delay` seconds after it first writes to the catalog (so the kill lands among commits,
    not during start-up, on a fast machine as on a slow one). False when the run ended before the kill."""
    start, deadline = _catalog_signature(db), time.monotonic() + timeout
    while _catalog_signature(db) == start:
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:  # never wrote: kill it anyway rather than wait on it for good
            proc.send_signal(signal.SIGKILL)
            return True
        time.sleep(0.005)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    return True


def sigkill(suite: Suite, kills: int = 5, files: int = 120, seed: int = 0) -> FaultResult:
    """Kill `photosift classify` at seeded random moments after its first commit; committed rows must survive
    every kill. Before each run a third of the photos get new content, so every run has work to be killed in.
    A run that finishes before its kill is retried with the random delay's range halved (fast machines)."""
    result = FaultResult("SIGKILL at random moments during classify")
    rng = random.Random(seed)
    lib = suite.folder("kill-lib")
    corpus = photos(lib, files, seed=8)
    db = suite.work / "kill.db"
    for leftover in suite.work.glob("kill.db*"):
        leftover.unlink()
    before: dict[bytes, tuple[str, str | None, bool]] = {}
    window, attempts = 2.0, 0
    while result.tried < kills and attempts < 4 * kills:
        attempts += 1
        for path in rng.sample(corpus, len(corpus) // 3):
            path.write_bytes(with_comment(path.read_bytes(), b"round %d" % attempts))
        proc = suite.popen("classify", lib, "--db", db, "--batch-size", "4", "--workers", "1", "--no-people")
        if _kill_during_writes(proc, db, rng.uniform(0.0, window), suite.timeout):
            result.tried += 1
        else:
            window /= 2
        out, err = proc.communicate()
        result.tracebacks += _tracebacks(out + err)
        if not db.is_file():
            continue
        con = sqlite3.connect(db)
        ok = con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
        if not ok:
            result.notes.append("integrity_check failed after a kill")
        now = stored(db)
        result.files_lost += sum(1 for p in before if p not in now)  # committed, then gone
        before = now
    suite.run("classify", lib, "--db", db, "--no-people", result=result)
    final = stored(db)
    result.files_lost += _missing(corpus, db)
    result.wrong_kept += sum(1 for p in corpus if final.get(os.fsencode(p), ("", None, False))[1] != _sha(p))
    return result


# -- all of them ---------------------------------------------------------------------------------------------------------
def run_all(suite: Suite, scale: int = 1, seed: int = 0) -> list[FaultResult]:
    return [
        odd_names(suite),
        special_files(suite),
        swapped_files(suite, files=20 * scale, seconds=10.0 * scale, seed=seed),
        catalog_faults(suite),
        disk_full(suite),
        sigkill(suite, kills=8 * scale, files=90 * scale, seed=seed),
    ]


def table(results: Sequence[FaultResult]) -> str:
    """The results as a Markdown table (docs/RELIABILITY.md)."""
    lines = [
        "| fault | tried | files lost | wrong results kept | tracebacks | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if r.skipped:
            lines.append(f"| {r.fault} | skipped | | | | {r.skipped} |")
            continue
        notes = "; ".join(r.notes).replace("|", "/")
        lines.append(
            f"| {r.fault} | {r.tried} | {r.files_lost} | {r.wrong_kept} | {r.tracebacks} | {notes} |"
        )
    total = [r for r in results if not r.skipped]
    lines.append(
        f"| **total** | {sum(r.tried for r in total)} | {sum(r.files_lost for r in total)} | "
        f"{sum(r.wrong_kept for r in total)} | {sum(r.tracebacks for r in total)} | |"
    )
    return "\n".join(lines)
