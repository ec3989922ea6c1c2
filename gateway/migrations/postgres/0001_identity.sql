-- Identity: workspaces, upstream servers, members, tokens (hashes only), grants.
-- Times are Unix milliseconds (BIGINT) so that SQLite and PostgreSQL share every query.
CREATE TABLE workspaces (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    enforce     BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms  BIGINT  NOT NULL
);

CREATE TABLE servers (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT   NOT NULL,
    url          TEXT   NOT NULL,
    headers      TEXT   NOT NULL DEFAULT '[]',
    created_ms   BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE members (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT   NOT NULL,
    created_ms   BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE tokens (
    id           TEXT   PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    member_id    BIGINT REFERENCES members(id) ON DELETE CASCADE,
    hash         TEXT   NOT NULL UNIQUE,
    prefix       TEXT   NOT NULL,
    created_ms   BIGINT NOT NULL,
    expires_ms   BIGINT,
    last_used_ms BIGINT
);

CREATE TABLE grants (
    member_id  BIGINT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    pattern    TEXT   NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (member_id, pattern)
);

-- Every mcpgw process LISTENs on mcpgw_identity and reloads its snapshot on a notification, so a
-- change made by any process (or by hand in psql) holds everywhere within a second. last_used_ms
-- updates are bookkeeping and do not notify.
CREATE FUNCTION mcpgw_identity_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mcpgw_identity', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER workspaces_changed AFTER INSERT OR UPDATE OR DELETE ON workspaces
    FOR EACH STATEMENT EXECUTE FUNCTION mcpgw_identity_changed();
CREATE TRIGGER servers_changed AFTER INSERT OR UPDATE OR DELETE ON servers
    FOR EACH STATEMENT EXECUTE FUNCTION mcpgw_identity_changed();
CREATE TRIGGER members_changed AFTER INSERT OR UPDATE OR DELETE ON members
    FOR EACH STATEMENT EXECUTE FUNCTION mcpgw_identity_changed();
CREATE TRIGGER tokens_changed AFTER INSERT OR DELETE OR UPDATE OF hash, expires_ms, member_id, workspace_id ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION mcpgw_identity_changed();
CREATE TRIGGER grants_changed AFTER INSERT OR UPDATE OR DELETE ON grants
    FOR EACH STATEMENT EXECUTE FUNCTION mcpgw_identity_changed();
