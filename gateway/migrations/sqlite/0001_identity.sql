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
