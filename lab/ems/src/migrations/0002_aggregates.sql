-- Interval energy rollups and the record of every scheduled job run.
CREATE TABLE aggregates (
    meter_id text NOT NULL,
    interval_minutes integer NOT NULL,
    interval_start timestamptz NOT NULL,
    energy_kwh double precision NOT NULL,
    samples integer NOT NULL,
    flags text[] NOT NULL DEFAULT '{}',
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, interval_minutes, interval_start)
);

CREATE TABLE job_runs (
    id bigserial PRIMARY KEY,
    job text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    detail jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX job_runs_job_started_idx ON job_runs (job, started_at DESC);
