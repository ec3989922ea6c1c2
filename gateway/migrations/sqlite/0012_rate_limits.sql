-- Rate limits (gateway/src/limit.rs): per workspace, a subject (`member:NAME`, `role:NAME` or `*`
-- for every caller) and a `server:tool` pattern get a token bucket of `burst` calls refilled at
-- `rate` per `period_ms`, one bucket per caller per limit on each replica. A limit is part of its
-- workspace's settings: a change goes through the identity journal like a server's.
CREATE TABLE rate_limits (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    subject      TEXT    NOT NULL,
    pattern      TEXT    NOT NULL,
    rate         INTEGER NOT NULL CHECK (rate > 0),
    period_ms    INTEGER NOT NULL CHECK (period_ms > 0),
    burst        INTEGER NOT NULL CHECK (burst > 0),
    created_ms   INTEGER NOT NULL,
    UNIQUE (workspace_id, subject, pattern)
);

CREATE TRIGGER rate_limits_insert AFTER INSERT ON rate_limits BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('workspace', NEW.workspace_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER rate_limits_update AFTER UPDATE ON rate_limits BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('workspace', NEW.workspace_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER rate_limits_delete AFTER DELETE ON rate_limits BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('workspace', OLD.workspace_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
