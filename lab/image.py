"""The cached Debian base image that every lab host boots from (lower overlay layer)."""

from __future__ import annotations

import shutil
from pathlib import Path

from lab import config
from lab.system import run

SSHD_LAB_CONF = """\
# Written by the emsops lab: keys only, as on a hardened customer server.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
"""


def image_path() -> Path:
    return config.state_dir() / "images" / f"base-{config.SUITE}-{config.image_key()}"


def ensure_image(log=print) -> Path:
    """Return the base image, building it with debootstrap when its recipe has no cache."""
    final = image_path()
    if (final / ".complete").exists():
        return final
    tmp = final.with_name(final.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log(f"building base image {final.name} with debootstrap (once per recipe)...")
    run(["debootstrap", "--variant=minbase", f"--include={','.join(config.BASE_PACKAGES)}",
         config.SUITE, str(tmp), config.DEBIAN_URL])
    _configure(tmp)
    (tmp / ".complete").write_text(config.image_key() + "\n")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for stale in final.parent.glob("base-*"):
        if stale != final:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def _configure(root: Path) -> None:
    # Each host gets its own machine id and SSH host keys when it is created.
    (root / "etc/machine-id").write_text("")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
    (root / "etc/ssh/sshd_config.d/10-lab.conf").write_text(SSHD_LAB_CONF)
    run(["chroot", str(root), "systemctl", "enable", "systemd-networkd.service", "ssh.service"])
    # Apt's caches belong to the host's own layer, not the shared image.
    run(["chroot", str(root), "apt-get", "clean"])
