-- 3.2.1: the aggregation job finds new readings by arrival time; index it.
CREATE INDEX readings_received_at_idx ON readings (received_at);
