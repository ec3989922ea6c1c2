-- How a server is reached (JSON, see store/transport.rs): NULL is plain Streamable HTTP at its url;
-- otherwise HTTPS TLS files or a stdio command with its environment sources and fence.
ALTER TABLE servers ADD COLUMN transport TEXT;
