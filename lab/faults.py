"""Faults injected for real into lab hosts, as they happen on a customer's site: one table.

Each kind knows where it applies, how to inject it, how to show its symptom on the host (evidence
or None) and how to clear it. What an injection changes is recorded under the lab's state dir
(originals saved there, outside the host's disk, so fingerprints stay clean); `clear` undoes a
host's faults newest first and restarts what ran before. Targets come from the host's layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import config
from lab.errors import LabError
from lab.hosts import host as lab_host
from lab.hosts import ssh_base_args
from lab.site import layout
from lab.system import run

# The EMS unit each group's hosts run (layout variable names).
MAIN_UNIT = {"ems_app": "ems_layout_platform_unit", "ems_gateways": "ems_layout_gateway_unit",
             "ems_meters": "ems_layout_meter_sim_unit"}
EMS_GROUPS = tuple(MAIN_UNIT)
DB_GROUPS = ("ems_db",)
FILLER = "lab-fault-filler"  # the big file a disk-full fault leaves in the full mount
# disk-full-logs fills it with a rotated EMS log instead, which role system_restore may free
# (its default system_restore_freeable_globs: <state>/log/*.log.[0-9]*).
LOG_FILLER = "log/ems.log.1"
WORK = "/run/emsops-lab-fault"  # scratch on the host's /run (a tmpfs, not its disk)


# -- where things are ------------------------------------------------------------------------

def _records_dir(host: str) -> Path:
    return config.state_dir() / "faults" / host


def _records(host: str) -> list[dict[str, Any]]:
    path = _records_dir(host) / "faults.json"
    return json.loads(path.read_text()) if path.exists() else []


def _save_records(host: str, records: list[dict[str, Any]]) -> None:
    folder = _records_dir(host)
    if not records:
        shutil.rmtree(folder, ignore_errors=True)
        return
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder.parent, 0o700)
    (folder / "faults.json").write_text(json.dumps(records, indent=1) + "\n")


def active(host: str) -> list[str]:
    """The kinds injected into `host` and not cleared yet, oldest first."""
    return [r["kind"] for r in _records(host)]


def forget(host: str, disk_only: bool = False) -> None:
    """Drop a host's fault records (its disk is gone); with disk_only, keep the controller's."""
    keep = [r for r in _records(host) if disk_only and r["kind"] == "ip-conflict"]
    _save_records(host, keep)


def sh(host: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*ssh_base_args(lab_host(host).spec), script], capture_output=True,
                          text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"on {host}: `{script}` failed ({proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def in_root(host: str, path: str, follow_last: bool = False) -> Path:
    """`path` of the host seen from the controller (its mounted disk), symlinks resolved inside
    the host's own root, never the controller's."""
    root = lab_host(host).root
    parts, resolved, hops = [p for p in path.split("/") if p], [], 0
    while parts:
        part = parts.pop(0)
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink() and (parts or follow_last):
            hops += 1
            if hops > 40:
                raise LabError(f"{host}: too many symlinks in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
        elif part == "..":
            resolved = resolved[:-1]
        elif part != ".":
            resolved.append(part)
    return root.joinpath(*resolved)


def unit_props(host: str, unit: str, *props: str) -> dict[str, str]:
    out = sh(host, f"systemctl show -p {','.join(props)} {shlex.quote(unit)}").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@dataclass
class Ctx:
    """One injection: the host, its layout, and the record of what was changed."""

    host: str
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def vars(self):
        return layout(self.host)

    @property
    def groups(self) -> tuple[str, ...]:
        return config.host_spec(self.host).groups

    def main_units(self) -> list[str]:
        return [self.vars[MAIN_UNIT[g]] for g in self.groups if g in MAIN_UNIT]

    def save(self, path: str) -> None:
        """Keep the host file `path` (content, mode, owner) on the controller."""
        src = in_root(self.host, path)
        folder = _records_dir(self.host) / f"{time.time_ns()}"
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder.parent.parent, 0o700)
        copy = folder / src.name
        shutil.copy2(src, copy, follow_symlinks=False)
        st = src.lstat()
        self.record.setdefault("saved", []).append(
            {"path": path, "copy": str(copy), "uid": st.st_uid, "gid": st.st_gid})

    def restore_saved(self) -> None:
        for item in reversed(self.record.get("saved", [])):
            dest = in_root(self.host, item["path"])
            if dest.is_symlink() or dest.exists():
                dest.unlink()
            shutil.copy2(item["copy"], dest, follow_symlinks=False)
            os.chown(dest, item["uid"], item["gid"], follow_symlinks=False)

    def stop_remembering(self, units: list[str]) -> None:
        """Stop `units`, remembering the ones that ran so that clearing starts them again."""
        running = [u for u in units if unit_props(self.host, u, "ActiveState")
                   .get("ActiveState") in ("active", "activating", "reloading")]
        self.record.setdefault("restart", []).extend(u for u in running
                                                     if u not in self.record["restart"])
        if units:
            sh(self.host, "systemctl stop " + " ".join(map(shlex.quote, units)))

    def restart_remembered(self) -> None:
        units = " ".join(map(shlex.quote, self.record.get("restart", [])))
        if units:
            sh(self.host, f"systemctl daemon-reload && systemctl reset-failed {units}; "
                          f"systemctl restart {units}")


# -- symptoms --------------------------------------------------------------------------------

def _not_running(ctx: Ctx, units: list[str]) -> str | None:
    bad = []
    for unit in units:
        p = unit_props(ctx.host, unit, "ActiveState", "SubState", "NRestarts", "UnitFileState")
        if not (p.get("ActiveState") == "active" and p.get("SubState") == "running"):
            bad.append(f"{unit} {p.get('ActiveState')}/{p.get('SubState')} "
                       f"(restarts {p.get('NRestarts')}, file {p.get('UnitFileState')})")
    return "; ".join(bad) if len(bad) == len(units) and bad else None


def _port_closed(host: str, port: int) -> bool:
    try:
        socket.create_connection((config.host_spec(host).address, port), timeout=2).close()
    except OSError:
        return True
    return False


# -- the kinds -------------------------------------------------------------------------------

def _stop_inject(ctx: Ctx) -> None:
    ctx.stop_remembering(ctx.main_units())


def _stop_symptom(ctx: Ctx) -> str | None:
    return _not_running(ctx, ctx.main_units())


def _mask_inject(ctx: Ctx) -> None:
    # The roles install units in /etc/systemd/system, where `systemctl mask` refuses to link:
    # a masked unit there is the file replaced by a link to /dev/null, as `mask` would leave it.
    units = ctx.main_units()
    ctx.stop_remembering(units)
    for unit in units:
        path = unit_props(ctx.host, unit, "FragmentPath")["FragmentPath"]
        ctx.save(path)
        dest = in_root(ctx.host, path)
        dest.unlink()
        dest.symlink_to("/dev/null")
    sh(ctx.host, "systemctl daemon-reload")


def _mask_symptom(ctx: Ctx) -> str | None:
    states = {u: unit_props(ctx.host, u, "UnitFileState", "ActiveState")
              for u in ctx.main_units()}
    masked = [f"{u} {p['UnitFileState']}/{p['ActiveState']}" for u, p in states.items()
              if p.get("UnitFileState") == "masked" and p.get("ActiveState") != "active"]
    return "; ".join(masked) if len(masked) == len(states) and masked else None


def _mask_clear(ctx: Ctx) -> None:
    ctx.restore_saved()
    ctx.restart_remembered()


def _crashloop_dropin(ctx: Ctx, unit: str) -> str:
    return f"/etc/systemd/system/{unit}.d/50-lab-fault-crashloop.conf"


def _crashloop_inject(ctx: Ctx) -> None:
    created = []
    for unit in ctx.main_units():
        path = in_root(ctx.host, _crashloop_dropin(ctx, unit))
        if not path.parent.exists():
            path.parent.mkdir(mode=0o755)
            created.append(str(path.parent))
        # An ExecStart that exits at once, as a bad hand edit on a site would leave it.
        path.write_text("[Service]\nExecStart=\nExecStart=/bin/sh -c "
                        "'echo \"refusing to start (lab fault unit-crashloop)\" >&2; exit 2'"
                        "\n")
        os.chmod(path, 0o644)
    ctx.record["created_dirs"] = created
    units = ctx.main_units()
    ctx.stop_remembering(units)
    sh(ctx.host, "systemctl daemon-reload && systemctl start " + " ".join(units), check=False)


def _crashloop_clear(ctx: Ctx) -> None:
    for unit in ctx.main_units():
        in_root(ctx.host, _crashloop_dropin(ctx, unit)).unlink(missing_ok=True)
    for folder in ctx.record.get("created_dirs", []):
        Path(folder).rmdir()
    ctx.restart_remembered()


def _restart_main(ctx: Ctx) -> None:
    units = ctx.main_units()
    ctx.stop_remembering(units)
    sh(ctx.host, "systemctl start " + " ".join(units), check=False)


def _config_corrupt_inject(ctx: Ctx) -> None:
    path = ctx.vars["ems_layout_config_file"]
    ctx.save(path)
    dest = in_root(ctx.host, path)
    text = dest.read_text()
    # Half-written, as after a full disk or a bad edit: cut mid-line, a section never closed.
    dest.write_text(text[: len(text) // 2] + "\n[database\n")
    _restart_main(ctx)


def _config_missing_inject(ctx: Ctx) -> None:
    path = ctx.vars["ems_layout_config_file"]
    ctx.save(path)
    in_root(ctx.host, path).unlink()
    _restart_main(ctx)


def _config_symptom(ctx: Ctx) -> str | None:
    down = _not_running(ctx, ctx.main_units())
    if not down:
        return None
    log = sh(ctx.host, "journalctl -q -o cat -n 3 -u " + " -u ".join(ctx.main_units()),
             check=False).stdout.strip().splitlines()
    return f"{down}; journal: {log[-1] if log else '-'}"


def _restore_and_restart(ctx: Ctx) -> None:
    ctx.restore_saved()
    ctx.restart_remembered()


def _license_inject(ctx: Ctx) -> None:
    path = ctx.vars["ems_layout_license_file"]
    ctx.save(path)
    in_root(ctx.host, path).unlink()


def _health(ctx: Ctx) -> dict:
    url = (f"http://{config.host_spec(ctx.host).address}:"
           f"{ctx.vars['ems_layout_platform_port']}/health")
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - lab address
            return json.load(resp)
    except urllib.error.HTTPError as exc:  # an unhealthy platform answers 503 with its body
        return json.load(exc)


def _license_symptom(ctx: Ctx) -> str | None:
    body = _health(ctx)
    license_ = body.get("license", {})
    return (f"/health {body.get('status')}: license {license_}" if body.get("status") != "ok"
            and not license_.get("valid", True) else None)


def _current(ctx: Ctx) -> str:
    return f"{ctx.vars['ems_layout_root']}/current"


def _link_broken_inject(ctx: Ctx) -> None:
    link = in_root(ctx.host, _current(ctx))
    ctx.save(_current(ctx))
    tmp = link.with_name(".current.lab-fault")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(f"{ctx.vars['ems_layout_root']}/releases/0.0.0-missing")
    os.lchown(tmp, 0, 0)
    tmp.rename(link)
    _restart_main(ctx)


def _link_broken_symptom(ctx: Ctx) -> str | None:
    link = in_root(ctx.host, _current(ctx))
    target = os.readlink(link)
    return None if in_root(ctx.host, _current(ctx), follow_last=True).exists() else (
        f"{_current(ctx)} -> {target}, which does not exist")


def _release_file(ctx: Ctx) -> tuple[str, str]:
    """The first Python file of the active release's manifest and its recorded sha256."""
    release = in_root(ctx.host, _current(ctx), follow_last=True)
    manifest = json.loads((release / "manifest.json").read_text())
    name = sorted(f for f in manifest["files"] if f.endswith(".py"))[0]
    host_release = "/" + str(release.relative_to(lab_host(ctx.host).root))
    return f"{host_release}/{name}", manifest["files"][name]


