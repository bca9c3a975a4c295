"""Runs queued jobs: ansible-runner in a thread pool, then verification, then the webhook.

Each run gets a fresh private folder (0700) under the data folder. Caller parameters travel in a
vars file there, every string tagged `!unsafe`, loaded with `-e @file`: the command line holds its
path, never its values. The vault password is copied there 0600 for the run only. After the run
only the redacted stdout, rc and status stay.
"""

from __future__ import annotations

import configparser
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleError

from api import store as st
from api.environment import confine, run_environment
from api.inventory import Redactor, vault_secrets
from api.metrics import Metrics
from api.models import role_inputs
from api.settings import Settings
from api.store import Store
from api.webhooks import Notifier

log = logging.getLogger(__name__)

Verifier = Callable[[Path, "str | None", Mapping[str, str]], dict]
STAT_KEYS = ("ok", "changed", "dark", "failures", "ignored", "processed", "rescued", "skipped")
KEPT_ARTIFACTS = ("rc", "status", "stdout", "stderr")
# Events are stored in batches: at most this many, held at most about this long (ansible-runner
# asks the cancel callback at least once a second, which also flushes a quiet run's events).
FLUSH_EVENTS = 64
FLUSH_S = 0.5
# Playbooks whose own set_stats say whether they did their work, instead of the host suites:
# the drill's layered checks on standby, which no testinfra suite describes; an inspection, which
# changes nothing and is done when it reported on its hosts (a broken site is its finding, in the
# report, not a failed job).
SELF_VERIFYING: dict[str, Callable[[dict], bool]] = {
    "drill": lambda stats: bool((stats.get("drill") or {}).get("ok")),
    "inspect": lambda stats: bool(stats.get("inspection")),
    # A network repair confirms each change itself, over the new address; the stored inventory
    # names the old ones until the engineer writes in those the report lists.
    "repair_network": lambda stats: bool(stats.get("network_repair")),
}



def _upgraded_release(stats: dict) -> dict[str, str]:
    report = stats.get("patch_upgrade") or {}
    if report.get("result") in ("upgraded", "already at") and report.get("to"):
        return {"ems_release_version": str(report["to"])}
    return {}


def _recorded_release(stats: dict) -> dict[str, str]:
    versions = {str(r["version"]) for r in (stats.get("reinstall") or {}).values()
                if isinstance(r, dict) and r.get("version")}
    return {"ems_release_version": versions.pop()} if len(versions) == 1 else {}


# What a successful run changed on purpose, over the inventory's values, from its set_stats: the
# host suites expect these. An upgraded site runs the target while the inventory still names the
# release it had (the report tells the engineer to update it); a reinstalled host runs the
# release its snapshot recorded.
EXPECTED_CHANGES: dict[str, Callable[[dict], dict[str, str]]] = {
    "upgrade": _upgraded_release,
    "reinstall": _recorded_release,
}


def default_verifier(inventory: Path, limit: str | None, expect: Mapping[str, str]) -> dict:
    """The testinfra suites of tests/hosts/, run by api.verify (imported late: it is optional
    until the lab exists and pulls in pytest)."""
    from api.verify import run_verification

    return run_verification(inventory, limit, expect)


def observed_version(verification: dict) -> str | None:
    """The one release the verified hosts report running (None when none reports one, or when
    they disagree: a site half on one release has no single installed version)."""
    versions = {v["observed"]["version"] for v in (verification.get("hosts") or {}).values()
                if (v.get("observed") or {}).get("version")}
    return versions.pop() if len(versions) == 1 else None


class _Unsafe(str):
    """A caller string, written with YAML's `!unsafe` tag so Ansible never templates it."""


class _VarsDumper(yaml.SafeDumper):
    pass


_VarsDumper.add_representer(
    _Unsafe, lambda dumper, data: dumper.represent_scalar("!unsafe", str(data), style='"')
)


def _mark_unsafe(value: Any) -> Any:
    if isinstance(value, str):
        return _Unsafe(value)
    if isinstance(value, dict):
        return {str(k): _mark_unsafe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mark_unsafe(v) for v in value]
    return value


