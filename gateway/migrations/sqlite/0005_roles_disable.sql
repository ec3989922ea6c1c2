-- Roles: named grant sets per workspace, assigned to members; a member's effective grants are
-- their own plus their roles'. A disabled member (disabled_ms set) keeps their tokens, grants and
-- roles, but every credential of theirs is refused until they are enabled again.
ALTER TABLE members ADD COLUMN disabled_ms INTEGER;

CREATE TABLE roles (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE role_grants (
    role_id    INTEGER NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    pattern    TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (role_id, pattern)
);

CREATE TABLE member_roles (
    member_id  INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    role_id    INTEGER NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (member_id, role_id)
);
CREATE INDEX member_roles_role ON member_roles (role_id);

CREATE TRIGGER roles_insert AFTER INSERT ON roles BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER roles_update AFTER UPDATE ON roles BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER roles_delete AFTER DELETE ON roles BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER role_grants_insert AFTER INSERT ON role_grants BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER role_grants_delete AFTER DELETE ON role_grants BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER member_roles_insert AFTER INSERT ON member_roles BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER member_roles_delete AFTER DELETE ON member_roles BEGIN UPDATE identity_revision SET n = n + 1; END;
