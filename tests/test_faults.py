"""Fault injection, small: the real CLI in subprocesses through odd names, special files, swapped files, bad
catalogs, a full disk and SIGKILLs (photosift.bench.faults; tools/fault_suite.py runs it at scale). Every
scenario must lose no file, keep no wrong result and show no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from photosift.bench import faults

pytestmark = pytest.mark.slow


@pytest.fixture()
def suite(tmp_path: Path) -> faults.Suite:
    env = {"PHOTOSIFT_DATA_DIR": str(tmp_path / "data"), "PHOTOSIFT_CONFIG_DIR": str(tmp_path / "config")}
    return faults.Suite(tmp_path / "work", env, timeout=300)


def check(result: faults.FaultResult) -> None:
    if result.skipped:
        pytest.skip(f"{result.fault}: {result.skipped}")
    assert result.tried > 0, result
    assert (result.files_lost, result.wrong_kept, result.tracebacks) == (0, 0, 0), result
    assert not result.notes, result.notes


def test_odd_names(suite: faults.Suite) -> None:
    check(faults.odd_names(suite))


def test_special_files(suite: faults.Suite) -> None:
    check(faults.special_files(suite))


def test_files_swapped_during_a_run(suite: faults.Suite) -> None:
    check(faults.swapped_files(suite, files=12, seconds=6, seed=1))


def test_bad_catalogs(suite: faults.Suite) -> None:
    check(faults.catalog_faults(suite))


def test_disk_full(suite: faults.Suite) -> None:
    check(faults.disk_full(suite, files=60, size="192k"))


def test_sigkill_at_random_moments(suite: faults.Suite) -> None:
    check(faults.sigkill(suite, kills=3, files=45, seed=2))
