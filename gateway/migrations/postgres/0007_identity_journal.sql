-- The identity journal: one row per changed workspace, member, role or token, written by row
-- triggers (so a change made by hand in psql counts too). Every process reads the rows after the
-- last one it applied and updates only what they name in its in-memory snapshot, instead of
-- rebuilding the whole snapshot on every change; the statement triggers' NOTIFY mcpgw_identity
-- (0001) stays, as the wake-up.
--
-- `seq` must be commit order, or a reader could pass a row whose transaction commits later: the
-- trigger takes a transaction-scoped advisory lock before it takes a number, so transactions that
-- change identity commit one after the other from that point on (identity changes are admin
-- operations, rare and short). Rows older than 10 minutes are pruned; `pruned_through` says up to
-- where, so a process that fell further behind than that rebuilds its snapshot whole.
-- `ref` holds the id of the workspace, member or role (as text) or the token's id.
CREATE TABLE identity_changes (
    seq   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind  TEXT   NOT NULL,
    ref   TEXT   NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX identity_changes_at ON identity_changes (at_ms);

-- Catching up on one member reads their tokens: without this, every member change scanned every
-- token (measured: both processes at 100% CPU while 10,000 users were provisioned beside 100,000
-- tokens).
CREATE INDEX tokens_member ON tokens (member_id);

CREATE TABLE identity_journal (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through BIGINT  NOT NULL
);
INSERT INTO identity_journal (id, pruned_through) VALUES (1, 0);

-- TG_ARGV: the kind recorded, and the column of the row that holds its id.
CREATE FUNCTION mcpgw_identity_journal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    at BIGINT := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
    new_ref TEXT;
    old_ref TEXT;
BEGIN
    -- One lock per schema: the journal's own.
    PERFORM pg_advisory_xact_lock(hashtext(TG_TABLE_SCHEMA || '.identity_changes'));
    IF TG_OP <> 'DELETE' THEN
        new_ref := to_jsonb(NEW) ->> TG_ARGV[1];
        INSERT INTO identity_changes (kind, ref, at_ms) VALUES (TG_ARGV[0], new_ref, at);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_ref := to_jsonb(OLD) ->> TG_ARGV[1];
        IF old_ref IS DISTINCT FROM new_ref THEN
            INSERT INTO identity_changes (kind, ref, at_ms) VALUES (TG_ARGV[0], old_ref, at);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER workspaces_journal AFTER INSERT OR UPDATE OR DELETE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION mcpgw_identity_journal('workspace', 'id');
CREATE TRIGGER servers_journal AFTER INSERT OR UPDATE OR DELETE ON servers
    FOR EACH ROW EXECUTE FUNCTION mcpgw_identity_journal('workspace', 'workspace_id');
CREATE TRIGGER idps_journal AFTER INSERT OR UPDATE OR DELETE ON idps
    FOR EACH ROW EXECUTE FUNCTION mcpgw_identity_journal('workspace', 'workspace_id');
CREATE TRIGGER members_journal AFTER INSERT OR UPDATE OR DELETE ON members
    FOR EACH ROW EXECUTE FUNCTION mcpgw_identity_journal('member', 'id');
CREATE TRIGGER grants_journal AFTER INSERT OR UPDATE OR DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION mcpgw_identity_journal('member', 'member_id');
CREATE TRIGGER member_roles_journal AFTER INSERT OR UPDATE OR DELETE ON member_roles
    FOR EACH ROW EXECUTE FUNCTION mcpgw_identity_journal('member', 'member_id');
CREATE TRIGGER roles_journal AFTER INSERT OR UPDATE OR DELETE ON roles
    FOR EACH ROW EXECUTE FUNCTION mcpgw_identity_journal('role', 'id');
CREATE TRIGGER role_grants_journal AFTER INSERT OR UPDATE OR DELETE ON role_grants
    FOR EACH ROW EXECUTE FUNCTION mcpgw_identity_journal('role', 'role_id');
CREATE TRIGGER tokens_journal AFTER INSERT OR DELETE OR UPDATE OF hash, expires_ms, member_id, workspace_id ON tokens
    FOR EACH ROW EXECUTE FUNCTION mcpgw_identity_journal('token', 'id');
