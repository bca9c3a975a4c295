"""emsops' inspection of a fleet of gateway hosts against a naive playbook doing the same checks,
one task each, on stock Ansible settings: wall-time ratio naive / emsops, and the share of the
gain that SSH pipelining alone gives.

    PATH=$PWD/.venv/bin:$PATH .venv/bin/python bench/inspect_fleet.py [--hosts 24] [--runs 3]

Root, with the lab up (`emsops lab up`). The bench adds N light gateway hosts to the lab
(`lab add`, group ems_gateways: the bare base OS), prepares them as a site's hosts are (role
ems_base: the package mirror, base packages, time), inspects them once untimed (the role
installs its duplicate-address test), then alternates, `--runs` times each, on the same hosts:
1. naive: a playbook generated from CHECKS below, one task per check, on stock Ansible settings
   (no ansible.cfg: 5 forks, no pipelining, interpreter discovery, stock SSH arguments);
2. naive + pipelining: the same playbook and settings with only SSH pipelining switched on;
3. emsops: `playbooks/inspect.yml` with the project's ansible.cfg.
Every run goes through ansible-runner with the same options and starts with cold SSH connections
(a fresh ControlPath folder); a run counts only when every host ran every task without failure,
and emsops' run only when its `inspection` results hold, for every host, each fact CHECKS names
(so both sides checked the same things). The added hosts are removed at the end, whatever
happens. Prints the medians and the ratios.

The naive side only collects (its checks judge nothing), and gathers no facts: both make it
cheaper than a real hand-written inspection would be, so the ratio errs in the naive side's favour.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ansible_runner
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api.layout import site_vars  # noqa: E402
from lab import config, manager, network  # noqa: E402
from lab.errors import LabError  # noqa: E402

PREFIX = "insp"
GROUP = "ems_gateways"
RUN_TIMEOUT_S = 1800

# What an inspection of a gateway checks: (check, the emsops probe's fact that answers it (a key
# path into its `facts`), the naive task doing it), with VALUE_KEYS filled in.
CHECKS: list[tuple[str, tuple[str, ...], dict[str, Any]]] = [
    ("load", ("resources", "load"), {"ansible.builtin.command": "cat /proc/loadavg"}),
    ("cores", ("resources", "cores"), {"ansible.builtin.command": "nproc"}),
    ("memory", ("resources", "memory"), {"ansible.builtin.command": "cat /proc/meminfo"}),
    ("disk space", ("resources", "mounts"), {"ansible.builtin.command": "df -P"}),
    ("inodes", ("resources", "mounts"), {"ansible.builtin.command": "df -Pi"}),
    ("collector unit", ("units", "{ems_layout_gateway_unit}"), {"ansible.builtin.command":
        "systemctl show --timestamp=utc -p ActiveState,SubState,Result -- "
        "{ems_layout_gateway_unit}"}),
    ("backup check unit", ("units", "{backup_check_unit}"), {"ansible.builtin.command":
        "systemctl show --timestamp=utc -p ActiveState,SubState,Result -- {backup_check_unit}"}),
    ("time sync", ("time",), {"ansible.builtin.shell":
        "systemd-detect-virt --container || timedatectl show -p NTPSynchronized --value"}),
    ("addresses", ("network", "addresses"), {"ansible.builtin.command": "ip -j -4 addr show"}),
    ("duplicate address", ("network", "duplicates"), {"ansible.builtin.shell":
        "arping -D -c {inspection_arping_timeout_s} -w {inspection_arping_timeout_s} "
        "-I \"$(ip -o -4 addr show | awk '$4 ~ /^{{{{ ansible_host }}}}\\// {{print $2}}')\" "
        "{{{{ ansible_host }}}}"}),
    ("collector status", ("gateway", "status"), {"ansible.builtin.uri": {
        "url": "http://127.0.0.1:{ems_layout_gateway_status_port}/health", "use_proxy": False,
        "timeout": 5}}),
    ("collector poll interval", ("gateway", "poll_interval_s"),
     {"ansible.builtin.slurp": {"src": "{ems_layout_config_file}"}}),
    ("backups", ("backups",), {"ansible.builtin.shell":
        "test ! -x {ems_layout_backup_script} || {ems_layout_backup_script} snapshots"}),
]
# The inventory's values (over the roles' defaults) that CHECKS use.
VALUE_KEYS = ("ems_layout_gateway_unit", "ems_layout_gateway_status_port",
              "ems_layout_config_file", "ems_layout_backup_script", "inspection_arping_timeout_s")


def check_values(inventory: Path, hosts: list[str]) -> dict[str, str]:
    """The values CHECKS use, from the inventory over the roles' defaults (the same on every
    host of the fleet, which the bench checks)."""
    values = [{k: str(site_vars(inventory, h)[k]) for k in VALUE_KEYS} for h in hosts]
    if any(v != values[0] for v in values):
        raise LabError("the fleet's hosts do not share one layout; the naive playbook cannot "
                       "serve them all")
    v = values[0]
    # The backup wrapper's check unit, as role inspection names it (vars/main.yml).
    return {**v, "backup_check_unit": f"{Path(v['ems_layout_backup_script']).name}@check.service"}


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    return value


def naive_playbook(values: dict[str, str]) -> list[dict]:
    """One task per check; a check that finds nothing (no collector, no config) still counts."""
    tasks = [{"name": f"Check {name}", **_fill(task, values), "register": f"check_{i}",
              "changed_when": False, "failed_when": False}
             for i, (name, _fact, task) in enumerate(CHECKS)]
    return [{"name": "Inspect the gateways, one task per check", "hosts": f"{PREFIX}*",
             "gather_facts": False, "tasks": tasks}]


def fact_paths(values: dict[str, str]) -> list[tuple[str, ...]]:
    return [tuple(part.format(**values) for part in fact) for _name, fact, _task in CHECKS]


def has_fact(facts: dict, path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(facts, dict) or key not in facts:
            return False
        facts = facts[key]
    return True


def stock_cfg(folder: Path, pipelining: bool) -> Path:
    """No setting that changes speed, except pipelining when asked: only how to find the vault
    password (the lab inventory's secrets) and the roles."""
    cfg = folder / ("pipelining.cfg" if pipelining else "stock.cfg")
    text = (f"[defaults]\nvault_password_file = {REPO / 'lab' / 'vault-password.sh'}\n"
            f"roles_path = {REPO / 'roles'}\n")
    if pipelining:
        text += "\n[ssh_connection]\npipelining = True\n"
    cfg.write_text(text)
    return cfg


def run(playbook: Path, inventory: Path, cfg: Path, hosts: list[str], tasks: int | None,
        tags: str | None = None) -> tuple[float, dict]:
    """Seconds of one ansible-runner run from cold SSH connections, and its set_stats; raises
    unless every host ran (at least `tasks` tasks) without failure."""
    with tempfile.TemporaryDirectory(prefix="emsops-bench-") as tmp:
        cp, pd = Path(tmp) / "cp", Path(tmp) / "pd"
        cp.mkdir()
        pd.mkdir(mode=0o700)
        start = time.monotonic()
        r = ansible_runner.run(
            private_data_dir=str(pd), playbook=str(playbook),
            inventory=str(inventory), limit=f"{PREFIX}*", project_dir=str(REPO), quiet=True,
            envvars={"ANSIBLE_CONFIG": str(cfg), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(cp)},
            tags=tags, timeout=RUN_TIMEOUT_S, suppress_env_files=True)
        seconds = time.monotonic() - start
        stats = r.stats or {}
        custom = next((e["event_data"].get("artifact_data") or {} for e in r.events
                       if e.get("event") == "playbook_on_stats"), {})
    def ran_all(h: str) -> bool:
        return (not stats.get("failures", {}).get(h) and not stats.get("dark", {}).get(h)
                and (tasks is None or stats.get("ok", {}).get(h, 0) >= tasks))
    bad = sorted(h for h in hosts if not ran_all(h))
    if r.status != "successful" or bad:
        raise LabError(f"{playbook.name} with {cfg.name}: {r.status} (rc {r.rc}); hosts that "
                       f"did not run every task: {bad}")
    return seconds, custom


def check_coverage(custom: dict, hosts: list[str], paths: list[tuple[str, ...]]) -> None:
    results = custom.get("inspection", {})
    missing = {h: [".".join(p) for p in paths
                   if not has_fact(results.get(h, {}).get("facts", {}), p)] for h in hosts}
    missing = {h: m for h, m in missing.items() if m}
    if missing:
        raise LabError(f"emsops' inspection lacks facts the naive checks collect: {missing}")


def bench(n: int, runs: int) -> dict:
    if not network.bridge_exists():
        raise LabError("the lab is down: run `emsops lab up` first")
    inventory = config.inventory_dir() / "hosts.yml"
    names = [f"{PREFIX}{i:02d}" for i in range(n)]
    added: list[str] = []
    times: dict[str, list[float]] = {"naive": [], "pipelining": [], "emsops": []}
    try:
        for name in names:
            manager.add(name, GROUP, log=lambda _m: None)
            added.append(name)
        values = check_values(inventory, names)
        with tempfile.TemporaryDirectory(prefix="emsops-bench-") as tmp:
            folder = Path(tmp)
            book = folder / "naive-inspect.yml"
            book.write_text(yaml.safe_dump(naive_playbook(values), sort_keys=False))
            project_cfg = REPO / "ansible.cfg"
            sides = {"naive": (book, stock_cfg(folder, False), len(CHECKS)),
                     "pipelining": (book, stock_cfg(folder, True), len(CHECKS)),
                     "emsops": (REPO / "playbooks" / "inspect.yml", project_cfg, None)}
            # Prepare the hosts as a site's (mirror, base packages), then let the role install
            # what it needs: neither is timed.
            run(REPO / "playbooks" / "site.yml", inventory, project_cfg, names, None,
                "ems_base")
            _seconds, custom = run(sides["emsops"][0], inventory, project_cfg, names, None)
            check_coverage(custom, names, fact_paths(values))
            for _ in range(runs):
                for side, (playbook, cfg, tasks) in sides.items():
                    seconds, custom = run(playbook, inventory, cfg, names, tasks)
                    if side == "emsops":
                        check_coverage(custom, names, fact_paths(values))
                    times[side].append(seconds)
    finally:
        for name in reversed(added):
            manager.remove(name, log=lambda _m: None)
    med = {side: statistics.median(t) for side, t in times.items()}
    return {"hosts": n, "checks": len(CHECKS), "runs": times, "median": med}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=24, help="light gateway hosts (24)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each side (3)")
    args = parser.parse_args()
    r = bench(args.hosts, args.runs)
    med = r["median"]
    for side, label in (("naive", "naive, stock settings"),
                        ("pipelining", "naive, stock + pipelining"), ("emsops", "emsops")):
        runs = ", ".join(f"{t:.2f}" for t in r["runs"][side])
        print(f"{label:28} median {med[side]:7.2f} s  ({runs})")
    gain = med["naive"] - med["emsops"]
    share = (med["naive"] - med["pipelining"]) / gain if gain > 0 else float("nan")
    print(f"{r['hosts']} hosts, {r['checks']} checks: ratio naive / emsops "
          f"{med['naive'] / med['emsops']:.2f}; naive / naive+pipelining "
          f"{med['naive'] / med['pipelining']:.2f}; pipelining alone gives {100 * share:.0f} % "
          "of the gain")
    return 0


if __name__ == "__main__":
    sys.exit(main())
