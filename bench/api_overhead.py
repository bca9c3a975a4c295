"""Overhead of running a playbook through the API: job wall time / plain `ansible-playbook`.

    .venv/bin/python bench/api_overhead.py -i inventories/lab/hosts.yml --service site \
        --limit ems_app --runs 5

Both sides run the same catalog playbook on the same hosts, alternating, after one warm-up run
each (an idempotent playbook is measured in its steady state, imports are warm). The API side
is measured from `POST /v1/jobs` to the job's terminal state, through the real app (store,
decision, host locks, ansible-runner, event storage and redaction); its verification step is a
no-op here because the plain run has none. The end of a job is taken from the runner's completion
notice (the call that sends the webhook), not by polling the store: a poll loop would add its own
CPU load and latency to the side it measures. Prints the medians and their ratio (target: under
1.05).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.launch import hand_run_command
from api.settings import REPO_ROOT, Settings
from api.tokens import Role, issue_token


def no_verification(inventory: Path, limit: str | None, expect: Mapping[str, str]) -> dict:
    return {"ok": True, "hosts": {}}


def plain_run(project: Path, inventory: Path, service: str, limit: str, extra: Path) -> float:
    """The measured baseline: an engineer's hand run, plain ansible-playbook on purpose (the
    one thing here that does not go through the launcher)."""
    command = hand_run_command(inventory, f"{service}.yml", "--limit", limit, "-e", f"@{extra}")
    started = time.perf_counter()
    result = subprocess.run(command, cwd=project, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"plain ansible-playbook failed:\n{result.stdout[-3000:]}")
    return elapsed


class Finished:
    """Wraps the app's notifier: wakes the benchmark when the runner reports a job done."""

    def __init__(self, notifier) -> None:
        self._notify, self._done = notifier.notify, {}
        self._lock = threading.Lock()
        notifier.notify = self._on_notify

    def _event(self, job_id: str) -> threading.Event:
        with self._lock:
            return self._done.setdefault(job_id, threading.Event())

    def _on_notify(self, job_id: str) -> None:
        self._event(job_id).set()
        self._notify(job_id)

    def wait(self, job_id: str, timeout: float) -> bool:
        return self._event(job_id).wait(timeout)


def api_run(client: TestClient, headers: dict, service: str, limit: str, n: int) -> float:
    body = {
        "ticket_id": f"BENCH-{os.getpid()}-{n}",
        "customer_id": "bench",
        "service": service,
        "limit": limit,
    }
    finished = client.app.state.bench_finished
    started = time.perf_counter()
    response = client.post("/v1/jobs", json=body, headers=headers)
    if response.status_code != 202:
        raise SystemExit(f"the API refused the job: {response.status_code} {response.text}")
    job_id = response.json()["id"]
    store = client.app.state.ctx.store
    # Once a second, also look at the store: a job that failed before its run sends no notice.
    while not finished.wait(job_id, 1.0) and store.get_job(job_id)["finished_at"] is None:
        pass
    elapsed = time.perf_counter() - started
    job = store.get_job(job_id)
    if job["playbook_status"] != "successful":
        raise SystemExit(f"the API's run failed: {job['error']}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--inventory", type=Path, required=True)
    parser.add_argument("--service", default="site", help="catalog playbook (default: site)")
    parser.add_argument("--limit", default="all")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--project",
        type=Path,
        default=REPO_ROOT,
        help="folder holding playbooks/ and ansible.cfg (default: this repo)",
    )
    args = parser.parse_args(argv)
    inventory = args.inventory.resolve()

    with tempfile.TemporaryDirectory(prefix="emsops-bench-") as data:
        # The variable the API gives every run, so both sides run the same play.
        extra = Path(data) / "plain-vars.json"
        extra.write_text(
            json.dumps(
                {
                    "emsops_job": {
                        "id": "plain",
                        "ticket_id": "BENCH",
                        "customer_id": "bench",
                        "service": args.service,
                        "parameters": {},
                        "note": None,
                        "entitlement": {},
                    }
                }
            )
        )
        settings = Settings(
            data_dir=Path(data),
            project_dir=args.project.resolve(),
            sites={"bench": inventory},
            inventory_root=inventory.parent,  # the file the bench was pointed at is trusted
            workers=1,
        )
        with TestClient(create_app(settings, verifier=no_verification)) as client:
            store = client.app.state.ctx.store
            client.app.state.bench_finished = Finished(client.app.state.ctx.notifier)
            store.put_contract(
                customer_id="bench",
                tier="machine_package",
                state="active",
                licensed_modules=[],
                version_line="0.0",
                ends_on=None,
            )
            headers = {"Authorization": f"Bearer {issue_token(store, Role.ENGINEER)}"}
            plain_run(settings.project_dir, inventory, args.service, args.limit, extra)
            api_run(client, headers, args.service, args.limit, -1)  # warm-up, both sides
            plain, through_api = [], []
            for n in range(args.runs):
                plain.append(
                    plain_run(settings.project_dir, inventory, args.service, args.limit, extra)
                )
                through_api.append(api_run(client, headers, args.service, args.limit, n))

    p, a = statistics.median(plain), statistics.median(through_api)
    print(f"playbook {args.service}.yml, limit {args.limit!r}, {args.runs} runs each")
    print(f"plain ansible-playbook median: {p:.2f} s  ({', '.join(f'{x:.2f}' for x in plain)})")
    print(
        f"through the API median:        {a:.2f} s  ({', '.join(f'{x:.2f}' for x in through_api)})"
    )
    print(f"ratio API / plain: {a / p:.3f}  (target < 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
