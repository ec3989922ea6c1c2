-- The identity journal: one row per changed workspace, member, role or token, written by triggers
-- (so a change made by hand in the sqlite3 shell counts too). Every process reads the rows after
-- the last one it applied and updates only what they name in its in-memory snapshot, instead of
-- rebuilding the whole snapshot on every change. SQLite has one writer at a time, so `seq` order is
-- commit order. Rows older than 10 minutes are pruned; `identity_journal.pruned_through` says up
-- to where, so a process that fell further behind than that rebuilds its snapshot whole.
-- `ref` holds the id of the workspace, member or role (as text) or the token's id.
CREATE TABLE identity_changes (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    kind  TEXT    NOT NULL,
    ref   TEXT    NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX identity_changes_at ON identity_changes (at_ms);

-- Catching up on one member reads their tokens: without this, every member change scanned every
-- token (measured: both processes at 100% CPU while 10,000 users were provisioned beside 100,000
-- tokens).
CREATE INDEX tokens_member ON tokens (member_id);

CREATE TABLE identity_journal (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through INTEGER NOT NULL
);
INSERT INTO identity_journal (id, pruned_through) VALUES (1, 0);

DROP TRIGGER workspaces_insert;
DROP TRIGGER workspaces_update;
DROP TRIGGER workspaces_delete;
DROP TRIGGER servers_insert;
DROP TRIGGER servers_update;
DROP TRIGGER servers_delete;
DROP TRIGGER members_insert;
DROP TRIGGER members_update;
DROP TRIGGER members_delete;
DROP TRIGGER grants_insert;
DROP TRIGGER grants_update;
DROP TRIGGER grants_delete;
DROP TRIGGER tokens_insert;
DROP TRIGGER tokens_update;
DROP TRIGGER tokens_delete;
DROP TRIGGER roles_insert;
DROP TRIGGER roles_update;
DROP TRIGGER roles_delete;
DROP TRIGGER role_grants_insert;
DROP TRIGGER role_grants_delete;
DROP TRIGGER member_roles_insert;
DROP TRIGGER member_roles_delete;
DROP TRIGGER idps_insert;
DROP TRIGGER idps_update;
DROP TRIGGER idps_delete;
DROP TABLE identity_revision;

CREATE TRIGGER workspaces_insert AFTER INSERT ON workspaces BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('workspace', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER workspaces_update AFTER UPDATE ON workspaces BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('workspace', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER workspaces_delete AFTER DELETE ON workspaces BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('workspace', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER servers_insert AFTER INSERT ON servers BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('workspace', NEW.workspace_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER servers_update AFTER UPDATE ON servers BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('workspace', NEW.workspace_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER servers_delete AFTER DELETE ON servers BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('workspace', OLD.workspace_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER idps_insert AFTER INSERT ON idps BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('workspace', NEW.workspace_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER idps_update AFTER UPDATE ON idps BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('workspace', NEW.workspace_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER idps_delete AFTER DELETE ON idps BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('workspace', OLD.workspace_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER members_insert AFTER INSERT ON members BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('member', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER members_update AFTER UPDATE ON members BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('member', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER members_delete AFTER DELETE ON members BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('member', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER grants_insert AFTER INSERT ON grants BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('member', NEW.member_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER grants_update AFTER UPDATE ON grants BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('member', NEW.member_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER grants_delete AFTER DELETE ON grants BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('member', OLD.member_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER member_roles_insert AFTER INSERT ON member_roles BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('member', NEW.member_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER member_roles_delete AFTER DELETE ON member_roles BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('member', OLD.member_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER roles_insert AFTER INSERT ON roles BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('role', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER roles_update AFTER UPDATE ON roles BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('role', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER roles_delete AFTER DELETE ON roles BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('role', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER role_grants_insert AFTER INSERT ON role_grants BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('role', NEW.role_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER role_grants_delete AFTER DELETE ON role_grants BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('role', OLD.role_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER tokens_insert AFTER INSERT ON tokens BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('token', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER tokens_update AFTER UPDATE OF hash, expires_ms, member_id, workspace_id ON tokens BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('token', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
CREATE TRIGGER tokens_delete AFTER DELETE ON tokens BEGIN
    INSERT INTO identity_changes (kind, ref, at_ms) VALUES ('token', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
