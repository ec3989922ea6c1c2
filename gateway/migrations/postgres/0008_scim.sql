-- SCIM 2.0 provisioning (RFC 7643/7644, gateway/src/scim.rs): the identity provider creates,
-- deactivates and deletes members and keeps groups; an admin maps a group to a role, and the
-- group's members hold that role (beside the roles assigned to them directly).

-- One SCIM bearer token per workspace (`mcpgw scim token WS`), stored as its SHA-256 only.
CREATE TABLE scim_tokens (
    workspace_id BIGINT PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
    hash         TEXT   NOT NULL UNIQUE,
    prefix       TEXT   NOT NULL,
    created_ms   BIGINT NOT NULL
);

-- The User attributes the provider sent beyond userName and active (JSON: displayName, name,
-- emails, ...; never a password), its externalId, and when it last changed them. NULL for
-- members not provisioned through SCIM.
ALTER TABLE members ADD COLUMN scim TEXT;
ALTER TABLE members ADD COLUMN scim_external_id TEXT;
ALTER TABLE members ADD COLUMN scim_modified_ms BIGINT;

-- SCIM's userName is case-insensitive: filters and uniqueness go through lower(name).
CREATE INDEX members_scim_user_name ON members (workspace_id, lower(name));
CREATE INDEX members_scim_external_id ON members (workspace_id, scim_external_id);

CREATE TABLE scim_groups (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    display_name TEXT   NOT NULL,
    external_id  TEXT,
    role_id      BIGINT REFERENCES roles(id) ON DELETE SET NULL,
    created_ms   BIGINT NOT NULL,
    modified_ms  BIGINT NOT NULL,
    UNIQUE (workspace_id, display_name)
);

CREATE TABLE scim_group_members (
    group_id  BIGINT NOT NULL REFERENCES scim_groups(id) ON DELETE CASCADE,
    member_id BIGINT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX scim_group_members_member ON scim_group_members (member_id);

-- Journal: a membership change is a change of the member; a group's role changing is a change
-- of each of its members.
CREATE TRIGGER scim_group_members_journal AFTER INSERT OR UPDATE OR DELETE ON scim_group_members
    FOR EACH ROW EXECUTE FUNCTION mcpgw_identity_journal('member', 'member_id');
CREATE TRIGGER scim_group_members_changed AFTER INSERT OR UPDATE OR DELETE ON scim_group_members
    FOR EACH STATEMENT EXECUTE FUNCTION mcpgw_identity_changed();

CREATE FUNCTION mcpgw_scim_group_journal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(TG_TABLE_SCHEMA || '.identity_changes'));
    INSERT INTO identity_changes (kind, ref, at_ms)
        SELECT 'member', member_id::TEXT, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT
        FROM scim_group_members WHERE group_id = NEW.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER scim_groups_role AFTER UPDATE OF role_id ON scim_groups
    FOR EACH ROW WHEN (OLD.role_id IS DISTINCT FROM NEW.role_id)
    EXECUTE FUNCTION mcpgw_scim_group_journal();
CREATE TRIGGER scim_groups_changed AFTER UPDATE OF role_id ON scim_groups
    FOR EACH STATEMENT EXECUTE FUNCTION mcpgw_identity_changed();