def _release_corrupt_inject(ctx: Ctx) -> None:
    path, _sha = _release_file(ctx)
    ctx.save(path)
    with open(in_root(ctx.host, path), "ab") as f:
        f.write(b"\n# changed on the host after the release was unpacked\n")


def _release_corrupt_symptom(ctx: Ctx) -> str | None:
    path, expected = _release_file(ctx)
    actual = hashlib.sha256(in_root(ctx.host, path).read_bytes()).hexdigest()
    return None if actual == expected else (
        f"{path}: sha256 {actual[:12]}..., manifest says {expected[:12]}...")


def _cluster(ctx: Ctx) -> tuple[str, str]:
    """The host's PostgreSQL cluster: its unit and the configuration file role ems_postgresql
    owns (the conf.d file it renders, marked as managed by Ansible)."""
    version, name = sh(ctx.host, "pg_lsclusters --no-header").stdout.split()[:2]
    conf = sh(ctx.host, f"grep -l 'Ansible managed' /etc/postgresql/{version}/{name}/conf.d/*",
              check=False).stdout.split()
    if not conf:
        raise LabError(f"{ctx.host}: no configuration file of role ems_postgresql found")
    return f"postgresql@{version}-{name}.service", conf[0]


def _db_down_inject(ctx: Ctx) -> None:
    ctx.stop_remembering([_cluster(ctx)[0]])


