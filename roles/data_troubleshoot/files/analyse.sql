-- Data troubleshooting: one read-only pass over the readings of a window, per meter, on the
-- database host (nothing is pulled to the controller). Run by role data_troubleshoot with psql
-- as postgres, switching to the database owner; prints one JSON document.
--
-- psql variables (all required, strings):
--   owner     the database owner (SET ROLE)
--   since     window start, ISO 8601 with offset, or '' (the last 24 h or since the first
--             reading of the meters, whichever is shorter)
--   until     window end (exclusive), or '' (now)
--   meters    JSON [{"meter_id", "gateway_id", "interval_s", "max_power_kw"}]
--   gap_factor           a step longer than gap_factor x interval_s is a gap
--   dip_reset_pct        a counter drop below this percentage is a dip, at or above a reset
--   max_days  the longest window: an earlier `since` is moved up to `until` - max_days
--   stuck_min_readings   this many consecutive equal counters under load are a stuck meter
--   ranges    JSON [{"meter_id", "from", "to"}]: readings counted in each (both ends exclusive),
--             to prove a fix filled a gap ('[]' for none)
\set ON_ERROR_STOP on
SET ROLE :"owner";
BEGIN TRANSACTION READ ONLY;
WITH params AS (
  SELECT :'meters'::jsonb AS meters, :'gap_factor'::float8 AS gap_factor,
         :'dip_reset_pct'::float8 AS dip_reset_pct,
         :'stuck_min_readings'::int AS stuck_min_readings,
         coalesce(nullif(:'until', '')::timestamptz, now()) AS until,
         nullif(:'since', '')::timestamptz AS since, :'max_days'::int AS max_days
), meter AS (
  SELECT m->>'meter_id' AS meter_id, m->>'gateway_id' AS gateway_id,
         (m->>'interval_s')::float8 AS interval_s, (m->>'max_power_kw')::float8 AS max_power_kw
  FROM params, jsonb_array_elements(params.meters) AS m
), win AS (
  -- The first reading of each meter through the primary key (meter_id, ts): no scan.
  SELECT p.until,
         greatest(coalesce(p.since, greatest(p.until - interval '24 hours',
                                             (SELECT min(f.ts) FROM meter k, LATERAL (
                                                SELECT ts FROM readings r
                                                WHERE r.meter_id = k.meter_id
                                                ORDER BY ts LIMIT 1) f))),
                  p.until - make_interval(days => p.max_days)) AS since
  FROM params p
), r AS (
  SELECT r.meter_id, r.ts, r.kwh, r.power, r.gateway_id,
         lag(r.ts) OVER w AS prev_ts, lag(r.kwh) OVER w AS prev_kwh,
         k.interval_s, k.max_power_kw
  FROM readings r JOIN meter k USING (meter_id), win
  WHERE r.ts >= win.since AND r.ts < win.until
  WINDOW w AS (PARTITION BY r.meter_id ORDER BY r.ts)
), steps AS (
  SELECT r.*, r.kwh - r.prev_kwh AS delta,
         extract(epoch FROM r.ts - r.prev_ts) AS step_s,
         (r.kwh = r.prev_kwh AND r.power <> 0) AS frozen
  FROM r
), islands AS (
  -- A frozen step joins the island of the reading whose value froze.
  SELECT s.*, sum(CASE WHEN s.frozen THEN 0 ELSE 1 END) OVER (
           PARTITION BY s.meter_id ORDER BY s.ts) AS island
  FROM steps s
), per_gateway AS (
  SELECT gateway_id, max(ts) AS newest FROM r GROUP BY gateway_id
), gaps AS (
  SELECT s.meter_id, s.prev_ts AS gap_from, s.ts AS gap_to, s.interval_s
  FROM steps s, params p
  WHERE s.prev_ts IS NOT NULL AND extract(epoch FROM s.ts - s.prev_ts) > p.gap_factor * s.interval_s
  UNION ALL
  -- Before the meter's first reading of the window, and after its last one up to the newest
  -- reading of its gateway (a meter its gateway still reads around is missing, not late).
  SELECT k.meter_id, e.gap_from, e.gap_to, k.interval_s
  FROM meter k, win, params p,
       LATERAL (SELECT min(ts) AS first, max(ts) AS last FROM r WHERE r.meter_id = k.meter_id) b,
       LATERAL (SELECT newest FROM per_gateway g WHERE g.gateway_id = k.gateway_id) gw,
       LATERAL (VALUES (win.since, coalesce(b.first, gw.newest)),
                       (b.last, gw.newest)) AS e(gap_from, gap_to)
  WHERE e.gap_from IS NOT NULL AND e.gap_to IS NOT NULL
    AND extract(epoch FROM e.gap_to - e.gap_from) > p.gap_factor * k.interval_s
), days AS (
  SELECT k.meter_id, d.day,
         greatest(d.day, win.since) AS from_ts, least(d.day + interval '1 day', win.until) AS to_ts,
         k.interval_s
  FROM meter k, win,
       generate_series(date_trunc('day', win.since AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                       win.until - interval '1 microsecond', interval '1 day') AS d(day)
), day_counts AS (
  SELECT meter_id, date_trunc('day', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day,
         count(*)::int AS samples
  FROM r GROUP BY 1, 2
), completeness AS (
  SELECT d.meter_id, d.day, d.from_ts, d.to_ts,
         -- Whole intervals only: a window's partial first and last intervals expect nothing.
         floor(extract(epoch FROM d.to_ts - d.from_ts) / d.interval_s)::int AS expected,
         coalesce(c.samples, 0) AS samples
  FROM days d LEFT JOIN day_counts c USING (meter_id, day)
)
SELECT json_build_object(
  'ranges', (SELECT coalesce(json_agg(json_build_object(
                'meter_id', g->>'meter_id', 'from', g->>'from', 'to', g->>'to',
                'readings', (SELECT count(*) FROM readings x WHERE x.meter_id = g->>'meter_id'
                               AND x.ts > (g->>'from')::timestamptz
                               AND x.ts < (g->>'to')::timestamptz))), '[]')
             FROM jsonb_array_elements(:'ranges'::jsonb) AS g),
  'window', (SELECT json_build_object('since', to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                                      'until', to_char(until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
             FROM win),
  'meters', (SELECT coalesce(json_object_agg(k.meter_id, json_build_object(
    'gateway_id', k.gateway_id,
    'interval_s', k.interval_s,
    'max_power_kw', k.max_power_kw,
    'readings', (SELECT count(*) FROM r WHERE r.meter_id = k.meter_id),
    'first', (SELECT to_char(min(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') FROM r WHERE r.meter_id = k.meter_id),
    'last', (SELECT to_char(max(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') FROM r WHERE r.meter_id = k.meter_id),
    'days', (SELECT coalesce(json_agg(json_build_object(
                'day', to_char(c.day AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
                'expected', c.expected, 'samples', c.samples,
                'pct', CASE WHEN c.expected > 0
                            THEN round(least(100.0, 100.0 * c.samples / c.expected), 1) END)
              ORDER BY c.day), '[]') FROM completeness c WHERE c.meter_id = k.meter_id),
    'gaps', (SELECT coalesce(json_agg(json_build_object(
                'from', to_char(g.gap_from AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'to', to_char(g.gap_to AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'seconds', round(extract(epoch FROM g.gap_to - g.gap_from)::numeric, 3),
                'missing', greatest(1, round(extract(epoch FROM g.gap_to - g.gap_from) / g.interval_s)::int - 1))
              ORDER BY g.gap_from), '[]') FROM gaps g WHERE g.meter_id = k.meter_id),
    'drops', (SELECT coalesce(json_agg(json_build_object(
                'kind', CASE WHEN 100.0 * (s.prev_kwh - s.kwh) / nullif(s.prev_kwh, 0) < p.dip_reset_pct
                             THEN 'dip' ELSE 'reset' END,
                'ts', to_char(s.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'prev_ts', to_char(s.prev_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'from_kwh', s.prev_kwh, 'to_kwh', s.kwh) ORDER BY s.ts), '[]')
              FROM steps s, params p
              WHERE s.meter_id = k.meter_id AND s.kwh >= 0 AND s.prev_kwh > s.kwh),
    'negatives', (SELECT coalesce(json_agg(json_build_object(
                'ts', to_char(s.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'kwh', s.kwh) ORDER BY s.ts), '[]')
              FROM steps s WHERE s.meter_id = k.meter_id AND s.kwh < 0),
    'spikes', (SELECT coalesce(json_agg(json_build_object(
                'ts', to_char(s.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'prev_ts', to_char(s.prev_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'delta_kwh', round(s.delta::numeric, 3),
                'power_kw', round((s.delta * 3600 / s.step_s)::numeric, 1)) ORDER BY s.ts), '[]')
              FROM steps s
              WHERE s.meter_id = k.meter_id AND s.delta > 0 AND s.step_s > 0
                AND s.delta * 3600 / s.step_s > s.max_power_kw),
    'stuck', (SELECT coalesce(json_agg(json_build_object(
                'from', to_char(i.first AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'to', to_char(i.last AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'readings', i.n, 'kwh', i.kwh, 'power', i.power) ORDER BY i.first), '[]')
              FROM (SELECT min(ts) AS first, max(ts) AS last, count(*) AS n, min(kwh) AS kwh,
                           max(power) AS power
                    FROM islands WHERE meter_id = k.meter_id
                    GROUP BY island HAVING count(*) FILTER (WHERE frozen) > 0) i, params p
              WHERE i.n >= p.stuck_min_readings)
  )), '{}') FROM meter k)
);
COMMIT;
