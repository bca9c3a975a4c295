-- Readings as forwarded by the gateways, and the gateways themselves.
CREATE TABLE gateways (
    gateway_id text PRIMARY KEY,
    version text,
    address text,
    last_seen timestamptz NOT NULL
);

CREATE TABLE readings (
    meter_id text NOT NULL,
    ts timestamptz NOT NULL,
    kwh double precision NOT NULL,
    voltage double precision NOT NULL,
    current double precision NOT NULL,
    power double precision NOT NULL,
    gateway_id text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, ts)
);