def _db_symptom(ctx: Ctx) -> str | None:
    unit = _cluster(ctx)[0]
    port = ctx.vars["ems_layout_db_port"]
    down = _not_running(ctx, [unit])
    return f"{down}; port {port} closed" if down and _port_closed(ctx.host, port) else None


def _db_config_inject(ctx: Ctx) -> None:
    unit, conf = _cluster(ctx)
    ctx.save(conf)
    with open(in_root(ctx.host, conf), "a") as f:
        f.write("shared_buffers = plenty\n")
    ctx.stop_remembering([unit])
    sh(ctx.host, f"systemctl start {unit}", check=False)


def _disk_full_inject(ctx: Ctx, filler: str = FILLER, room_kb: int = 2048) -> None:
    state = shlex.quote(ctx.vars["ems_layout_state_dir"])
    ctx.record["filler"] = filler
    units = ctx.main_units()
    ctx.stop_remembering(units)
    # A small tmpfs over the state folder holding a copy of it, then filled: the host's own disk
    # (and the machine's) never fills.
    sh(ctx.host, f"""set -e
mkdir -p {WORK}/copy
cp -a {state}/. {WORK}/copy/
kb=$(du -sk {state} | cut -f1)
mount -t tmpfs -o size=$((kb + {room_kb}))k,mode=$(stat -c %a {state}),uid=$(stat -c %u {state}),\
gid=$(stat -c %g {state}) lab-fault-full {state}
cp -a {WORK}/copy/. {state}/
rm -rf {WORK}/copy
mkdir -p "$(dirname {state}/{filler})"
dd if=/dev/zero of={state}/{filler} bs=64k 2>/dev/null || true""")
    if units:
        sh(ctx.host, "systemctl start " + " ".join(units), check=False)


