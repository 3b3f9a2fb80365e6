-- The tamper-evident audit trail (PostgreSQL). Keep it equivalent to
-- migrations/sqlite/0002_audit.sql.
-- `seq` is assigned by the server (last + 1), never by a sequence: each row's hash
-- covers its own number and the previous row's hash, so the numbering is part of the chain.
-- `detail` stays TEXT so the hash is checked against the exact string that was stored.

CREATE TABLE audit_events (
    seq       BIGINT NOT NULL PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT   NOT NULL,
    action    TEXT   NOT NULL,
    subject   TEXT   NOT NULL,
    detail    TEXT   NOT NULL CHECK (detail::jsonb IS NOT NULL),
    prev_hash TEXT   NOT NULL,
    hash      TEXT   NOT NULL
);
