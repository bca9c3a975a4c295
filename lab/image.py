"""The cached Debian base image that every lab host boots from (lower overlay layer)."""

from __future__ import annotations

import shutil
from pathlib import Path

from lab import config
from lab.config import HostSpec
from lab.errors import LabError
from lab.system import is_mounted, run

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


def variant_path(variant: str) -> Path:
    return config.state_dir() / "images" / f"variant-{variant}-{config.variant_key(variant)}"


def ensure_variant(variant: str, log=print) -> Path:
    """Return the variant's layer (to go over the base image), building it when its recipe has
    no cache. Its packages come through the lab's package mirror, which must be running."""
    base = ensure_image(log)
    final = variant_path(variant)
    if (final / ".complete").exists():
        return final / "layer"
    from lab import mirror

    if not mirror.running():
        raise LabError(f"the {variant} image variant is built through the lab's package mirror, "
                       "which is not running: run `emsops lab up` first")
    tmp = final.with_name(final.name + ".building")
    root = tmp / "root"
    if is_mounted(root):
        run(["umount", str(root)])
    if tmp.exists():
        shutil.rmtree(tmp)
    for sub in ("layer", "work", "root"):
        (tmp / sub).mkdir(parents=True)
    log(f"building image variant {final.name} (once per recipe)...")
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={base},upperdir={tmp / 'layer'},workdir={tmp / 'work'}", str(root)])
    try:
        _configure_variant(variant, root)
    finally:
        run(["umount", str(root)])
    shutil.rmtree(tmp / "work", ignore_errors=True)
    (tmp / ".complete").write_text(config.variant_key(variant) + "\n")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for stale in final.parent.glob(f"variant-{variant}-*"):
        if stale != final:
            shutil.rmtree(stale, ignore_errors=True)
    return final / "layer"


def _configure_variant(variant: str, root: Path) -> None:
    proxy = f"http://127.0.0.1:{config.MIRROR_PORT}"
    packages = " ".join(config.VARIANT_PACKAGES[variant])
    # A container without boot (nspawn gives it /dev and /proc) on the controller's network,
    # where the mirror listens on the loopback: nothing comes from the internet directly.
    script = (f"apt-get -q -o Acquire::http::Proxy={proxy} update && "
              f"DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Acquire::http::Proxy={proxy} "
              f"install --no-install-recommends {packages} && apt-get clean")
    if variant == "ifupdown":
        script += (" && systemctl disable systemd-networkd.service systemd-networkd.socket"
                   " && systemctl enable networking.service")
    run(["systemd-nspawn", "-q", "-D", str(root), "--register=no", "--keep-unit",
         "--resolv-conf=off", "--timezone=off", "--link-journal=no", "sh", "-ec", script])


def lowers(spec: HostSpec, log=print) -> list[Path]:
    """The image layers a host's disk goes over, top first."""
    base = ensure_image(log)
    if spec.net == "networkd":
        return [base]
    return [ensure_variant(spec.net, log), base]


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
