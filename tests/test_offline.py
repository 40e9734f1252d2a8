"""Nothing reaches the network: every command that reads photos or models runs in a subprocess whose network
use is recorded to a file by an audit hook (a record cannot be swallowed by an ``except``, as a raised error
could), and the runs that can are repeated in a network namespace with no network at all."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit import DATA

# Records every socket operation that could leave the machine; loopback and Unix sockets are local.
HARNESS = r"""
import ipaddress, os, sys
LOG = os.environ["PHOTOSIFT_NET_LOG"]
LOCAL_NAMES = {None, "", "localhost", b"localhost"}

def _local(host):
    if host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host).is_loopback
    except ValueError:
        return False

def _record(event, args):
    if event == "socket.getaddrinfo":
        remote = not _local(args[0])
    elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
        address = args[-1]
        remote = isinstance(address, tuple) and not _local(address[0])
    else:
        return
    if remote:
        with open(LOG, "a") as f:
            f.write(f"{event} {args[-1]!r}\n")

sys.addaudithook(_record)
if sys.argv[1] == "--probe":  # the control: a connection that must be recorded
    import socket
    try:
        socket.create_connection(("192.0.2.1", 9), timeout=0.01)
    except OSError:
        pass
    sys.exit(0)
from photosift.cli import main
sys.argv = ["photosift", *sys.argv[1:]]
main()
"""


def _env(tmp_path: Path, log: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PHOTOSIFT_NET_LOG=str(log),
        PHOTOSIFT_DATA_DIR=str(tmp_path / "data-home"),
        PHOTOSIFT_CONFIG_DIR=str(tmp_path / "config-home"),
    )
    return env


def _photosift(
    tmp_path: Path, *args: str, namespace: bool = False
) -> tuple[subprocess.CompletedProcess[str], str]:
    log = tmp_path / f"net-{time.monotonic_ns()}.log"
    prefix = ["unshare", "-rn"] if namespace else []
    res = subprocess.run(
        [*prefix, sys.executable, "-c", HARNESS, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(tmp_path, log),
    )
    return res, log.read_text() if log.exists() else ""


def _namespace_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0


def test_the_recorder_sees_a_remote_connection(tmp_path: Path) -> None:
    res, log = _photosift(tmp_path, "--probe")
    assert res.returncode == 0, res.stderr
    assert "socket.connect ('192.0.2.1', 9)" in log


@pytest.mark.parametrize("namespace", [False, True], ids=["recorded", "no-network-namespace"])
@pytest.mark.slow
def test_classify_and_eval_stay_offline(photos_dir: Path, tmp_path: Path, namespace: bool) -> None:
    if namespace and not _namespace_available():
        pytest.skip("cannot create a network namespace here")
    db = str(tmp_path / "c.db")
    n = len(list(photos_dir.iterdir()))
    res, log = _photosift(tmp_path, "classify", str(photos_dir), "--db", db, "--json", namespace=namespace)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["classified"] == n and log == ""
    res, log = _photosift(
        tmp_path,
        "eval",
        "efficientnet-lite0-int8",
        "--images",
        str(photos_dir),
        "--json",
        namespace=namespace,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["images"] == n and log == ""


@pytest.mark.slow
def test_quantize_stays_offline(photos_dir: Path, tmp_path: Path) -> None:
    from test_quantize import tiny_convnet

    tiny = tiny_convnet(tmp_path / "tiny.onnx")
    out = tmp_path / "tiny-int8.onnx"
    args = ("quantize", str(tiny), "--calibrate", str(photos_dir), "-o", str(out), "--min-agreement", "0.5")
    res, log = _photosift(tmp_path, *args)
    assert res.returncode == 0, res.stderr
    assert out.is_file() and log == ""


@pytest.mark.slow
def test_export_and_models_build_stay_offline(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from photosift.toolchain.builtins import BUILDABLE

    try:
        BUILDABLE["mobilenet_v2"].weights()
    except Exception as exc:
        pytest.skip(f"mobilenet_v2 weights not installed ({exc})")
    res, log = _photosift(tmp_path, "models", "build", "mobilenet_v2", "--images", str(DATA))
    assert res.returncode == 0, res.stderr
    assert log == ""
    built = tmp_path / "data-home" / "models" / "mobilenet_v2.onnx"
    res, log = _photosift(
        tmp_path,
        "export",
        "mobilenet_v2",
        "--weights",
        str(BUILDABLE["mobilenet_v2"].weights()),
        "-o",
        str(tmp_path / "again.onnx"),
        "--images",
        str(DATA),
    )
    assert res.returncode == 0, res.stderr
    assert built.is_file() and (tmp_path / "again.onnx").is_file() and log == ""


def _first_page(proc: subprocess.Popen[str], base: str) -> object | None:
    """The gallery's first page once it answers; None if the server exited first (e.g. its port was taken)."""
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        try:
            return httpx.get(base + "/", timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the gallery did not answer within a minute")


@pytest.mark.slow
def test_the_gallery_stays_offline(photos_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    import httpx

    db = str(tmp_path / "c.db")
    res, log = _photosift(tmp_path, "classify", str(photos_dir), "--db", db)
    assert res.returncode == 0 and log == ""
    log_file = tmp_path / "serve.log"
    for _attempt in range(5):  # a port found free can be taken before the server binds it: then try another
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-c", HARNESS, "serve", "--db", db, "--port", str(port)],
            env=_env(tmp_path, log_file),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        page = _first_page(proc, f"http://127.0.0.1:{port}")
        if page is not None:
            break
        assert "cannot listen" in proc.stderr.read(), "the gallery did not start"  # type: ignore[union-attr]
    else:
        pytest.fail("no free port in five tries")
    base = f"http://127.0.0.1:{port}"
    try:
        assert page.status_code == 200  # type: ignore[attr-defined]
        photo = page.text.split('src="/thumb/')[1].split('"')[0]  # type: ignore[attr-defined]
        assert httpx.get(f"{base}/thumb/{photo}", timeout=10).status_code == 200
        assert httpx.get(f"{base}/search?q=cat", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert not log_file.exists() or log_file.read_text() == ""
