-- SCIM 2.0 provisioning (RFC 7643/7644, gateway/src/scim.rs): the identity provider creates,
-- deactivates and deletes members and keeps groups; an admin maps a group to a role, and the
-- group's members hold that role (beside the roles assigned to them directly).

-- One SCIM bearer token per workspace (`mcpgw scim token WS`), stored as its SHA-256 only.
CREATE TABLE scim_tokens (
    workspace_id INTEGER PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
    hash         TEXT    NOT NULL UNIQUE,
    prefix       TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL
);

-- The User attributes the provider sent beyond userName and active (JSON: displayName, name,
-- emails, ...; never a password), its externalId, and when it last changed them. NULL for
-- members not provisioned through SCIM.
ALTER TABLE members ADD COLUMN scim TEXT;
ALTER TABLE members ADD COLUMN scim_external_id TEXT;
ALTER TABLE members ADD COLUMN scim_modified_ms INTEGER;

-- SCIM's userName is case-insensitive: filters and uniqueness go through lower(name).
CREATE INDEX members_scim_user_name ON members (workspace_id, lower(name));
CREATE INDEX members_scim_external_id ON members (workspace_id, scim_external_id);

CREATE TABLE scim_groups (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    display_name TEXT    NOT NULL,
    external_id  TEXT,
    role_id      INTEGER REFERENCES roles(id) ON DELETE SET NULL,
    created_ms   INTEGER NOT NULL,
    modified_ms  INTEGER NOT NULL,
    UNIQUE (workspace_id, display_name)
);

CREATE TABLE scim_group_members (
    group_id  INTEGER NOT NULL REFERENCES scim_groups(id) ON DELETE CASCADE,
    member_id INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX scim_group_members_member ON scim_group_members (member_id);

-- Journal: a membership change is a change of the member; a group's role changing is a change
-- of each of its members.
CREATE TRIGGER scim_group_members_insert AFTER INSERT ON scim_group_members BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('member', NEW.member_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER scim_group_members_delete AFTER DELETE ON scim_group_members BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('member', OLD.member_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER scim_groups_role AFTER UPDATE OF role_id ON scim_groups
    WHEN OLD.role_id IS NOT NEW.role_id BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms)
        SELECT 'member', member_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
        FROM scim_group_members WHERE group_id = NEW.id; END;
