-- The audit list's filters at 10 million records (issue 22): each filter an index whose last
-- column is the row id, so "the newest N records of this member (tool, decision)" is a short walk
-- backwards along one index instead of a scan of the table. Time windows use audit_records_ts
-- (0002). Built once on upgrade; each costs the writer one more index entry per record
-- (docs/benchmarks.md).
CREATE INDEX audit_records_member ON audit_records (member, id);
CREATE INDEX audit_records_tool ON audit_records (tool, id);
CREATE INDEX audit_records_decision ON audit_records (decision, id);
