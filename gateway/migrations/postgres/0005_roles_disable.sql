-- Roles: named grant sets per workspace, assigned to members; a member's effective grants are
-- their own plus their roles'. A disabled member (disabled_ms set) keeps their tokens, grants and
-- roles, but every credential of theirs is refused until they are enabled again.
ALTER TABLE members ADD COLUMN disabled_ms BIGINT;

CREATE TABLE roles (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT   NOT NULL,
    created_ms   BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE role_grants (
    role_id    BIGINT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    pattern    TEXT   NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (role_id, pattern)
);

CREATE TABLE member_roles (
    member_id  BIGINT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    role_id    BIGINT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (member_id, role_id)
);
CREATE INDEX member_roles_role ON member_roles (role_id);

CREATE TRIGGER roles_changed AFTER INSERT OR UPDATE OR DELETE ON roles
    FOR EACH STATEMENT EXECUTE FUNCTION mcpgw_identity_changed();
CREATE TRIGGER role_grants_changed AFTER INSERT OR UPDATE OR DELETE ON role_grants
    FOR EACH STATEMENT EXECUTE FUNCTION mcpgw_identity_changed();
CREATE TRIGGER member_roles_changed AFTER INSERT OR UPDATE OR DELETE ON member_roles
    FOR EACH STATEMENT EXECUTE FUNCTION mcpgw_identity_changed();