def _disk_full_symptom(ctx: Ctx) -> str | None:
    state = ctx.vars["ems_layout_state_dir"]
    out = sh(ctx.host, f"findmnt -n -o FSTYPE,SIZE,AVAIL,USE% --target {shlex.quote(state)}"
                       f" && df -k --output=avail {shlex.quote(state)} | tail -1").stdout.split()
    return f"{state}: {out[0]} size {out[1]}, {out[3]} used, {out[4]} kB free" if (
        len(out) >= 5 and out[4] == "0") else None


def _disk_full_clear(ctx: Ctx) -> None:
    state = shlex.quote(ctx.vars["ems_layout_state_dir"])
    units = ctx.main_units()
    sh(ctx.host, "systemctl stop " + " ".join(units))
    # What the services wrote meanwhile goes back to the folder under the mount.
    filler = ctx.record.get("filler", FILLER)
    sh(ctx.host, f"""set -e
rm -f {state}/{filler}
[ "$(dirname {filler})" = . ] || rmdir --ignore-fail-on-non-empty "$(dirname {state}/{filler})"
mkdir -p {WORK}/under
mount --bind / {WORK}/under
cp -a {state}/. {WORK}/under{state}/
umount {WORK}/under
rmdir {WORK}/under
umount {state}""")
    ctx.restart_remembered()


