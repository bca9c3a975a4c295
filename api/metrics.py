"""Prometheus metrics of one app instance (own registry: several apps can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "emsops_decisions_total",
            "Entitlement decisions on job requests",
            ["service", "outcome"],
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "emsops_jobs_finished_total",
            "Jobs that reached a terminal state",
            ["service", "state"],
            registry=self.registry,
        )
        self.jobs_running = Gauge(
            "emsops_jobs_running", "Playbook runs in progress", registry=self.registry
        )
        self.job_seconds = Histogram(
            "emsops_job_duration_seconds",
            "Wall time of a job from start to verdict",
            ["service"],
            registry=self.registry,
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
        )
