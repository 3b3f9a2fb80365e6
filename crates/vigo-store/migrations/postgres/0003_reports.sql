-- Run reports as queued by agents (PostgreSQL). Keep it equivalent to
-- migrations/sqlite/0003_reports.sql.
-- One row per (envoy, seq): an agent resends what was not acknowledged, and the
-- primary key turns every resend into a no-op.

CREATE TABLE reports (
    envoy       TEXT   NOT NULL REFERENCES envoys (name) ON DELETE CASCADE,
    seq         BIGINT NOT NULL CHECK (seq > 0),
    received_at BIGINT NOT NULL,
    report_json TEXT   NOT NULL CHECK (report_json::jsonb IS NOT NULL),
    PRIMARY KEY (envoy, seq)
);