def _timer(ctx: Ctx) -> str:
    return f"{ctx.vars['ems_layout_aggregate_unit']}.timer"


def _timer_inject(ctx: Ctx) -> None:
    ctx.record["restart"] = [_timer(ctx)]
    sh(ctx.host, f"systemctl disable --now {_timer(ctx)}")


def _timer_symptom(ctx: Ctx) -> str | None:
    p = unit_props(ctx.host, _timer(ctx), "UnitFileState", "ActiveState")
    return (f"{_timer(ctx)} {p.get('UnitFileState')}/{p.get('ActiveState')}"
            if p.get("UnitFileState") != "enabled" and p.get("ActiveState") != "active" else None)


def _timer_clear(ctx: Ctx) -> None:
    sh(ctx.host, f"systemctl enable --now {_timer(ctx)}")


def _conflict_names(host: str) -> tuple[str, str, str]:
    """The namespace and veth pair of an address conflict with `host` (names ≤ 15 bytes)."""
    tag = hashlib.sha1(f"{config.BRIDGE}/{host}".encode()).hexdigest()[:8]  # noqa: S324
    return f"emsops-ipc-{config.BRIDGE}-{host}", f"vi{tag}", f"vj{tag}"


def _conflict_inject(ctx: Ctx) -> None:
    ns, outer, inner = _conflict_names(ctx.host)
    addr = config.host_spec(ctx.host).address
    run(["ip", "netns", "add", ns])
    try:
        run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner])
        run(["ip", "link", "set", inner, "netns", ns])
        run(["ip", "link", "set", outer, "master", config.BRIDGE, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{addr}/{config.PREFIX_LEN}", "dev", inner])
        run(["ip", "-n", ns, "link", "set", inner, "up"])
    except LabError:
        _conflict_clear(ctx)
        raise


def _conflict_symptom(ctx: Ctx) -> str | None:
    macs = arp_macs(config.host_spec(ctx.host).address)
    return f"{config.host_spec(ctx.host).address} is at {', '.join(sorted(macs))}" if (
        len(macs) > 1) else None


def _conflict_clear(ctx: Ctx) -> None:
    ns, outer, _inner = _conflict_names(ctx.host)
    run(["ip", "link", "del", outer], check=False)
    run(["ip", "netns", "del", ns], check=False)


def remove_conflicts() -> None:
    """Drop every address conflict of this lab (its namespaces live on the controller)."""
    netns = Path("/run/netns")
    for ns in netns.glob(f"emsops-ipc-{config.BRIDGE}-*") if netns.is_dir() else []:
        host = ns.name.removeprefix(f"emsops-ipc-{config.BRIDGE}-")
        _conflict_clear(Ctx(host))
        _save_records(host, [r for r in _records(host) if r["kind"] != "ip-conflict"])


def arp_macs(address: str, timeout_s: float = 1.5) -> set[str]:
    """The MAC addresses answering an ARP request for `address` on the lab's bridge (as
    `arping` would show them: two means two machines claim the address)."""
    iface = config.BRIDGE
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as sock:
        sock.bind((iface, 0))
        src_mac = sock.getsockname()[4]
        src_ip = socket.inet_aton(config.BRIDGE_ADDRESS)
        frame = (b"\xff" * 6 + src_mac + struct.pack("!H", 0x0806)
                 + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + src_mac + src_ip + b"\0" * 6
                 + socket.inet_aton(address))
        sock.send(frame)
        sock.settimeout(0.2)
        macs, deadline = set(), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                data = sock.recv(128)
            except TimeoutError:
                continue
            op = struct.unpack("!H", data[20:22])[0]
            sender_mac, sender_ip = data[22:28], data[28:32]
            if op == 2 and sender_ip == socket.inet_aton(address):
                macs.add(sender_mac.hex(":"))
    return macs


@dataclass(frozen=True)
class Kind:
    name: str
    does: str
    groups: tuple[str, ...]  # the hosts it applies to
    inject: Callable[[Ctx], None]
    symptom: Callable[[Ctx], str | None]
    clear: Callable[[Ctx], None] | None  # None: only a repair takes it away


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("unit-stopped", "the host's EMS unit is stopped", EMS_GROUPS,
         _stop_inject, _stop_symptom, lambda ctx: ctx.restart_remembered()),
    Kind("unit-masked", "the host's EMS unit is masked (its file a link to /dev/null)",
         EMS_GROUPS, _mask_inject, _mask_symptom, _mask_clear),
    Kind("unit-crashloop", "a drop-in makes the EMS unit exit at once, again and again",
         EMS_GROUPS, _crashloop_inject, _stop_symptom, _crashloop_clear),
    Kind("config-corrupt", "ems.conf is cut in half; the EMS unit refuses it and restarts",
         EMS_GROUPS, _config_corrupt_inject, _config_symptom, _restore_and_restart),
    Kind("config-missing", "ems.conf is gone; the EMS unit cannot start", EMS_GROUPS,
         _config_missing_inject, _config_symptom, _restore_and_restart),
    Kind("license-missing", "license.json is gone; the platform's /health says why", ("ems_app",),
         _license_inject, _license_symptom, _restore_and_restart),
    Kind("release-link-broken", "`current` points to a release that does not exist",
         EMS_GROUPS, _link_broken_inject, _link_broken_symptom, _restore_and_restart),
    Kind("release-file-corrupt", "a file of the active release no longer matches its manifest",
         EMS_GROUPS, _release_corrupt_inject, _release_corrupt_symptom, _restore_and_restart),
    Kind("db-down", "PostgreSQL is stopped", DB_GROUPS,
         _db_down_inject, _db_symptom, lambda ctx: ctx.restart_remembered()),
    Kind("db-config-broken", "role ems_postgresql's config file makes PostgreSQL refuse to start",
         DB_GROUPS, _db_config_inject, _db_symptom, _restore_and_restart),
    Kind("disk-full", "the EMS state folder is a small tmpfs with no space left", EMS_GROUPS,
         _disk_full_inject, _disk_full_symptom, _disk_full_clear),
    # 8 MB of room: once the log is freed, the spool's WAL (up to 4 MB) fits.
    Kind("disk-full-logs", "the EMS state folder is a small tmpfs full of a rotated EMS log",
         EMS_GROUPS, lambda ctx: _disk_full_inject(ctx, LOG_FILLER, 8192), _disk_full_symptom,
         _disk_full_clear),
    Kind("timer-disabled", "the aggregation timer is stopped and disabled", ("ems_app",),
         _timer_inject, _timer_symptom, _timer_clear),
    Kind("ip-conflict", "an interface of the lab claims the host's address", (),
         _conflict_inject, _conflict_symptom, _conflict_clear),
)}


