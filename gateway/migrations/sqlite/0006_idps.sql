-- A workspace's identity provider (OIDC issuer whose JWTs are accepted as member credentials):
-- one per workspace, its settings as JSON (see store/idp.rs).
CREATE TABLE idps (
    workspace_id INTEGER PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
    config       TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL
);
CREATE TRIGGER idps_insert AFTER INSERT ON idps BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER idps_update AFTER UPDATE ON idps BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER idps_delete AFTER DELETE ON idps BEGIN UPDATE identity_revision SET n = n + 1; END;

-- Who a JWT named, beside the member: its subject and issuer (NULL for opaque tokens).
ALTER TABLE audit_records ADD COLUMN subject TEXT;
ALTER TABLE audit_records ADD COLUMN issuer TEXT;
