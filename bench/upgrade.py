"""The platform's downtime during a patch upgrade / its downtime during one plain restart.

    PATH=$PWD/.venv/bin:$PATH .venv/bin/python bench/upgrade.py [--target 3.2.2] [--runs 3]

Root, against the lab site deployed with playbooks/site.yml on its inventory's release (the
same EMSOPS_LAB_* variables as its `emsops lab up`). Each run, on the same hosts:
1. baseline: `systemctl restart` of the platform unit on the app host;
2. the upgrade to `--target` as a job through the one launcher (api.launch, as the API runs it:
   pre-upgrade backup, migrations, switch, restarts, health checks, verification);
3. back to the inventory's release by the engineer's hand run of site.yml's release part
   (not timed), so the next run starts where this one did.
Downtime: a probe asks the platform's `/health` every 100 ms from the controller; the platform is
down while it does not answer 200 with the right version (the one it ran before, and once it has
answered the target, only the target). Prints the medians and the ratio upgrade / restart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api.launch import hand_run_command, run_job, stdout_of  # noqa: E402
from lab import roster  # noqa: E402
from lab.site import inventory as lab_inventory  # noqa: E402
from lab.site import layout, ssh  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

APP = "ems-app"
PROBE_S = 0.1
SETTLE_S = 1.0  # answering right for this long ends a measurement
SITE_HOSTS = "ems_app:ems_db:ems_gateways"


class HealthProbe:
    """Asks /health every PROBE_S in a thread; sums the time the answer is not right."""

    def __init__(self, url: str, before: str, target: str | None = None) -> None:
        self.url, self.before, self.target = url, before, target
        # Not right until a probe has said so: a platform that never answers never settles.
        self.down_s, self._down_since, self._last_right = 0.0, None, None
        self._seen_target, self._stop = False, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _answer(self) -> tuple[int, str | None]:
        try:
            with urllib.request.urlopen(self.url, timeout=1) as resp:  # noqa: S310 - lab address
                return resp.status, json.load(resp).get("version")
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (OSError, ValueError):
            return 0, None

    def _right(self, status: int, version: str | None) -> bool:
        if status != 200:
            return False
        if self.target is not None and version == self.target:
            self._seen_target = True
            return True
        return version == self.before and not self._seen_target

    def _loop(self) -> None:
        while not self._stop.is_set():
            asked = time.monotonic()
            right = self._right(*self._answer())
            now = time.monotonic()
            if right and self._down_since is not None:
                self.down_s += asked - self._down_since
                self._down_since = None
            elif not right and self._down_since is None:
                self._down_since = asked
            if right and self._last_right is None:
                self._last_right = now
            if not right:
                self._last_right = None
            self._stop.wait(max(0.0, PROBE_S - (time.monotonic() - asked)))

    def settled(self, on_target: bool) -> bool:
        """Right for SETTLE_S without a break (and on the target, when asked)."""
        return (self._last_right is not None and time.monotonic() - self._last_right >= SETTLE_S
                and (not on_target or self.target is None or self._seen_target))

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def measure_until_settled(self, timeout_s: float = 300, on_target: bool = True) -> float:
        """The downtime so far, once the answers are right again (on the target, when asked)."""
        wait_for(lambda: self.settled(on_target), timeout_s, f"{self.url} to answer right")
        return self.down_s

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()


def restart(url: str, version: str) -> float:
    unit = layout(APP)["ems_layout_platform_unit"]
    with HealthProbe(url, version) as probe:
        before = probe.measure_until_settled(30)  # the site is up before the clock starts
        ssh(APP, f"systemctl restart {unit}")
        return probe.measure_until_settled() - before


def upgrade(inventory: Path, url: str, version: str, target: str) -> float:
    with HealthProbe(url, version, target) as probe:
        before = probe.measure_until_settled(30, on_target=False)
        job = run_job("upgrade", inventory, limit=SITE_HOSTS,
                      parameters={"target_version": target})
        if job["state"] != "succeeded":
            raise SystemExit(f"the upgrade to {target} failed: {job['error']}\n"
                             f"{stdout_of(job)[-6000:]}")
        return probe.measure_until_settled() - before


def back_to(inventory: Path, version: str) -> None:
    cmd = hand_run_command(inventory, "site.yml", "--limit", "ems_app:ems_gateways", "--tags",
                           "ems_release", "-e", f"ems_release_version={version}", "-e",
                           "ems_release_allow_downgrade=true")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"could not go back to {version}:\n{proc.stdout[-6000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="3.2.2", help="the patch to upgrade to (3.2.2)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each (3)")
    args = parser.parse_args()
    inventory = lab_inventory()
    lay = layout(APP)
    version = lay["ems_release_version"]
    url = f"http://{roster.spec(APP).address}:{lay['ems_layout_platform_port']}/health"
    restarts, upgrades = [], []
    for _ in range(args.runs):
        restarts.append(restart(url, version))
        try:
            upgrades.append(upgrade(inventory, url, version, args.target))
        finally:
            back_to(inventory, version)
    r, u = statistics.median(restarts), statistics.median(upgrades)
    print(f"restart of the platform: downtime median {r:.2f} s "
          f"({', '.join(f'{x:.2f}' for x in restarts)})")
    print(f"upgrade {version} -> {args.target}: downtime median {u:.2f} s "
          f"({', '.join(f'{x:.2f}' for x in upgrades)})")
    print(f"ratio upgrade / restart: {u / r:.2f}" if r > 0 else "the restart had no downtime")
    return 0


if __name__ == "__main__":
    sys.exit(main())
