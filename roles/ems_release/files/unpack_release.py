"""Unpack a Kangpai EMS release next to its final folder, verify it, then rename it into place.

Usage: unpack_release.py ARTIFACT DEST VERSION. The rename is the only step visible at DEST,
so an interrupted run never leaves a half-unpacked release that looks complete.
"""

import hashlib
import json
import os
import shutil
import sys
import tarfile

artifact, dest, version = sys.argv[1:4]
partial = dest + ".partial"
shutil.rmtree(partial, ignore_errors=True)
os.makedirs(partial)
with tarfile.open(artifact) as tar:
    for member in tar.getmembers():
        if member.name.startswith("/") or ".." in member.name.split("/") or not (
                member.isfile() or member.isdir()):
            sys.exit(f"refusing unsafe entry {member.name!r} in {artifact}")
    # Python >= 3.12 (Debian 13) has extraction filters; 3.11 relies on the check above.
    options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    tar.extractall(partial, **options)  # noqa: S202 - entries checked above
with open(os.path.join(partial, "manifest.json")) as f:
    manifest = json.load(f)
if manifest.get("version") != version:
    sys.exit(f"{artifact} holds version {manifest.get('version')!r}, expected {version!r}")
for path, digest in manifest["files"].items():
    with open(os.path.join(partial, path), "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != digest:
            sys.exit(f"{path} in {artifact} does not match its manifest checksum")
os.rename(partial, dest)
print(json.dumps({"installed": version}))
