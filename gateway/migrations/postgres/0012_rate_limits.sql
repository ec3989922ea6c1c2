-- Rate limits (gateway/src/limit.rs): per workspace, a subject (`member:NAME`, `role:NAME` or `*`
-- for every caller) and a `server:tool` pattern get a token bucket of `burst` calls refilled at
-- `rate` per `period_ms`, one bucket per caller per limit on each replica. A limit is part of its
-- workspace's settings: a change goes through the identity journal like a server's.
CREATE TABLE rate_limits (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    subject      TEXT   NOT NULL,
    pattern      TEXT   NOT NULL,
    rate         BIGINT NOT NULL CHECK (rate > 0),
    period_ms    BIGINT NOT NULL CHECK (period_ms > 0),
    burst        BIGINT NOT NULL CHECK (burst > 0),
    created_ms   BIGINT NOT NULL,
    UNIQUE (workspace_id, subject, pattern)
);

CREATE TRIGGER rate_limits_journal AFTER INSERT OR UPDATE OR DELETE ON rate_limits
    FOR EACH ROW EXECUTE FUNCTION mcpgw_identity_journal('workspace', 'workspace_id');
