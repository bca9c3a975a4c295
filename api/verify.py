"""Host verification: runs the testinfra suites in tests/hosts/ and gives a per-host verdict.

Used by `emsops verify` and by the API after a playbook run; both get the same result shape:
``{"ok": bool, "hosts": {name: {"ok": bool, "checks": int, "failures": [str], "observed": {}}}}``,
where `observed` is what a host reported about itself (e.g. `version`): evidence, not expectation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from api.environment import run_environment

REPO_ROOT = Path(__file__).resolve().parent.parent
SUITES = REPO_ROOT / "tests" / "hosts"


class VerifyError(Exception):
    """The verification could not run at all (bad inventory, no matching host)."""


def resolve_hosts(inventory: Path, limit: str | None) -> list[str]:
    """The inventory's hosts matching the limit pattern, in inventory order."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    if not inventory.is_file():
        raise VerifyError(f"inventory {inventory} does not exist")
    manager = InventoryManager(loader=DataLoader(), sources=[str(inventory)])
    hosts = [h.name for h in manager.get_hosts(limit or "all")]
    if not hosts:
        raise VerifyError(f"no host in {inventory} matches {limit or 'all'!r}")
    return hosts


def run_verification(inventory: Path, limit: str | None,
                     expect: Mapping[str, str] | None = None) -> dict:
    """`expect`: variables a run changed on purpose, expected over the inventory's (e.g.
    `ems_release_version` after an upgrade, while the inventory still names the old release)."""
    hosts = resolve_hosts(inventory, limit)
    with tempfile.TemporaryDirectory(prefix="emsops-verify-") as tmp:
        report = Path(tmp) / "report.json"
        env = run_environment({"EMSOPS_VERIFY_REPORT": str(report)})
        cmd = [sys.executable, "-m", "pytest", str(SUITES), "-p", "no:cacheprovider", "-q",
               "--tb=line", "--no-header", "-o", "addopts=", f"--rootdir={SUITES}",
               "--hosts=" + ",".join(f"ansible://{h}" for h in hosts),
               f"--ansible-inventory={inventory}",
               *(f"--expect={name}={value}" for name, value in (expect or {}).items())]
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              check=False)
        results = json.loads(report.read_text()) if report.exists() else []
    if proc.returncode not in (0, 1) or not results:
        raise VerifyError(f"the verification suites did not run (pytest exit {proc.returncode})"
                          f":\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    verdict: dict[str, dict] = {h: {"ok": True, "checks": 0, "failures": [], "observed": {}}
                                for h in hosts}
    for r in results:
        entry = verdict.setdefault(r["host"], {"ok": True, "checks": 0, "failures": [],
                                               "observed": {}})
        entry["checks"] += 1
        entry["observed"].update(r.get("observed") or {})
        if r["outcome"] != "passed":
            entry["ok"] = False
            entry["failures"].append(f"{r['test']}: {r['message']}")
    return {"ok": all(v["ok"] for v in verdict.values()), "hosts": verdict}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check that a site's hosts are healthy (testinfra)",
                       description="Run the testinfra suites of tests/hosts/ against the "
                                   "inventory's hosts and print a verdict per host. Exit "
                                   "status 1 when any check fails.")
    p.add_argument("-i", "--inventory", required=True, type=Path)
    p.add_argument("--limit", help="ansible host pattern, e.g. ems_app or ems-gw1")
    p.add_argument("--expect", action="append", default=[], metavar="NAME=VALUE",
                   type=_expectation,
                   help="a variable changed on purpose, expected over the inventory's, e.g. "
                        "ems_release_version=3.2.2 after an upgrade (repeatable)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cli)


def _expectation(pair: str) -> tuple[str, str]:
    name, sep, value = pair.partition("=")
    if not sep or not name.isidentifier() or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {pair!r}")
    return name, value


def _cli(args: argparse.Namespace) -> int:
    result = run_verification(args.inventory.resolve(), args.limit, dict(args.expect))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for host, v in result["hosts"].items():
            state = "FAILED" if not v["ok"] else ("HEALTHY" if v["checks"] else "UNCHECKED")
            print(f"{host:<12} {state:<8} {v['checks']} checks")
            for failure in v["failures"]:
                print(f"    - {failure}")
        print("site healthy" if result["ok"] else "site NOT healthy")
    return 0 if result["ok"] else 1
