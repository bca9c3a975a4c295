"""Issue 11 on real hosts: a patch upgrade within the minor line, asked through the API (whose
site record then follows the hosts), applies its migrations and keeps every reading; the broken
patch 3.2.3 fails its health check and is rolled back by itself, its database too (its migration
0005 is not backward compatible: 3.2.2 cannot store on it), with every reading the gateway had
confirmed still there; every refusal changes nothing
on any host (issue 9's fingerprints), and the same version is a no-op. The site ends on the
release it started on."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from labapi import CUSTOMER, served
from labkit import (
    RELEASES,
    address,
    backlog_drained,
    custom_stats,
    http_json,
    lab_ssh,
    layout,
    missing_in_database,
    psql_command,
    recap,
    run_playbook,
    spool_readings,
)

from lab.fingerprint import diff, fingerprint
from tests.support.waiting import wait_for

pytestmark = pytest.mark.lab
EMS_HOSTS = ("ems-app", "ems-db", "ems-gw1")
# Hosts whose every file and unit a refused upgrade must leave alone (backup: no snapshot taken).
FINGERPRINTED = (*EMS_HOSTS, "backup")
FAST = ["-e", "patch_upgrade_health_timeout_s=20"]


def upgrade(target: str, *args: str, check: bool = True):
    proc = run_playbook("upgrade.yml", "-e", f"patch_upgrade_target_version={target}", *FAST,
                        *args, check=check, stats=True)
    return proc, custom_stats(proc.stdout).get("patch_upgrade", {})


def sql(query: str) -> str:
    return lab_ssh("ems-db", psql_command(query)).stdout.strip()


def readings_until(stamp: str) -> dict[str, str]:
    """Per meter: count and checksum of every reading the platform had received by `stamp`."""
    out = sql("SELECT meter_id, count(*) || ':' || md5(string_agg(ts::text || '/' || kwh::text, ','"
              f" ORDER BY ts)) FROM readings WHERE received_at <= '{stamp}' GROUP BY 1 ORDER BY 1")
    return dict(line.split() for line in out.splitlines())


def health(host: str, port_var: str) -> tuple[int, str]:
    """(HTTP status, version) of a host's EMS `/health` (a 503 still names its version)."""
    url = f"http://{address(host)}:{layout(host)[port_var]}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - lab address
            return resp.status, json.load(resp)["version"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)["version"]
    except OSError as exc:  # not listening (restarting)
        return 0, str(exc)


def versions() -> dict[str, tuple[int, str]]:
    return {"ems-app": health("ems-app", "ems_layout_platform_port"),
            "ems-gw1": health("ems-gw1", "ems_layout_gateway_status_port")}


def deploy_release(version: str) -> None:
    """The engineer's deliberate downgrade with site.yml's release part (which applies the
    release's own migrations: a no-op unless a failed run left the schema behind), until
    healthy."""
    run_playbook("site.yml", "--limit", "ems_app:ems_gateways", "--tags", "ems_release",
                 "-e", f"ems_release_version={version}", "-e", "ems_release_allow_downgrade=true")
    healthy = {"ems-app": (200, version), "ems-gw1": (200, version)}
    wait_for(lambda: versions() == healthy, 60, f"the site healthy on {version}")


def tagged_snapshot_hosts(tag: str) -> set[str]:
    """The EMS hosts with a snapshot tagged `tag` in their own repository."""
    def tagged(host: str) -> bool:
        script = layout(host)["ems_layout_backup_script"]
        snaps = json.loads(lab_ssh(host, f"{script} snapshots").stdout)
        return any(tag in s.get("tags", []) for s in snaps)
    with ThreadPoolExecutor(len(EMS_HOSTS)) as pool:
        return {h for h, t in zip(EMS_HOSTS, pool.map(tagged, EMS_HOSTS), strict=True) if t}


@pytest.fixture(scope="module")
def site(lab_site) -> Path:
    """The lab site on its inventory's release, every EMS host with the backup tooling that can
    tag a run (another test may have rebuilt a host without it)."""
    def lacks_tooling(host: str) -> bool:
        script = layout(host)["ems_layout_backup_script"]
        return bool(lab_ssh(host, f"grep -q -- '--tag KEY=VALUE' {script}", check=False).returncode)
    if any(lacks_tooling(host) for host in EMS_HOSTS):
        run_playbook("backup.yml")
    return lab_site


