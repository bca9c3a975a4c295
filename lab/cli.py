"""`emsops lab ...`: the command-line face of lab.manager."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lab import config, manager
from lab.errors import LabError


def add_parser(sub: argparse._SubParsersAction) -> None:
    lab = sub.add_parser("lab", help="run a local site of real hosts (systemd containers)",
                         description="Local lab of real hosts: systemd-nspawn containers on a "
                                     "private bridge with a site package mirror. Needs root.")
    lsub = lab.add_subparsers(dest="lab_command", required=True, metavar="COMMAND")
    lsub.add_parser("up", help="create and boot every host, write inventories/lab/hosts.yml",
                    description="Idempotent: running hosts are left alone.")
    down = lsub.add_parser("down", help="stop hosts, remove bridge and mirror",
                           description="Leaves no process, mount, link or bridge behind.")
    down.add_argument("--purge", action="store_true",
                      help="also delete the hosts' disks (the cached base image is kept)")
    lsub.add_parser("status", help="show each host's state and address")
    add = lsub.add_parser(
        "add", help="add a host to the lab (kept across `lab up`)",
        description="Record a host in the lab's roster: it gets the lowest free address and, in "
                    "group ems_gateways, meters of its own on the meters host "
                    "(inventories/lab/host_vars/NAME.yml). When the lab is up the host boots "
                    "now, else at the next `emsops lab up`. Deploy it with site.yml.")
    add.add_argument("host", metavar="NAME")
    add.add_argument("--group", required=True, metavar="G",
                     help=f"its inventory group ({', '.join(config.GROUPS)})")
    add.add_argument("--net", default="networkd", metavar="|".join(config.NETS),
                     help="how it configures its address: systemd-networkd (the default) or "
                          "Debian's ifupdown (/etc/network/interfaces)")
    remove = lsub.add_parser(
        "remove", help="stop and forget a host added with `lab add`",
        description="Stops the host, deletes its disk and its host_vars, rewrites the inventory. "
                    "The lab's default hosts cannot be removed.")
    remove.add_argument("host", metavar="NAME")
    wipe = lsub.add_parser("wipe", help="replace a host's disk with a bare OS",
                           description="The 'disk died' case: the host comes back as the bare "
                                       "base OS with new SSH host keys.")
    wipe.add_argument("host")
    ssh = lsub.add_parser("ssh", help="open a shell or run a command on a host",
                          description="emsops lab ssh HOST [-- CMD...]")
    ssh.add_argument("host")
    ssh.add_argument("cmd", nargs=argparse.REMAINDER, help="command to run (after --)")
    fp = lsub.add_parser("fingerprint", help="print a host's fingerprint (files and units) as JSON",
                         description="Every file of the host's own disk layer (path, type, mode, "
                                     "owner, sha256 or link target) and every unit's state. With "
                                     "--diff FILE, print what changed since that fingerprint "
                                     "instead; exit status 1 when anything did.")
    fp.add_argument("host")
    fp.add_argument("--diff", metavar="FILE", type=Path,
                    help="a fingerprint saved earlier by this command")
    fault = lsub.add_parser(
        "fault", help="inject a real fault into a host, list the kinds, or clear a host's",
        description="emsops lab fault HOST KIND | --list | --clear HOST. What a fault changes is "
                    "recorded in the lab's state dir; --clear puts it back (newest first) and "
                    "restarts what ran before. Several faults may be on one host at once.")
    fault.add_argument("host", nargs="?")
    fault.add_argument("kind", nargs="?")
    mode = fault.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="list the fault kinds")
    mode.add_argument("--clear", action="store_true", help="clear every fault of HOST")
    lab.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.lab_command == "up":
        manager.up()
    elif args.lab_command == "down":
        manager.down(purge=args.purge)
    elif args.lab_command == "status":
        rows = manager.status()
        print(f"{'HOST':<12} {'STATE':<8} {'ADDRESS':<14} {'SSH':<5} {'NET':<9} GROUPS")
        for r in rows:
            print(f"{r['host']:<12} {r['state']:<8} {r['address']:<14} {r['ssh']:<5} "
                  f"{r['net']:<9} {r['groups']}")
    elif args.lab_command == "add":
        manager.add(args.host, args.group, args.net)
    elif args.lab_command == "remove":
        manager.remove(args.host)
    elif args.lab_command == "wipe":
        manager.wipe(args.host)
    elif args.lab_command == "ssh":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        manager.ssh(args.host, cmd)
    elif args.lab_command == "fingerprint":
        return _fingerprint(args)
    elif args.lab_command == "fault":
        return _fault(args)
    return 0


def _fault(args: argparse.Namespace) -> int:
    from lab import faults

    if args.list:
        if args.host or args.kind:
            raise LabError("--list takes no host or kind")
        for k in faults.KINDS.values():
            where = ",".join(k.groups) or "any host"
            print(f"{k.name:<21} {where:<36} {k.does}")
        return 0
    if args.clear:
        if not args.host or args.kind:
            raise LabError("usage: emsops lab fault --clear HOST")
        config.host_spec(args.host)
        cleared = faults.clear(args.host)
        print(f"{args.host}: cleared {', '.join(cleared)}" if cleared
              else f"{args.host}: no fault to clear")
        return 0
    if not args.host or not args.kind:
        raise LabError("usage: emsops lab fault HOST KIND (see --list)")
    config.host_spec(args.host)
    faults.kind(args.kind)
    faults.inject(args.host, args.kind)
    print(f"{args.host}: {args.kind} injected ({faults.KINDS[args.kind].does})")
    return 0


def _fingerprint(args: argparse.Namespace) -> int:
    from lab import fingerprint

    config.host_spec(args.host)  # an unknown host is an error before anything runs
    if args.diff is None:
        print(fingerprint.dumps(fingerprint.fingerprint(args.host)))
        return 0
    try:
        before = json.loads(args.diff.read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read fingerprint {args.diff}: {exc}") from None
    changes = fingerprint.diff(before, fingerprint.fingerprint(args.host))
    print("\n".join(changes) if changes else f"{args.host}: no change")
    return 1 if changes else 0
