-- 3.3.0 (module carbon): grid emission factors, valid from a date until the next one.
CREATE TABLE emission_factors (
    valid_from date PRIMARY KEY,
    kg_co2_per_kwh double precision NOT NULL CHECK (kg_co2_per_kwh >= 0),
    source text NOT NULL
);

INSERT INTO emission_factors (valid_from, kg_co2_per_kwh, source)
VALUES ('2000-01-01', 0.5703, 'example factor (national grid average); replace per site');
