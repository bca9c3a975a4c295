"""A lab host's fingerprint: every file of its own disk layer and the state of every unit.

"Check mode changed nothing" and "a refused run changed nothing" are proven by comparing two
fingerprints. Files are read on the controller from the host's overlay upper layer (what the
host changed on top of the base image), units over one SSH call. Only what changes by itself on
an idle host is left out (EXCLUDED, VOLATILE, the timer-run units' activity), each for a reason.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.hosts import host as lab_host
from lab.hosts import ssh_base_args
from lab.site import layout


@dataclass(frozen=True)
class Rule:
    pattern: str  # an fnmatch pattern of a host path ('*' crosses '/')
    why: str


# Paths left out entirely: they come and go by themselves on an idle host.
EXCLUDED = (
    Rule("/var/log/journal/*", "journald writes and rotates its files all the time"),
    Rule("/var/lib/systemd/timers/stamp-*", "a persistent timer stamps each elapse"),
    Rule("/var/lib/systemd/random-seed", "refreshed by systemd-random-seed at boot/shutdown"),
    Rule("/var/tmp/systemd-private-*",  # noqa: S108 - a path inside the host, not ours
         "PrivateTmp= folders, named anew at each service start"),
    Rule("/var/lib/apt/lists/*", "apt-daily.timer refreshes the package lists via the mirror"),
    Rule("/var/cache/apt/*", "apt's caches, rebuilt with the package lists"),
    Rule("/var/lib/apt/periodic/*", "apt-daily.timer's stamps"),
    Rule("/var/log/apt/eipp.log.xz", "apt's solver log, rewritten by any apt run"),
    Rule("/var/lib/postgresql/*/main/*", "the database cluster's files change with every "
                                         "reading; compare the data with SQL, not bytes"),
    Rule("/var/log/postgresql/*", "PostgreSQL's server log"),
    Rule("/var/log/lastlog", "sshd records the time of each login (every new SSH connection)"),
    Rule("/var/log/wtmp", "login records, one per SSH session"),
)
# Layout files whose content the running EMS rewrites by itself: kept with mode and owner, their
# checksum left out (layout variable names, resolved per host).
VOLATILE = (
    ("ems_layout_spool_file", "the gateway's spool takes every reading"),
    ("ems_layout_meter_sim_state_file", "the simulator saves its counters every 2 s"),
)
# Units started by a timer are busy or idle by the clock: their activity is not state.
TIMER_RUN_STATES = {"inactive", "activating", "deactivating", "active"}


def _volatile_paths(host: str) -> set[str]:
    values = layout(host)
    paths = set()
    for name, _why in VOLATILE:
        path = values[name]
        paths |= {path, f"{path}-wal", f"{path}-shm", f"{path}-journal", f"{path}.tmp"}
    return paths


def _excluded(path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, rule.pattern) for rule in EXCLUDED)


# Checksums by file identity: a file whose inode, size, mtime and ctime are the same has the
# same content (ctime moves on every write or metadata change), so repeated prints are cheap.
_SHA_CACHE: dict[tuple[int, int, int, int, int], str] = {}


def _sha256(path: Path, st: os.stat_result) -> str:
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = _hash(path)
    return _SHA_CACHE[key]


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files(upper: Path, volatile: set[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """Every entry of an overlay upper layer: type, mode, owner, and sha256 or link target.

    A whiteout (character device 0:0) is a file the host deleted from the base image."""
    entries: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in [*dirnames, *filenames]:
            full = Path(dirpath) / name
            rel = "/" + str(full.relative_to(upper))
            if _excluded(rel):
                if name in dirnames:
                    dirnames.remove(name)
                continue
            try:
                st = full.lstat()
            except FileNotFoundError:  # removed while we walked
                continue
            entry: dict[str, Any] = {"mode": f"{stat.S_IMODE(st.st_mode):04o}",
                                     "owner": f"{st.st_uid}:{st.st_gid}"}
            if stat.S_ISLNK(st.st_mode):
                entry.update(type="link", target=os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                entry["type"] = "dir"
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                entry = {"type": "deleted"}
            elif stat.S_ISREG(st.st_mode):
                entry["type"] = "file"
                if rel not in volatile:
                    try:
                        entry["sha256"] = _sha256(full, st)
                    except FileNotFoundError:
                        continue
            else:
                entry["type"] = "special"
            entries[rel] = entry
    return entries


UNITS_COMMAND = ("systemctl list-units --all --plain --no-legend --no-pager; echo '--'; "
                 "systemctl list-unit-files --plain --no-legend --no-pager; echo '--'; "
                 "systemctl list-timers --all --plain --no-legend --no-pager")


def parse_units(text: str) -> dict[str, dict[str, str]]:
    """ActiveState/SubState/UnitFileState of every unit from UNITS_COMMAND's output."""
    loaded, unit_files, timers = (text.split("\n--\n") + ["", ""])[:3]
    units: dict[str, dict[str, str]] = {}
    for line in loaded.splitlines():
        parts = line.split(None, 4)
        if len(parts) >= 4:
            units[parts[0]] = {"load": parts[1], "active": parts[2], "sub": parts[3]}
    for line in unit_files.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            units.setdefault(parts[0], {"load": "not-loaded", "active": "inactive",
                                        "sub": "dead"})["file"] = parts[1]
    # list-timers: NEXT LEFT LAST PASSED UNIT ACTIVATES; the last two words are the units.
    for line in timers.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[-1] in units:
            state = units[parts[-1]]
            if state["active"] in TIMER_RUN_STATES:
                state["active"], state["sub"] = "timer-run", "timer-run"
    # Login sessions (e.g. this very SSH call) come and go.
    return {u: s for u, s in units.items() if not u.endswith(".scope")}


def units(host: str) -> dict[str, dict[str, str]]:
    proc = subprocess.run([*ssh_base_args(lab_host(host).spec), UNITS_COMMAND],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"cannot read the units of {host}: {proc.stderr.strip()}")
    return parse_units(proc.stdout)


def fingerprint(host: str) -> dict[str, Any]:
    """The host's files (its upper layer) and units, as plain JSON-able data."""
    h = lab_host(host)
    if not h.running():
        raise LabError(f"{host} is not running; start the lab with `emsops lab up`")
    return {"host": host, "files": files(h.dir / "upper", _volatile_paths(host)),
            "units": units(host)}


def _describe(entry: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(entry.items()))


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What changed between two fingerprints, one readable line per difference ([] = same)."""
    lines = []
    for section in ("files", "units"):
        old, new = before.get(section, {}), after.get(section, {})
        for key in sorted(old.keys() | new.keys()):
            if key not in new:
                lines.append(f"{section}: {key} gone (was {_describe(old[key])})")
            elif key not in old:
                lines.append(f"{section}: {key} new ({_describe(new[key])})")
            elif old[key] != new[key]:
                changed = sorted(k for k in old[key].keys() | new[key].keys()
                                 if old[key].get(k) != new[key].get(k))
                detail = ", ".join(f"{k} {old[key].get(k)} -> {new[key].get(k)}"
                                   for k in changed)
                lines.append(f"{section}: {key} changed: {detail}")
    return lines


def dumps(print_: Mapping[str, Any]) -> str:
    return json.dumps(print_, indent=1, sort_keys=True)
