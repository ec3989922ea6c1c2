-- The console (issue 20) reads one workspace at a time: its newest records (and pages back by id),
-- and its would-deny calls of the last day, by decision and time. Without these, a workspace's
-- newest 50 of 1,000,000 records sorted the whole workspace (1.8 s on SQLite). Each costs the
-- writer one more index entry per record (docs/benchmarks.md).
CREATE INDEX audit_records_workspace ON audit_records (workspace, id);
CREATE INDEX audit_records_workspace_decision ON audit_records (workspace, decision, ts_ms);
