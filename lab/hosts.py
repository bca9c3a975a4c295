"""Lab hosts: systemd-nspawn containers on an overlay of the base image, reached over SSH."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from lab import config, roster
from lab.config import HostSpec
from lab.errors import LabError
from lab.system import is_mounted, pid_alive, run

BOOT_TIMEOUT_S = 90
CGROUP_ROOT = Path("/sys/fs/cgroup")


def ssh_dir() -> Path:
    return config.state_dir() / "ssh"


def client_key() -> Path:
    return ssh_dir() / "id_ed25519"


def known_hosts() -> Path:
    return ssh_dir() / "known_hosts"


def ensure_client_key() -> None:
    ssh_dir().mkdir(parents=True, exist_ok=True)
    os.chmod(ssh_dir(), 0o700)
    if not client_key().exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "emsops-lab",
             "-f", str(client_key())])
    known_hosts().touch(mode=0o600, exist_ok=True)


def ssh_base_args(spec: HostSpec) -> list[str]:
    return ["ssh", "-i", str(client_key()), "-o", f"UserKnownHostsFile={known_hosts()}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5", f"root@{spec.address}"]


def lab_cgroups() -> list[Path]:
    """This lab's folder in each cgroup hierarchy that tracks processes by name.

    nspawn --keep-unit puts a container in the cgroup it was started from. Started from the same
    one, every host's systemd would manage the same `system.slice/<unit>` folders: one host
    removing its finished unit's folder made another's next start fail with 219/CGROUP. So each
    host gets its own cgroup (cgroup v1's name=systemd and the unified one, or the single v2).
    """
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        roots = [CGROUP_ROOT]
    else:
        roots = [CGROUP_ROOT / h for h in ("systemd", "unified")
                 if (CGROUP_ROOT / h / "cgroup.procs").exists()]
    return [root / f"emsops-{config.BRIDGE}" for root in roots]


def remove_cgroup(path: Path) -> None:
    """Remove an emptied cgroup and the ones below it (their files go with them)."""
    if not path.is_dir():
        return
    # One still holding a process stays: `lab down`'s test reports what is left.
    for dirpath, _dirs, _files in os.walk(path, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


@dataclass
class Host:
    spec: HostSpec

    @property
    def dir(self) -> Path:
        return config.state_dir() / "hosts" / self.spec.name

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def cgroups(self) -> list[Path]:
        return [lab / self.spec.name for lab in lab_cgroups()]

    @property
    def pidfile(self) -> Path:
        return self.dir / "nspawn.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def exists(self) -> bool:
        return (self.dir / "upper").exists()

    def ssh_reachable(self) -> bool:
        try:
            with socket.create_connection((self.spec.address, 22), timeout=1) as sock:
                return sock.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    # -- disk -------------------------------------------------------------------------------

    def mount(self, lowers: list[Path]) -> None:
        """Mount the host's disk: its own layer over `lowers` (the image's layers, top first)."""
        if is_mounted(self.root):
            return
        for sub in ("upper", "work", "root"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        fresh = not (self.dir / "upper" / "etc").exists()
        lowerdir = ":".join(str(p) for p in lowers)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={lowerdir},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}",
             str(self.root)])
        if fresh:
            self._personalise()

    def unmount(self) -> None:
        if is_mounted(self.root):
            proc = run(["umount", str(self.root)], check=False)
            if proc.returncode != 0:
                run(["umount", "-l", str(self.root)])

    def discard_disk(self) -> None:
        """The disk died: drop the host's own layer so it comes back as the bare base OS."""
        self.unmount()
        for sub in ("upper", "work"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)

    def _personalise(self) -> None:
        """Give a new disk what a freshly installed server has: name, address, host keys."""
        root, name = self.root, self.spec.name
        (root / "etc/hostname").write_text(name + "\n")
        (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n")
        (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        address = f"{self.spec.address}/{config.PREFIX_LEN}"
        if self.spec.net == "ifupdown":
            # The ifupdown image variant runs networking.service instead of systemd-networkd.
            (root / "etc/network/interfaces").write_text(
                "# Written by the emsops lab at the host's creation.\n"
                "source /etc/network/interfaces.d/*\n\n"
                "auto lo\niface lo inet loopback\n\n"
                f"auto host0\niface host0 inet static\n    address {address}\n")
        else:
            netdir = root / "etc/systemd/network"
            netdir.mkdir(parents=True, exist_ok=True)
            # 10- sorts before the image's 80-container-host0.network, which would ask for DHCP.
            (netdir / "10-lab.network").write_text(
                "[Match]\nName=host0\n\n[Network]\n"
                f"Address={address}\n"
                "LinkLocalAddressing=no\nIPv6AcceptRA=no\n")
        hostkey = root / "etc/ssh/ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}",
             "-f", str(hostkey)])
        (root / "etc/ssh/sshd_config.d/20-hostkey.conf").write_text(
            "HostKey /etc/ssh/ssh_host_ed25519_key\n")
        sshdir = root / "root/.ssh"
        sshdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        auth = sshdir / "authorized_keys"
        auth.write_text(Path(str(client_key()) + ".pub").read_text())
        auth.chmod(0o600)
        _update_known_hosts(self.spec, Path(str(hostkey) + ".pub").read_text())

    # -- power ------------------------------------------------------------------------------

    def boot(self) -> None:
        if self.running():
            return
        for cgroup in self.cgroups:
            cgroup.mkdir(parents=True, exist_ok=True)

        def enter_own_cgroups() -> None:  # in the child, before nspawn starts
            for cgroup in self.cgroups:
                (cgroup / "cgroup.procs").write_text("0")

        log = open(self.dir / "console.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            ["systemd-nspawn", "-D", str(self.root), "-b", "--register=no", "--keep-unit",
             "-M", config.machine_name(self.spec), f"--network-bridge={config.BRIDGE}",
             "--console=passive", "--link-journal=no", "--resolv-conf=off", "--timezone=off"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            preexec_fn=enter_own_cgroups)  # noqa: PLW1509 - no threads start nspawn
        log.close()
        self.pidfile.write_text(f"{proc.pid}\n")

    def wait_ready(self, timeout_s: float = BOOT_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise LabError(f"{self.spec.name} stopped while booting; see "
                               f"{self.dir / 'console.log'}")
            if self.ssh_reachable():
                proc = subprocess.run([*ssh_base_args(self.spec), "true"],
                                      capture_output=True, text=True, check=False)
                if proc.returncode == 0:
                    return
            time.sleep(0.3)
        raise LabError(f"{self.spec.name} did not answer over SSH within {timeout_s:.0f}s; "
                       f"see {self.dir / 'console.log'}")

    def stop(self, timeout_s: float = 30) -> None:
        pid = self.pid()
        if pid is not None:
            # nspawn turns SIGTERM into an orderly poweroff of the container.
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and pid_alive(pid):
                time.sleep(0.2)
            if pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)
                while pid_alive(pid):
                    time.sleep(0.1)
        self.pidfile.unlink(missing_ok=True)
        self.unmount()
        for cgroup in self.cgroups:
            remove_cgroup(cgroup)


def _update_known_hosts(spec: HostSpec, pubkey_line: str | None) -> None:
    """Replace the host's entry: a reinstalled server has new host keys, as in real life.
    Without a key, the entry goes (the host was removed)."""
    path = known_hosts()
    lines = path.read_text().splitlines() if path.exists() else []
    names = {spec.name, spec.address}
    kept = [ln for ln in lines if not names & set(ln.split(" ", 1)[0].split(","))]
    if pubkey_line is not None:
        keytype, key = pubkey_line.split()[:2]
        kept.append(f"{spec.address},{spec.name} {keytype} {key}")
    path.write_text("".join(ln + "\n" for ln in kept))


def forget_host_key(spec: HostSpec) -> None:
    if known_hosts().exists():
        _update_known_hosts(spec, None)


def all_hosts() -> list[Host]:
    return [Host(spec) for spec in roster.hosts()]


def host(name: str) -> Host:
    return Host(roster.spec(name))
