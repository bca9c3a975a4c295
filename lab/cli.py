"""`emsops lab ...`: the command-line face of lab.manager."""

from __future__ import annotations

import argparse

from lab import manager


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
    wipe = lsub.add_parser("wipe", help="replace a host's disk with a bare OS",
                           description="The 'disk died' case: the host comes back as the bare "
                                       "base OS with new SSH host keys.")
    wipe.add_argument("host")
    ssh = lsub.add_parser("ssh", help="open a shell or run a command on a host",
                          description="emsops lab ssh HOST [-- CMD...]")
    ssh.add_argument("host")
    ssh.add_argument("cmd", nargs=argparse.REMAINDER, help="command to run (after --)")
    lab.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.lab_command == "up":
        manager.up()
    elif args.lab_command == "down":
        manager.down(purge=args.purge)
    elif args.lab_command == "status":
        rows = manager.status()
        print(f"{'HOST':<10} {'STATE':<8} {'ADDRESS':<14} {'SSH':<5} GROUPS")
        for r in rows:
            print(f"{r['host']:<10} {r['state']:<8} {r['address']:<14} {r['ssh']:<5} "
                  f"{r['groups']}")
    elif args.lab_command == "wipe":
        manager.wipe(args.host)
    elif args.lab_command == "ssh":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        manager.ssh(args.host, cmd)
    return 0