def kind(name: str) -> Kind:
    if name not in KINDS:
        raise LabError(f"unknown fault kind {name!r}; `emsops lab fault --list` shows them")
    return KINDS[name]


def applies(k: Kind, host: str) -> bool:
    return not k.groups or bool(set(k.groups) & set(config.host_spec(host).groups))


def inject(host: str, name: str) -> None:
    k = kind(name)
    if not lab_host(host).running():
        raise LabError(f"{host} is not running; start the lab with `emsops lab up`")
    if not applies(k, host):
        raise LabError(f"{name} applies to hosts of {', '.join(k.groups)}; {host} is in "
                       f"{', '.join(config.host_spec(host).groups)}")
    if name in active(host):
        raise LabError(f"{host} already has {name}; clear it first")
    ctx = Ctx(host, {"kind": name})
    records = _records(host)
    try:
        k.inject(ctx)
    finally:  # what was changed is recorded even when the injection stopped half-way
        _save_records(host, [*records, ctx.record])


def symptom(host: str, name: str) -> str | None:
    return kind(name).symptom(Ctx(host))


def clear(host: str) -> list[str]:
    """Undo every fault of `host`, newest first; the kinds cleared."""
    records = _records(host)
    done = []
    while records:
        record = records[-1]
        k = kind(record["kind"])
        if k.clear is None:
            raise LabError(f"{host}: {k.name} cannot be cleared by the lab; repair it")
        k.clear(Ctx(host, record))
        records.pop()
        _save_records(host, records)
        done.append(k.name)
    return done
