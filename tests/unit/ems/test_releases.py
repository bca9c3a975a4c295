"""Release artifacts: reproducible bytes, manifests that match their contents."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from .helpers import BUILD_SCRIPT, PYTHON

VERSIONS = ["3.2.0", "3.2.1", "3.2.2", "3.2.3", "3.3.0"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def manifest(release_dir: Path, version: str) -> dict:
    return json.loads(members(release_dir / f"kangpai-ems-{version}.tar.gz")["manifest.json"])


def test_two_builds_are_byte_identical(release_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    subprocess.run([PYTHON, str(BUILD_SCRIPT), "--out", str(again)], check=True,
                   capture_output=True)
    built = sorted(p.name for p in release_dir.iterdir())
    assert built == sorted(p.name for p in again.iterdir())
    assert built == ["SHA256SUMS", *[f"kangpai-ems-{v}.tar.gz" for v in VERSIONS]]
    for name in built:
        assert (release_dir / name).read_bytes() == (again / name).read_bytes(), name


def test_sha256sums_match_artifacts(release_dir: Path) -> None:
    lines = (release_dir / "SHA256SUMS").read_text().splitlines()
    assert len(lines) == len(VERSIONS)
    for line in lines:
        digest, name = line.split("  ")
        assert sha256((release_dir / name).read_bytes()) == digest


@pytest.mark.parametrize("version", VERSIONS)
def test_manifest_lists_every_file_with_its_hash(release_dir: Path, version: str) -> None:
    files = members(release_dir / f"kangpai-ems-{version}.tar.gz")
    data = json.loads(files.pop("manifest.json"))
    assert data["product"] == "kangpai-ems"
    assert data["version"] == version
    assert data["files"] == {name: sha256(content) for name, content in files.items()}
    assert [f"migrations/{m}" for m in data["migrations"]] == sorted(
        name for name in files if name.startswith("migrations/"))
    assert data["schema_version"] == int(data["migrations"][-1][:4])
    assert f"VERSION = '{version}'" in files["kangpai_ems/_release.py"].decode()


def test_tar_entries_are_normalised(release_dir: Path) -> None:
    with tarfile.open(release_dir / "kangpai-ems-3.2.2.tar.gz") as tar:
        entries = tar.getmembers()
    names = [e.name for e in entries]
    assert names == sorted(names)
    assert {(e.uid, e.gid, e.mtime) for e in entries} == {(0, 0, 1704067200)}
    assert {e.mode for e in entries if e.isfile()} == {0o644}
    assert all(not n.startswith(("/", "..")) and "__pycache__" not in n for n in names)
    assert {n.split("/")[0] for n in names} == {"kangpai_ems", "manifest.json", "migrations"}


def test_release_lines_modules_and_schema(release_dir: Path) -> None:
    m = {v: manifest(release_dir, v) for v in VERSIONS}
    assert [m[v]["schema_version"] for v in VERSIONS] == [2, 3, 3, 5, 4]
    assert {v: m[v].get("not_backward_compatible") for v in VERSIONS} == {
        **dict.fromkeys(VERSIONS), "3.2.3": ["0005_readings_source.sql"]}
    assert m["3.2.2"]["modules"] == ["electricity", "water", "gas"]
    assert set(m["3.3.0"]["modules"]) - set(m["3.2.2"]["modules"]) == {"carbon", "pv"}
    assert "kangpai_ems/modules/carbon.py" in m["3.3.0"]["files"]
    assert "kangpai_ems/modules/carbon.py" not in m["3.2.2"]["files"]
    assert m["3.3.0"]["version_line"] == "3.3"


def test_a_migration_marked_not_backward_compatible_must_ship() -> None:
    spec = importlib.util.spec_from_file_location("build_releases", BUILD_SCRIPT)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    with pytest.raises(ValueError, match="does not ship: 0005_x.sql"):
        build.validate({"version": "3.2.9", "migrations": ["0001_readings.sql"],
                        "not_backward_compatible": ["0005_x.sql"]})
