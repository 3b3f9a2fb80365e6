-- Each audit event's hash signed by the server's audit key, which lives outside the
-- database (sqlite). Keep it equivalent to migrations/postgres/0009_audit_signatures.sql.
-- Rows written before this version start unsigned (''); the server signs them once,
-- the first time it opens the chain with its key.

ALTER TABLE audit_events ADD COLUMN signature TEXT NOT NULL DEFAULT '';
