-- 3.2.3: every reading names where it came from. Not backward compatible (the release's manifest
-- says so): releases before 3.2.3 do not write the column, and their inserts fail on it.
ALTER TABLE readings ADD COLUMN source text NOT NULL DEFAULT 'modbus';
ALTER TABLE readings ALTER COLUMN source DROP DEFAULT;
