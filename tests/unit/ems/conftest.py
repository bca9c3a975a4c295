"""Fixtures for the reference EMS tests: a real PostgreSQL, the built release artifacts, and EMS
programs run as subprocesses."""

from __future__ import annotations

import itertools
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .helpers import BUILD_SCRIPT, DB_PASSWORD, PYTHON, SRC, Database, EmsProcess, PgServer


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    with PgServer() as server:
        yield server


_db_numbers = itertools.count(1)


@pytest.fixture
def database(pg: PgServer) -> Iterator[Database]:
    name = f"ems_{next(_db_numbers)}"
    pg.create_database(name, owner="ems", password=DB_PASSWORD)
    yield Database(pg.host, pg.port, name, "ems", DB_PASSWORD)
    pg.drop_database(name)


@pytest.fixture(scope="session")
def release_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The artifacts of `build_releases.py`, as built for `make releases`."""
    out = tmp_path_factory.mktemp("releases")
    subprocess.run([PYTHON, str(BUILD_SCRIPT), "--out", str(out)], check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="session")
def release(release_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """release("3.2.2") -> a directory holding that artifact unpacked, as on a host."""
    unpacked: dict[str, Path] = {}

    def get(version: str) -> Path:
        if version not in unpacked:
            target = tmp_path_factory.mktemp(f"release-{version}")
            with tarfile.open(release_dir / f"kangpai-ems-{version}.tar.gz") as tar:
                tar.extractall(target, filter="data")
            unpacked[version] = target
        return unpacked[version]

    return get


@pytest.fixture
def ems(tmp_path: Path) -> Iterator[Callable[..., EmsProcess]]:
    """ems(module, config, root=SRC) starts `python3 -m kangpai_ems.<module>`; stopped at the
    end of the test."""
    started: list[EmsProcess] = []
    counter = itertools.count()

    def start(module: str, config: Path, root: Path = SRC) -> EmsProcess:
        process = EmsProcess(module, config, root,
                             tmp_path / f"{module}-{next(counter)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()
