-- Identity: workspaces, upstream servers, members, tokens (hashes only), grants.
-- Times are Unix milliseconds (INTEGER) so that SQLite and PostgreSQL share every query.
CREATE TABLE workspaces (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    enforce     INTEGER NOT NULL DEFAULT 0,
    created_ms  INTEGER NOT NULL
);

CREATE TABLE servers (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    url          TEXT    NOT NULL,
    headers      TEXT    NOT NULL DEFAULT '[]',
    created_ms   INTEGER NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE members (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE tokens (
    id           TEXT    PRIMARY KEY,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    member_id    INTEGER REFERENCES members(id) ON DELETE CASCADE,
    hash         TEXT    NOT NULL UNIQUE,
    prefix       TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER,
    last_used_ms INTEGER
);

CREATE TABLE grants (
    member_id  INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    pattern    TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (member_id, pattern)
);

-- Every mcpgw process polls this counter (every 100 ms) and reloads its snapshot when it moves, so
-- a change made by any process (or by hand in the sqlite3 shell) holds everywhere within a second.
-- last_used_ms updates are bookkeeping and do not count.
CREATE TABLE identity_revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO identity_revision (id, n) VALUES (1, 0);

CREATE TRIGGER workspaces_insert AFTER INSERT ON workspaces BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER workspaces_update AFTER UPDATE ON workspaces BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER workspaces_delete AFTER DELETE ON workspaces BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER servers_insert AFTER INSERT ON servers BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER servers_update AFTER UPDATE ON servers BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER servers_delete AFTER DELETE ON servers BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER members_insert AFTER INSERT ON members BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER members_update AFTER UPDATE ON members BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER members_delete AFTER DELETE ON members BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER grants_insert AFTER INSERT ON grants BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER grants_update AFTER UPDATE ON grants BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER grants_delete AFTER DELETE ON grants BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER tokens_insert AFTER INSERT ON tokens BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER tokens_update AFTER UPDATE OF hash, expires_ms, member_id, workspace_id ON tokens
    BEGIN UPDATE identity_revision SET n = n + 1; END;
CREATE TRIGGER tokens_delete AFTER DELETE ON tokens BEGIN UPDATE identity_revision SET n = n + 1; END;
