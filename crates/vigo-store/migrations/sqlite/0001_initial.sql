-- Initial schema (SQLite). Keep it equivalent to migrations/postgres/0001_initial.sql:
-- the same tables, columns, keys and constraints, in this dialect's types.
-- STRICT tables make SQLite refuse values of the wrong type like PostgreSQL does;
-- booleans are INTEGER 0/1 because STRICT has no BOOLEAN.

CREATE TABLE enrollment_tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    hash       TEXT    NOT NULL,
    hosts      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    used_at    INTEGER,
    used_by    TEXT,
    revoked    INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
) STRICT;

CREATE TABLE admin_tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    sha256     TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE envoys (
    name             TEXT    NOT NULL PRIMARY KEY,
    signing_key      BLOB    NOT NULL,
    cert_fingerprint TEXT    NOT NULL,
    enrolled_at      INTEGER NOT NULL,
    revoked_at       INTEGER,
    last_checkin     INTEGER,
    traits_json      TEXT    CHECK (traits_json IS NULL OR json_valid(traits_json)),
    policy_version   TEXT,
    last_report_json TEXT    CHECK (last_report_json IS NULL OR json_valid(last_report_json)),
    report_seq       INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE versions (
    number     INTEGER NOT NULL PRIMARY KEY,
    message    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    active     INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1))
) STRICT;

-- At most one active version, whatever the interleaving of concurrent publishes.
CREATE UNIQUE INDEX versions_one_active ON versions (active) WHERE active = 1;

CREATE TABLE bundles (
    number    INTEGER NOT NULL REFERENCES versions (number) ON DELETE CASCADE,
    set_key   TEXT    NOT NULL,
    version   TEXT    NOT NULL,
    payload   BLOB    NOT NULL,
    signature BLOB    NOT NULL,
    PRIMARY KEY (number, set_key)
) STRICT;
