-- Audit trail: one row per tools/call (and per failed authentication), never a payload.
-- Each workspace's rows form a hash chain: `hash` is the SHA-256 of the row's canonical form, which
-- includes `prev_hash`, the hash of the row before it (seq - 1) in the same chain. Failed
-- authentications have no workspace; they form the chain named '' (shown as "(unauthenticated)").
-- Workspace, member and server are kept by name: the trail outlives the objects it names.
CREATE TABLE audit_records (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace           TEXT    NOT NULL,
    seq                 INTEGER NOT NULL,
    ts_ms               INTEGER NOT NULL,
    kind                TEXT    NOT NULL,
    member              TEXT,
    token_id            TEXT,
    server              TEXT    NOT NULL,
    tool                TEXT    NOT NULL,
    decision            TEXT    NOT NULL,
    module              TEXT,
    module_digest       TEXT,
    status              TEXT    NOT NULL,
    error_code          TEXT,
    latency_us          INTEGER NOT NULL,
    upstream_latency_us INTEGER,
    request_id          TEXT    NOT NULL,
    session_id          TEXT,
    prev_hash           TEXT    NOT NULL,
    hash                TEXT    NOT NULL,
    UNIQUE (workspace, seq)
);
CREATE INDEX audit_records_ts ON audit_records (ts_ms);

-- The head of each chain: the last seq and hash written. Writers lock it (by updating it first), so
-- several gateway processes append to one chain in turn.
CREATE TABLE audit_heads (
    workspace TEXT    PRIMARY KEY,
    seq       INTEGER NOT NULL,
    hash      TEXT    NOT NULL
);

-- Where pruning cut each chain: the seq and hash of the last row removed. The first remaining row
-- must continue from it.
CREATE TABLE audit_checkpoints (
    workspace  TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    hash       TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (workspace, seq)
);
