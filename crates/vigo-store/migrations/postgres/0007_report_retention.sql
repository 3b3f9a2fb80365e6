-- Reports are pruned by age (PostgreSQL). Keep it equivalent to
-- migrations/sqlite/0007_report_retention.sql.
-- Rows arrive in time order, so this index grows at one end only.
CREATE INDEX reports_received_at ON reports (received_at);
