-- Run reports as queued by agents (SQLite). Keep it equivalent to
-- migrations/postgres/0003_reports.sql.
-- One row per (envoy, seq): an agent resends what was not acknowledged, and the
-- primary key turns every resend into a no-op.

CREATE TABLE reports (
    envoy       TEXT    NOT NULL REFERENCES envoys (name) ON DELETE CASCADE,
    seq         INTEGER NOT NULL CHECK (seq > 0),
    received_at INTEGER NOT NULL,
    report_json TEXT    NOT NULL CHECK (json_valid(report_json)),
    PRIMARY KEY (envoy, seq)
) STRICT;
