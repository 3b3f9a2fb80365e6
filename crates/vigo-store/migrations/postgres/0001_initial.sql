-- Initial schema (PostgreSQL). Keep it equivalent to migrations/sqlite/0001_initial.sql:
-- the same tables, columns, keys and constraints, in this dialect's types.

CREATE TABLE enrollment_tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    hash       TEXT    NOT NULL,
    hosts      TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT,
    used_at    BIGINT,
    used_by    TEXT,
    revoked    BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE admin_tokens (
    id         TEXT   NOT NULL PRIMARY KEY,
    sha256     TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- JSON columns stay TEXT so both dialects hand back the exact string that was stored;
-- the casts only reject text that is not JSON.
CREATE TABLE envoys (
    name             TEXT   NOT NULL PRIMARY KEY,
    signing_key      BYTEA  NOT NULL,
    cert_fingerprint TEXT   NOT NULL,
    enrolled_at      BIGINT NOT NULL,
    revoked_at       BIGINT,
    last_checkin     BIGINT,
    traits_json      TEXT   CHECK (traits_json IS NULL OR traits_json::jsonb IS NOT NULL),
    policy_version   TEXT,
    last_report_json TEXT   CHECK (last_report_json IS NULL OR last_report_json::jsonb IS NOT NULL),
    report_seq       BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE versions (
    number     BIGINT  NOT NULL PRIMARY KEY,
    message    TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    active     BOOLEAN NOT NULL DEFAULT FALSE
);

-- At most one active version, whatever the interleaving of concurrent publishes.
CREATE UNIQUE INDEX versions_one_active ON versions (active) WHERE active;

CREATE TABLE bundles (
    number    BIGINT NOT NULL REFERENCES versions (number) ON DELETE CASCADE,
    set_key   TEXT   NOT NULL,
    version   TEXT   NOT NULL,
    payload   BYTEA  NOT NULL,
    signature BYTEA  NOT NULL,
    PRIMARY KEY (number, set_key)
);