def write_private(path: Path, text: str) -> None:
    """Create `path` readable by its owner only, before any byte is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


class RunError(Exception):
    """A job cannot be run as configured (reported as the job's error)."""


def ansible_cfg_vault_file(project_dir: Path) -> Path | None:
    """The vault password file ansible-playbook would use from the project's ansible.cfg."""
    configured = os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE")
    if not configured:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(project_dir / "ansible.cfg")
        configured = parser.get("defaults", "vault_password_file", fallback=None)
    if not configured:
        return None
    path = Path(configured).expanduser()
    return path if path.is_absolute() else project_dir / path


def ansible_cfg_host_key_checking(project_dir: Path) -> str:
    """Host key checking as ansible-playbook would have it (ansible's default: on).

    ansible-runner switches it off unless the environment says otherwise, which would let a
    job talk to any host that answers on a site's address: so the API always says.
    """
    configured = os.environ.get("ANSIBLE_HOST_KEY_CHECKING")
    if configured is None:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(project_dir / "ansible.cfg")
        configured = parser.get("defaults", "host_key_checking", fallback="True")
    return configured


def read_vault_password(path: Path) -> str:
    """As ansible does: an executable file prints the password, any other file holds it."""
    if os.access(path, os.X_OK):
        # The helper is a program of the operator's: it gets a run's environment, not ours.
        env = run_environment()
        result = subprocess.run(
            [str(path)], capture_output=True, text=True, check=True, timeout=30, env=env
        )
        return result.stdout.strip()
    return path.read_text(encoding="utf-8").strip()


def kill_processes_using(private: Path) -> list[int]:
    """SIGKILL the process groups of processes whose command line names `private` (Linux)."""
    marker = str(private).encode()
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "cmdline").read_bytes():
                continue
            pid = int(entry.name)
            group = os.getpgid(pid)
            if group == os.getpgrp():
                os.kill(pid, signal.SIGKILL)
            else:
                os.killpg(group, signal.SIGKILL)
            killed.append(pid)
        except (OSError, ProcessLookupError):
            continue  # gone meanwhile, or not ours to read
    # Gone before the caller goes on (another job may take the hosts next): the run's locks on
    # the hosts are released by their watchers once these processes have ended.
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    return killed


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name ([0] the state, [19] the start time)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _running(pid: int) -> bool:
    """Running, not a zombie (whoever has to reap it: an orphan's is init)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def runner_id(pid: int | None = None) -> str:
    """A process (default: this one) as a job's `runner`: host, pid and start time (a reused pid
    has another start time)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_stat(pid)[19]}"


def runner_alive(runner: str | None) -> bool:
    """Whether the process that claimed a job still runs. A job claimed on another machine counts
    as gone: the embedded store (SQLite) belongs to one machine."""
    host, _, rest = (runner or "").partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return _running(int(pid)) and _stat(int(pid))[19] == started


class _RunCallbacks:
    """ansible-runner's callbacks for one job, all called on the job's worker thread."""

    def __init__(
        self,
        *,
        job_id: str,
        store: Store,
        redactor: Redactor,
        cancel: threading.Event,
        stopping: threading.Event,
        on_event: Callable[[dict], None] | None = None,
    ) -> None:
        self.job_id, self.store, self.redactor = job_id, store, redactor
        self.cancel, self.stopping, self.on_event = cancel, stopping, on_event
        self.stats: dict[str, Any] | None = None
        self.status: str | None = None
        self._pending: list[dict[str, Any]] = []
        self._pending_since = 0.0

    def event(self, data: dict[str, Any]) -> bool:
        # Redact in place: ansible-runner writes this same dict to artifacts/job_events after us.
        clean = self.redactor.value(data)
        data.clear()
        data.update(clean)
        event_data = data.get("event_data") or {}
        if data.get("event") == "playbook_on_stats":
            self.stats = event_data
        if "counter" in data:
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append(
                {
                    "counter": int(data["counter"]),
                    "event": data.get("event", ""),
                    "host": event_data.get("host"),
                    "task": event_data.get("task"),
                    "created": data.get("created"),
                    "stdout": data.get("stdout"),
                    "data": {k: v for k, v in data.items() if k != "stdout"},
                }
            )
            self._flush_if_due()
        if self.on_event is not None:
            self.on_event(data)
        return True

    def flush(self) -> None:
        """Store the pending events, in counter order, in one transaction."""
        if self._pending:
            pending, self._pending = self._pending, []
            self.store.add_events(self.job_id, pending)

    def _flush_if_due(self) -> None:
        if len(self._pending) >= FLUSH_EVENTS or (
            self._pending and time.monotonic() - self._pending_since >= FLUSH_S
        ):
            self.flush()

    def status_changed(self, data: dict[str, Any], runner_config: Any = None) -> None:
        self.flush()  # a reader who sees the final playbook status finds every event stored
        self.status = data["status"]
        self.store.update_job(self.job_id, only_if_state=st.RUNNING, playbook_status=self.status)

    def cancelled(self) -> bool:
        self._flush_if_due()  # called at least once a second, so held events never go stale
        return self.cancel.is_set() or self.stopping.is_set()

    def host_stats(self) -> dict[str, dict[str, int]]:
        per_host: dict[str, dict[str, int]] = {}
        for key in STAT_KEYS:
            for host, count in ((self.stats or {}).get(key) or {}).items():
                per_host.setdefault(host, dict.fromkeys(STAT_KEYS, 0))[key] = count
        return per_host


