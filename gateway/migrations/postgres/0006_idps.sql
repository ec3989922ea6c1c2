-- A workspace's identity provider (OIDC issuer whose JWTs are accepted as member credentials):
-- one per workspace, its settings as JSON (see store/idp.rs).
CREATE TABLE idps (
    workspace_id BIGINT PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
    config       TEXT   NOT NULL,
    created_ms   BIGINT NOT NULL
);
CREATE TRIGGER idps_changed AFTER INSERT OR UPDATE OR DELETE ON idps
    FOR EACH STATEMENT EXECUTE FUNCTION mcpgw_identity_changed();

-- Who a JWT named, beside the member: its subject and issuer (NULL for opaque tokens).
ALTER TABLE audit_records ADD COLUMN subject TEXT;
ALTER TABLE audit_records ADD COLUMN issuer TEXT;
