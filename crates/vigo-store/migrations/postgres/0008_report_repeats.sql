-- Repeated run outcomes (PostgreSQL). Keep it equivalent to
-- migrations/sqlite/0008_report_repeats.sql.
-- A run whose outcome is the same as the one before it (its report differs only in
-- timings) is not stored as a row of its own: it is counted as a repeat of the row
-- that first reported the outcome. A row's repeats are written when a different
-- outcome follows; until then the repeats of an envoy's newest row are kept on the
-- envoy's row, which every check-in rewrites anyway.

ALTER TABLE reports ADD COLUMN repeats BIGINT NOT NULL DEFAULT 0 CHECK (repeats >= 0);
ALTER TABLE reports ADD COLUMN last_seq BIGINT;
ALTER TABLE reports ADD COLUMN last_at BIGINT;

ALTER TABLE envoys ADD COLUMN report_repeats BIGINT NOT NULL DEFAULT 0 CHECK (report_repeats >= 0);
ALTER TABLE envoys ADD COLUMN report_last_seq BIGINT;
ALTER TABLE envoys ADD COLUMN report_last_at BIGINT;

-- Every report of the envoy up to this sequence number is stored (or was dropped as
-- unusable): what may be acknowledged, also after a restart. A delivery stored while
-- an earlier one is missing does not move it.
ALTER TABLE envoys ADD COLUMN report_stored BIGINT NOT NULL DEFAULT 0 CHECK (report_stored >= 0);
UPDATE envoys SET report_stored = COALESCE((SELECT MAX(seq) FROM reports WHERE envoy = envoys.name), 0);
