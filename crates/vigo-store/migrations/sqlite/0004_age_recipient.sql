-- The age X25519 recipient an envoy registered at enrollment (SQLite). Keep it
-- equivalent to migrations/postgres/0004_age_recipient.sql.
-- Secrets in an envoy's bundles are sealed to it; envoys enrolled before it existed
-- have none (NULL) and receive bundles without secret values until they re-enroll.

ALTER TABLE envoys ADD COLUMN age_recipient TEXT;
