-- Session-aware policy (mcpgw:policy@0.3.0).
-- Flow labels a module attached to a session (or, for stateless clients, a token): every replica
-- writes the labels it applies and reads the others' (store/flows.rs), so a label set through
-- one replica holds on all. Rows expire; the writer prunes them.
CREATE TABLE flow_labels (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    flow_key    TEXT    NOT NULL,
    label       TEXT    NOT NULL,
    expires_ms  INTEGER NOT NULL,
    origin      TEXT    NOT NULL
);
CREATE INDEX flow_labels_expires ON flow_labels (expires_ms);

-- Tool pinning: the fingerprint of each upstream tool's definition the workspace trusts (the
-- first one it saw, or the one an admin approved), and the one last seen when it differs.
CREATE TABLE tool_pins (
    workspace        TEXT    NOT NULL,
    server           TEXT    NOT NULL,
    tool             TEXT    NOT NULL,
    fingerprint      TEXT    NOT NULL,
    definition       TEXT    NOT NULL,
    pinned_ms        INTEGER NOT NULL,
    seen_fingerprint TEXT,
    seen_definition  TEXT,
    seen_ms          INTEGER,
    updated_ms       INTEGER NOT NULL,
    PRIMARY KEY (workspace, server, tool)
);
CREATE INDEX tool_pins_updated ON tool_pins (updated_ms);

-- The flow labels a call's policy applied (names only, comma-separated, sorted).
ALTER TABLE audit_records ADD COLUMN labels TEXT;