def releases_dropping(out: Path, version: str, module: str) -> Path:
    """A copy of the lab's releases in which `version` no longer ships `module` (its manifest,
    and its SHA256SUMS line to match): a vendor's patch that dropped a module."""
    shutil.copytree(RELEASES, out)
    name = f"kangpai-ems-{version}.tar.gz"
    with tarfile.open(RELEASES / name) as src, tarfile.open(out / name, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            if member.name == "manifest.json":
                manifest = json.load(data)
                manifest["modules"].remove(module)
                raw = json.dumps(manifest).encode()
                member.size, data = len(raw), io.BytesIO(raw)
            dst.addfile(member, data)
    digest = hashlib.sha256((out / name).read_bytes()).hexdigest()
    sums = (out / "SHA256SUMS").read_text().splitlines()
    (out / "SHA256SUMS").write_text("".join(
        f"{digest}  {name}\n" if line.endswith(f"  {name}") else f"{line}\n" for line in sums))
    return out


def fingerprints() -> dict[str, dict]:
    with ThreadPoolExecutor(len(FINGERPRINTED)) as pool:
        return dict(zip(FINGERPRINTED, pool.map(fingerprint, FINGERPRINTED), strict=True))


def test_refused_upgrades_change_nothing_and_the_same_version_is_a_no_op(site, tmp_path):
    installed = layout("ems-app")["ems_release_version"]
    line = ".".join(installed.split(".")[:2])
    assert versions() == {"ems-app": (200, installed), "ems-gw1": (200, installed)}
    tampered = tmp_path / "releases"
    shutil.copytree(RELEASES, tampered)
    with open(tampered / "kangpai-ems-3.2.2.tar.gz", "ab") as f:
        f.write(b"\0")
    dropped = releases_dropping(tmp_path / "dropped", "3.2.2", "gas")
    before = fingerprints()
    refusals = [
        ("3.3.0", [], f"outside the installed line {line}"),
        ("3.2.0", [], f"older than the installed {installed}"),
        ("3.2.9", [], "release 3.2.9 not found"),
        ("3.2.2", ["-e", f"ems_release_artifact_dir={tampered}"], "does not match its line"),
        ("3.2.2", ["-e", f"ems_release_artifact_dir={dropped}"],
         "3.2.2 lacks the licensed module(s) gas"),
        ("3.2.2", ["--limit", "ems_app"], "this run leaves out ems-gw1"),
    ]
    for target, args, why in refusals:
        proc, _ = upgrade(target, *args, check=False)
        assert proc.returncode != 0, f"→ {target} was not refused:\n{proc.stdout[-3000:]}"
        assert why in proc.stdout, f"→ {target}: {why!r} not said:\n{proc.stdout[-3000:]}"
        assert "upgrade | " not in proc.stdout, f"→ {target} got past preflight"
    proc, report = upgrade(installed)
    assert report["result"] == "already at" and report["message"] == f"already at {installed}"
    assert all(counts["changed"] == 0 for counts in recap(proc.stdout).values()), proc.stdout
    after = fingerprints()
    changes = {h: diff(before[h], after[h]) for h in FINGERPRINTED}
    assert not any(changes.values()), f"a refused upgrade changed the site: {changes}"


def api_upgrade(api, ticket: str, target: str) -> tuple[int, dict]:
    return api.call("POST", "/v1/jobs", api.engineer, {
        "ticket_id": ticket, "customer_id": CUSTOMER, "service": "upgrade",
        "limit": "ems_app:ems_db:ems_gateways", "parameters": {"target_version": target}})


def installed_on_record(api) -> str | None:
    return api.call("GET", f"/v1/customers/{CUSTOMER}/site", api.admin)[1]["installed_version"]


def test_upgrade_applies_migrations_keeps_data_and_a_broken_patch_rolls_back(site, tmp_path):
    original = layout("ems-app")["ems_release_version"]
    try:
        # A 3.2.0 site: its release, and its database without 3.2.1's migration 0003.
        deploy_release("3.2.0")
        sql("BEGIN; DROP INDEX IF EXISTS readings_received_at_idx; "
            "DELETE FROM schema_migrations WHERE version = 3; COMMIT")
        started = sql("SELECT now()")
        kept = readings_until(started)

        # The ticket system asks for it: refused on a lapsed contract (no job), free on an
        # active one; the job's real host suites expect the target, and the site's record
        # takes the version the hosts then report.
        with served(site, tmp_path) as api:
            status, body = api.call("PUT", f"/v1/customers/{CUSTOMER}/site", api.admin,
                                    {"inventory": str(site), "installed_version": "3.2.0"})
            assert status == 200, body
            api.contract("lapsed")
            status, body = api_upgrade(api, "T-UP-0", "3.2.2")
            assert (status, body["error"]["detail"]["rule"]) == (403, "upgrade.lapsed_contract")
            api.contract("active")
            status, job = api_upgrade(api, "T-UP-1", "3.2.2")
            assert status == 202 and job["decision"]["outcome"] == "covered", job
            done = api.wait_finished(api.engineer, job["id"])
            assert done["state"] == "succeeded", (done["error"], done["verification"])
            observed = {h: v["observed"].get("version")
                        for h, v in done["verification"]["hosts"].items()}
            assert observed == {"ems-app": "3.2.2", "ems-db": None, "ems-gw1": "3.2.2"}
            assert installed_on_record(api) == "3.2.2"
        report = done["set_stats"]["patch_upgrade"]
        assert report["result"] == "upgraded", report
        assert "set ems_release_version to 3.2.2 in the inventory" in report["message"]
        assert versions() == {"ems-app": (200, "3.2.2"), "ems-gw1": (200, "3.2.2")}
        platform = layout("ems-app")
        enabled = http_json(f"http://{address('ems-app')}:"
                            f"{platform['ems_layout_platform_port']}/health")["enabled_modules"]
        assert sorted(enabled) == sorted(platform["ems_platform_license"]["modules"]), enabled
        assert sql("SELECT release FROM schema_migrations WHERE version = 3") == "3.2.2"
        assert sql("SELECT count(*) FROM pg_indexes "
                   "WHERE indexname = 'readings_received_at_idx'") == "1"
        assert readings_until(started) == kept, "readings from before the upgrade changed"
        assert int(sql(f"SELECT count(*) FROM readings WHERE received_at > '{started}'")) > 0
        assert tagged_snapshot_hosts("pre-upgrade=3.2.0-3.2.2") >= set(EMS_HOSTS)

        proc = run_playbook("site.yml", "--limit", "ems_app", "--tags", "ems_release",
                            check=False)
        assert proc.returncode != 0 and "newer than the inventory's" in proc.stdout, \
            proc.stdout[-3000:]

        started, since = sql("SELECT now()"), float(sql("SELECT extract(epoch FROM now())"))
        kept = readings_until(started)
        proc, report = upgrade("3.2.3", "-e", "patch_upgrade_health_timeout_s=8", check=False)
        assert proc.returncode != 0, proc.stdout[-3000:]
        assert report["result"] == "rolled back" and report["host"] == "ems-app", report
        assert "self-test" in report["failed_check"], report
        assert report["database_restored"] is True, report
        assert report["not_backward_compatible"] == ["0005_readings_source.sql"], report
        assert "not backward compatible: 0005_readings_source.sql" in report["message"], report
        # (Whether its history reaches back the whole margin depends on the spool's age.)
        assert report["replay"]["ems-gw1"]["replayed"] > 0, report
        assert versions() == {"ems-app": (200, "3.2.2"), "ems-gw1": (200, "3.2.2")}
        assert sql("SELECT max(version) FROM schema_migrations") == "3"
        assert sql("SELECT count(*) FROM information_schema.columns "
                   "WHERE table_name = 'readings' AND column_name = 'source'") == "0"
        assert readings_until(started) == kept, "readings changed across the rollback"
        # Every reading the gateway took since the start is stored: those the restore took
        # away after the platform had confirmed them came again with the replay.
        wait_for(lambda: backlog_drained("ems-gw1"), 60, "ems-gw1's backlog to drain")
        taken = spool_readings("ems-gw1", since)
        lost = missing_in_database(taken)
        assert taken and not lost, f"{len(lost)} of {len(taken)} readings lost: {sorted(lost)[:5]}"
        after = sql("SELECT now()")
        wait_for(lambda: int(sql(f"SELECT count(*) FROM readings WHERE received_at > '{after}'")),
                 30, "3.2.2 storing readings again after the rollback")
    finally:
        deploy_release(original)
        # The pre-upgrade snapshots recorded the releases of this test: the newest snapshots
        # must name the release the site runs again (a reinstall deploys the recorded one).
        run_playbook("backup.yml", "--limit", ",".join(EMS_HOSTS))
