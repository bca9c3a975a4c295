"""Issue 9's faults on the deployed site: each kind injected for real, its symptom shown on the
host, cleared, and every host's fingerprint as before. Kinds that do not interfere run together
(several hosts, several faults on one host); the aggregation timer is off while the database is
down, so its failed run does not outlive the fault."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from labkit import emsops

from lab import faults
from lab.fingerprint import diff, fingerprint
from tests.support.waiting import wait_for

pytestmark = pytest.mark.lab

BATCHES = {
    "app-license-release-db-config-disk-crashloop-conflict": {
        "ems-app": ["timer-disabled", "license-missing", "release-file-corrupt"],
        "ems-db": ["db-config-broken"],
        "ems-gw1": ["disk-full"],
        "meters": ["unit-crashloop"],
        "backup": ["ip-conflict"],
    },
    "config-corrupt-db-down-masked-config-missing": {
        "ems-app": ["timer-disabled", "config-corrupt"],
        "ems-db": ["db-down"],
        "ems-gw1": ["unit-masked"],
        "meters": ["config-missing"],
    },
    "stopped-link-broken-logs": {
        "ems-app": ["disk-full-logs"],
        "ems-gw1": ["unit-stopped"],
        "meters": ["release-link-broken"],
    },
}


def test_the_batches_cover_every_kind():
    assert {k for batch in BATCHES.values() for kinds in batch.values() for k in kinds} == set(
        faults.KINDS)


def settled(host: str, before: dict, timeout_s: float = 30) -> list[str]:
    """The host's differences from `before` once they are gone, or the last ones seen."""
    changes: list[str] = []

    def gone() -> bool:
        changes[:] = diff(before, fingerprint(host))
        return not changes

    with contextlib.suppress(AssertionError):  # the caller reports what is left
        wait_for(gone, timeout_s, f"{host}'s fingerprint to settle")
    return changes


@pytest.mark.parametrize("batch", list(BATCHES))
def test_faults_show_their_symptom_and_clear_back_to_the_fingerprint(lab_site, batch):
    plan = BATCHES[batch]
    started = time.monotonic()
    pool = ThreadPoolExecutor(len(plan))  # hosts are independent: one thread each
    before = dict(zip(plan, pool.map(fingerprint, plan), strict=True))
    print(f"fingerprints at {time.monotonic() - started:.1f}s")
    first = next(iter(plan))  # the command line for one host, the module for the rest (faster)

    def inject(host: str) -> None:
        for kind in plan[host]:
            if host == first and kind == plan[host][0]:
                proc = emsops("lab", "fault", host, kind)
                assert proc.returncode == 0, proc.stderr
            else:
                faults.inject(host, kind)

    def symptoms(host: str) -> dict[str, str]:
        seen: dict[str, str] = {}

        def all_seen() -> bool:
            for kind in plan[host]:
                if kind not in seen and (evidence := faults.symptom(host, kind)):
                    seen[kind] = evidence
            return len(seen) == len(plan[host])

        with contextlib.suppress(AssertionError):  # the caller names the symptoms missing
            wait_for(all_seen, 40, f"the symptoms on {host}")
        return seen

    try:
        # ems-app's timer goes off first: inject in plan order, the other hosts meanwhile.
        inject(first)
        list(pool.map(inject, list(plan)[1:]))
        for host, kinds in plan.items():
            assert faults.active(host) == kinds
        evidence = {(h, k): e for h, seen in zip(plan, pool.map(symptoms, plan), strict=True)
                    for k, e in seen.items()}
        wanted = [(h, k) for h, kinds in plan.items() for k in kinds]
        missing = [f"{h} {k}" for h, k in wanted if (h, k) not in evidence]
        assert not missing, f"no symptom of {missing}; seen: {evidence}"
        print("\n".join(f"{h} {k}: {e}" for (h, k), e in evidence.items()))
        print(f"symptoms at {time.monotonic() - started:.1f}s")
    finally:
        # Newest first across hosts too: the database is back before the aggregation timer.
        last = list(plan)[-1]
        proc = emsops("lab", "fault", "--clear", last)
        assert proc.returncode == 0, proc.stderr
        for host in reversed(plan):
            faults.clear(host)
        print(f"cleared at {time.monotonic() - started:.1f}s")
    for host, kinds in plan.items():
        assert not faults.active(host)
        for kind in kinds:
            assert faults.symptom(host, kind) is None, f"{host} still shows {kind}"
    changes = dict(zip(plan, pool.map(lambda h: settled(h, before[h]), plan), strict=True))
    pool.shutdown()
    assert not any(changes.values()), f"clearing did not restore the fingerprints: {changes}"
