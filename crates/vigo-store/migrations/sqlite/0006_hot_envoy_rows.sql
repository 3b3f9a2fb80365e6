-- Small envoy rows for frequent check-ins (SQLite). Keep it equivalent to
-- migrations/postgres/0006_hot_envoy_rows.sql.
-- Every check-in rewrites its envoy's row. The traits, kilobytes of JSON that change
-- rarely, move to their own table, so that a rewrite stays a few dozen bytes instead
-- of a chain of overflow pages. An envoy's last report is the newest of its rows in
-- `reports`; the copy in `envoys` goes (a last report without a queued row is kept).

CREATE TABLE envoy_traits (
    envoy       TEXT NOT NULL PRIMARY KEY REFERENCES envoys (name) ON DELETE CASCADE,
    traits_json TEXT NOT NULL CHECK (json_valid(traits_json))
) STRICT;

INSERT INTO envoy_traits (envoy, traits_json)
    SELECT name, traits_json FROM envoys WHERE traits_json IS NOT NULL;

INSERT INTO reports (envoy, seq, received_at, report_json)
    SELECT name, report_seq, COALESCE(last_checkin, enrolled_at), last_report_json FROM envoys
    WHERE last_report_json IS NOT NULL AND report_seq > 0
    ON CONFLICT (envoy, seq) DO NOTHING;

ALTER TABLE envoys DROP COLUMN traits_json;
ALTER TABLE envoys DROP COLUMN last_report_json;
ALTER TABLE envoys DROP COLUMN report_seq;
