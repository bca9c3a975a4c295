#!/usr/bin/env python3
"""Build the reference EMS release artifacts, reproducibly (same bytes on every build).

    python3 lab/ems/build_releases.py --out build/releases

writes kangpai-ems-<version>.tar.gz for every release in releases.json, and SHA256SUMS. Each
tarball holds at its root manifest.json, kangpai_ems/ (the code, with a generated _release.py)
and migrations/ (the release's SQL migrations).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "src"
PACKAGE = "kangpai_ems"
MTIME = 1704067200  # 2024-01-01T00:00:00Z: fixed, so the bytes do not depend on the build time
MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
VERSION_FORMAT = re.compile(r"^\d+\.\d+\.\d+$")


def release_module(release: dict) -> bytes:
    lines = [
        '"""Release identity, written by build_releases.py."""',
        "",
        f"VERSION = {release['version']!r}",
        f"MODULES = {tuple(release['modules'])!r}",
        f"DEFECT = {release.get('defect')!r}",
        "",
    ]
    return "\n".join(lines).encode()


def release_files(release: dict) -> dict[str, bytes]:
    """{path inside the tarball: content} for everything but the manifest."""
    files = {}
    for path in sorted((SOURCE / PACKAGE).rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        if relative == f"{PACKAGE}/_release.py":
            continue
        # Optional product modules ship only in releases that provide them.
        if path.parent.name == "modules" and path.stem != "__init__" \
                and path.stem not in release["modules"]:
            continue
        files[relative] = path.read_bytes()
    files[f"{PACKAGE}/_release.py"] = release_module(release)
    for name in release["migrations"]:
        files[f"migrations/{name}"] = (SOURCE / "migrations" / name).read_bytes()
    for relative, content in files.items():
        if relative.endswith(".py"):
            compile(content, relative, "exec")  # a syntax error fails the build, not a host
    return files


def manifest(product: str, release: dict, files: dict[str, bytes]) -> bytes:
    version = release["version"]
    numbers = [int(MIGRATION_NAME.match(name).group(1)) for name in release["migrations"]]
    data = {
        "product": product,
        "version": version,
        "version_line": ".".join(version.split(".")[:2]),
        "modules": release["modules"],
        "schema_version": numbers[-1] if numbers else 0,
        "migrations": release["migrations"],
        "requires": {"python": ">=3.11", "debian_packages": ["python3", "python3-psycopg2"]},
        "files": {path: hashlib.sha256(content).hexdigest()
                  for path, content in sorted(files.items())},
    }
    # Migrations the previous releases cannot run on: a rollback must restore the database too.
    if release.get("not_backward_compatible"):
        data["not_backward_compatible"] = release["not_backward_compatible"]
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def tarball(files: dict[str, bytes]) -> bytes:
    entries = dict(files)
    directories = {"/".join(path.split("/")[:depth])
                   for path in entries for depth in range(1, path.count("/") + 1)}
    raw = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of the build's name and time.
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(directories | set(entries)):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "root", "root"
            if name in entries:
                info.size, info.mode = len(entries[name]), 0o644
                tar.addfile(info, io.BytesIO(entries[name]))
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
    return raw.getvalue()


def validate(release: dict) -> None:
    version = release.get("version", "")
    if not VERSION_FORMAT.match(version):
        raise ValueError(f"release version {version!r} is not X.Y.Z")
    numbers = []
    for name in release["migrations"]:
        match = MIGRATION_NAME.match(name)
        if match is None:
            raise ValueError(f"{version}: migration {name} is not named NNNN_name.sql")
        numbers.append(int(match.group(1)))
    if numbers != sorted(set(numbers)):
        raise ValueError(f"{version}: migrations are not in strictly increasing order")
    unknown = set(release.get("not_backward_compatible", [])) - set(release["migrations"])
    if unknown:
        raise ValueError(f"{version}: not_backward_compatible names migrations it does not ship: "
                         f"{', '.join(sorted(unknown))}")


def build(out: Path) -> list[tuple[str, str]]:
    definitions = json.loads((HERE / "releases.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    sums = []
    for release in definitions["releases"]:
        validate(release)
        files = release_files(release)
        files["manifest.json"] = manifest(definitions["product"], release, files)
        data = tarball(files)
        name = f"{definitions['product']}-{release['version']}.tar.gz"
        tmp = out / (name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(out / name)
        sums.append((hashlib.sha256(data).hexdigest(), name))
    sums.sort(key=lambda item: item[1])
    (out / "SHA256SUMS").write_text("".join(f"{digest}  {name}\n" for digest, name in sums))
    return sums


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the reference EMS release artifacts.")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    args = parser.parse_args(argv)
    try:
        sums = build(args.out)
    except (OSError, ValueError, KeyError, SyntaxError) as exc:
        print(f"build_releases: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for digest, name in sums:
        print(f"{digest}  {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