class JobRunner:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        verifier: Verifier,
        notifier: Notifier,
        metrics: Metrics,
        on_event: Callable[[dict], None] | None = None,
        webhooks: bool = True,
    ) -> None:
        self._settings, self._store, self._verifier = settings, store, verifier
        self._notifier, self._metrics = notifier, metrics
        self._on_event = on_event  # sees each redacted event (the command line's progress)
        self._webhooks = webhooks  # False: the jobs' ends queue no webhook (api.launch)
        self._pool = ThreadPoolExecutor(
            max_workers=settings.workers, thread_name_prefix="emsops-job"
        )
        self._cancel: dict[str, threading.Event] = {}
        self._cancel_lock = threading.Lock()
        self._stopping = threading.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Recover from a previous process: running jobs were interrupted, queued ones run."""
        interrupted, queued = self._store.recover(runner_alive)
        for job_id in interrupted:
            log.warning("job %s was running when the API stopped: interrupted", job_id)
            # Its ansible-playbook outlived the API (it runs in its own session): stop it before
            # another job may take the hosts whose locks were just released.
            kill_processes_using(self._settings.runs_dir / job_id)
            private = self._settings.runs_dir / job_id
            if private.is_dir():  # the vault password file and vars of the dead run go too
                try:
                    redactor = self._redactor(Path(self._store.get_job(job_id)["inventory"]))
                except RunError:
                    shutil.rmtree(private)  # cannot redact what is left: keep nothing
                else:
                    self._clean(private, job_id, redactor)
            self._notifier.notify(job_id)
        for job_id in queued:
            self.submit(job_id)

    def shutdown(self) -> None:
        """Stop: running playbooks are killed and recorded as interrupted, queued jobs stay."""
        self._stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- jobs ---------------------------------------------------------------------------------

    def submit(self, job_id: str) -> None:
        with self._cancel_lock:
            self._cancel.setdefault(job_id, threading.Event())
        self._pool.submit(self._run_logged, job_id)

    def run_now(self, job_id: str) -> None:
        """Run a queued job in the calling thread, as a worker would (api.launch)."""
        with self._cancel_lock:
            self._cancel.setdefault(job_id, threading.Event())
        self._run_logged(job_id)

    def cancel(self, job_id: str) -> dict:
        """Cancel a queued job at once; ask a running one to stop (its worker records it)."""
        if self._store.finish_job(
            job_id,
            state=st.CANCELED,
            only_if_state=st.QUEUED,
            cancel_requested=True,
            error="canceled before it ran",
        ):
            job = self._store.get_job(job_id)
            self._metrics.jobs_finished.labels(job["service"], st.CANCELED).inc()
            self._notifier.notify(job_id)
        elif self._store.update_job(job_id, only_if_state=st.RUNNING, cancel_requested=True):
            with self._cancel_lock:
                self._cancel.setdefault(job_id, threading.Event()).set()
        return self._store.get_job(job_id)

    def _run_logged(self, job_id: str) -> None:
        try:
            self._run(job_id)
        except RunError as exc:
            log.error("job %s failed before its playbook ran: %s", job_id, exc)
            self._finish(job_id, state=st.FAILED, error=str(exc))
        except Exception:
            log.exception("job %s failed in the runner", job_id)
            self._finish(job_id, state=st.FAILED, error="internal error in the runner")
        finally:
            with self._cancel_lock:
                self._cancel.pop(job_id, None)
            # However the job ended, finishing it queued its webhook: have it sent now.
            self._notifier.notify(job_id)

    def _finish(self, job_id: str, **fields: Any) -> None:
        self._store.finish_job(job_id, webhook=self._webhooks, **fields)

    def _run(self, job_id: str) -> None:
        if self._stopping.is_set():
            return  # stays queued; the next start runs it
        # Claiming queued -> running is the one transition that lets a worker start the playbook.
        if not self._store.update_job(
            job_id, only_if_state=st.QUEUED, state=st.RUNNING, started_at=st.now(),
            runner=runner_id(),
        ):
            return
        job = self._store.get_job(job_id)
        started = time.monotonic()
        self._metrics.jobs_running.inc()
        try:
            final = self._execute(job)
        finally:
            self._metrics.jobs_running.dec()
        self._finish(job_id, **final)
        self._metrics.jobs_finished.labels(job["service"], final["state"]).inc()
        self._metrics.job_seconds.labels(job["service"]).observe(time.monotonic() - started)

    def _execute(self, job: dict) -> dict[str, Any]:
        import ansible_runner

        settings = self._settings
        job_id = job["id"]
        inventory = Path(job["inventory"])
        redactor = self._redactor(inventory)  # first: a vault it cannot open stops the job here
        private = settings.runs_dir / job_id
        if private.exists():
            shutil.rmtree(private)  # a queued job re-run after a restart starts fresh
        private.mkdir(parents=True, mode=0o700)
        os.chmod(settings.runs_dir, 0o700)
        with self._cancel_lock:
            cancel = self._cancel.setdefault(job_id, threading.Event())
        try:
            vars_file = private / "emsops-vars.yml"
            write_private(
                vars_file,
                yaml.dump(
                    _mark_unsafe(
                        {
                            "emsops_job": self._job_vars(job),
                            **role_inputs(job["service"], job["parameters"]),
                        }
                    ),
                    Dumper=_VarsDumper,
                ),
            )
            (private / "env").mkdir(mode=0o700)
            # Read by ansible-runner even with env files suppressed: how often it checks cancel.
            write_private(private / "env" / "settings", "pexpect_timeout: 1\n")
            args = ["-e", f"@{vars_file}"]
            password = self._vault_password()
            if password is not None:
                pass_file = private / "vault-pass"
                write_private(pass_file, password + "\n")
                args += ["--vault-password-file", str(pass_file)]
            callbacks = _RunCallbacks(
                job_id=job_id,
                store=self._store,
                redactor=redactor,
                cancel=cancel,
                stopping=self._stopping,
                on_event=self._on_event,
            )
            try:
                runner = ansible_runner.interface.init_runner(
                    private_data_dir=str(private),
                    ident=job_id,
                    project_dir=str(settings.project_dir),
                    playbook=f"playbooks/{job['service']}.yml",
                    inventory=str(inventory),
                    limit=",".join(job["hosts"]),
                    cmdline=shlex.join(args),
                    suppress_env_files=True,
                    envvars=run_environment(
                        {
                            "ANSIBLE_HOST_KEY_CHECKING": ansible_cfg_host_key_checking(
                                settings.project_dir
                            )
                        }
                    ),
                    timeout=settings.job_timeout_s,
                    quiet=True,
                    event_handler=callbacks.event,
                    status_handler=callbacks.status_changed,
                    cancel_callback=callbacks.cancelled,
                )
                # ansible-runner.run() without the server's environment (see api.environment).
                runner.config.env = confine(runner.config.env)
                runner.run()
            finally:
                # Also when the run failed: keep what it did. Before the job turns terminal,
                # which SSE readers take to mean that no event comes after.
                callbacks.flush()
            return self._outcome(job, runner.status, runner.rc, callbacks)
        finally:
            # Ansible's workers run in their own sessions, so ansible-runner's kill of the
            # ansible-playbook process group on cancel or timeout misses them.
            kill_processes_using(private)
            self._clean(private, job_id, redactor)

    def _vault_password(self) -> str | None:
        """The password ansible-playbook will open vaults with: ours, else ansible.cfg's."""
        path = self._settings.vault_password_file or ansible_cfg_vault_file(
            self._settings.project_dir
        )
        return None if path is None else read_vault_password(path)

    def _redactor(self, inventory: Path) -> Redactor:
        """Masks the vault password and every vaulted value the run can see."""
        password = self._vault_password()
        if password is None:
            return Redactor(())
        extra = [self._settings.project_dir / "playbooks"]
        try:
            return Redactor({password} | vault_secrets(inventory, password, extra_dirs=extra))
        except AnsibleError as exc:
            raise RunError(
                f"the vault password does not open the inventory's vault: {exc}"
            ) from None

    @staticmethod
    def _job_vars(job: dict) -> dict[str, Any]:
        """The job as the playbooks see it, beside the role inputs of its parameters."""
        return {
            "id": job["id"],
            "ticket_id": job["ticket_id"],
            "customer_id": job["customer_id"],
            "service": job["service"],
            "parameters": job["parameters"],
            "note": job["note"],
            "entitlement": job["decision"].get("details", {}),
        }

    def _outcome(self, job: dict, status: str, rc: int, callbacks: _RunCallbacks) -> dict:
        final: dict[str, Any] = {
            "playbook_status": status,
            "rc": rc,
            "host_stats": callbacks.host_stats(),
            "set_stats": (callbacks.stats or {}).get("artifact_data") or {},
        }
        if status == "canceled":
            if self._stopping.is_set() and not callbacks.cancel.is_set():
                return {**final, "state": st.INTERRUPTED, "error": "the API stopped during the run"}
            return {**final, "state": st.CANCELED, "error": "canceled while running"}
        if status != "successful" or rc != 0:
            reason = "timed out" if status == "timeout" else f"playbook {status} (rc={rc})"
            return {**final, "state": st.FAILED, "verdict": False, "error": reason}
        if job["service"] in SELF_VERIFYING:
            verification = {
                "ok": SELF_VERIFYING[job["service"]](final["set_stats"]),
                "by": "playbook",
                "hosts": {},
            }
        else:
            expect = EXPECTED_CHANGES.get(job["service"], lambda _stats: {})(final["set_stats"])
            verification = self._verify(Path(job["inventory"]), ",".join(job["hosts"]), expect)
            self._record_installed_version(job, verification)
        verdict = bool(verification.get("ok"))
        failing = sorted(h for h, r in (verification.get("hosts") or {}).items() if not r.get("ok"))
        return {
            **final,
            "verification": verification,
            "verdict": verdict,
            "state": st.SUCCEEDED if verdict else st.FAILED,
            "error": None if verdict else self._failed_verification(verification, failing),
        }

    @staticmethod
    def _failed_verification(verification: dict, failing: list[str]) -> str:
        if verification.get("by") == "playbook":
            return "the playbook's own verification did not pass (its set_stats say so)"
        return "verification failed on: " + (", ".join(failing) or "?")

    def _record_installed_version(self, job: dict, verification: dict) -> None:
        """The site's record follows what its hosts report after a run, whatever changed them
        (this job, or an engineer's hand run before it)."""
        version = observed_version(verification)
        if version is not None and self._store.record_installed_version(
            customer_id=job["customer_id"], inventory=job["inventory"], version=version
        ):
            log.info("site of %s now on record as running %s (job %s)", job["customer_id"],
                     version, job["id"])

    def _verify(self, inventory: Path, limit: str, expect: Mapping[str, str]) -> dict:
        try:
            return self._verifier(inventory, limit, expect)
        except Exception as exc:  # a broken verifier fails the verdict, never the API
            log.exception("verification crashed")
            return {"ok": False, "hosts": {}, "error": f"verification crashed: {exc}"}

    @staticmethod
    def _clean(private: Path, job_id: str, redactor: Redactor) -> None:
        """Keep only the redacted stdout/stderr, rc and status of the run."""
        artifacts = private / "artifacts" / job_id
        for name in KEPT_ARTIFACTS:
            path = artifacts / name
            if path.is_file():
                path.write_text(
                    redactor.text(path.read_text(encoding="utf-8", errors="replace")),
                    encoding="utf-8",
                )
        for entry in list(private.iterdir()):
            if entry.name != "artifacts":
                _remove(entry)
        if artifacts.is_dir():
            for entry in list(artifacts.iterdir()):
                if entry.name not in KEPT_ARTIFACTS:
                    _remove(entry)
