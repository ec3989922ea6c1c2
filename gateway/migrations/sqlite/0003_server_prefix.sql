-- What goes before a server's tool and prompt names on /mcp; NULL: the server's name and '_'.
ALTER TABLE servers ADD COLUMN prefix TEXT;
