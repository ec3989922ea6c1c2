//! The `mcpgw policy` commands, run as a user would: the built binary on real components.

use std::process::{Command, Output};

const ALLOWLIST: &str = concat!(env!("OUT_DIR"), "/allowlist.wasm");
const SECRETS_GUARD: &str = concat!(env!("OUT_DIR"), "/secrets_guard.wasm");

fn mcpgw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcpgw"))
        .args(args)
        .output()
        .expect("run mcpgw")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn policy_check_accepts_a_good_module() {
    let o = mcpgw(&["policy", "check", ALLOWLIST]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(
        out.starts_with("ok: ") && out.contains("module allowlist (phases: list)"),
        "{out}"
    );
}

#[test]
fn policy_check_rejects_bad_modules_and_settings_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    let o = mcpgw(&["policy", "check", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("rejected:") && stdout(&o).contains("not a WebAssembly binary"),
        "{o:?}"
    );

    let settings = dir.path().join("guard.toml");
    std::fs::write(&settings, "tools = ['nocolon']").unwrap();
    let o = mcpgw(&[
        "policy",
        "check",
        SECRETS_GUARD,
        "--settings",
        settings.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("settings refused: invalid pattern"),
        "{o:?}"
    );
}

#[test]
fn policy_run_prints_the_decision_and_fuel() {
    let key = format!("AKIA{}", "IOSFODNN7EXAMPLE");
    let call = serde_json::json!({"server": "db", "tool": "query", "member": "alice", "arguments": {"k": key}});
    let o = mcpgw(&["policy", "run", SECRETS_GUARD, "--call", &call.to_string()]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["code"], "secret-in-arguments");
    assert!(!v["reason"].as_str().unwrap().contains(&key));
    assert!(v["fuel"].as_u64().unwrap() > 100, "{v}");

    let call = r#"{"server":"db","tool":"query","member":"alice","grants":["db:*"]}"#;
    let o = mcpgw(&["policy", "run", ALLOWLIST, "--call", call]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["decision"], "allow", "{v}");
}

#[test]
fn policy_status_lists_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(SECRETS_GUARD, dir.path().join("10-guard.wasm")).unwrap();
    std::fs::write(dir.path().join("20-bad.wasm"), b"(component)").unwrap();
    let o = mcpgw(&[
        "policy",
        "status",
        "--dir",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let names: Vec<&str> = v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["allowlist", "secrets-guard"]);
    assert_eq!(v["rejected"][0]["file"], "20-bad.wasm");
    assert!(
        v["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("WAT text")
    );
}

fn admin(dir: &std::path::Path, args: &[&str]) -> Output {
    let db = format!("sqlite://{}", dir.join("mcpgw.db").display());
    Command::new(env!("CARGO_BIN_EXE_mcpgw"))
        .args(args)
        .args(["--database", &db])
        .current_dir(dir)
        .output()
        .expect("run mcpgw")
}

#[test]
fn the_identity_cli_walkthrough() {
    let dir = tempfile::tempdir().unwrap();
    let ok = |args: &[&str]| {
        let o = admin(dir.path(), args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        stdout(&o)
    };
    ok(&["workspace", "create", "acme"]);
    ok(&[
        "server",
        "add",
        "acme",
        "db",
        "http://127.0.0.1:9000/mcp",
        "--header",
        "X-Team: core",
        "--header-env",
        "Authorization: DB_TOKEN",
    ]);
    ok(&["member", "add", "acme", "alice"]);
    ok(&["grant", "add", "acme", "alice", "db:*", "*:search"]);
    let issued = ok(&["token", "issue", "acme", "alice", "--expires", "30d"]);
    let lines: Vec<&str> = issued.lines().collect();
    assert_eq!(lines.len(), 1, "stdout is the token alone: {issued:?}");
    assert!(lines[0].starts_with("mcpgw_") && lines[0].len() == 70);
    let workspace_token = ok(&["token", "issue", "acme"]);
    assert!(workspace_token.trim().starts_with("mcpgw_"));

    let tokens: serde_json::Value =
        serde_json::from_str(&ok(&["token", "list", "acme", "--json"])).unwrap();
    assert_eq!(tokens.as_array().unwrap().len(), 2);
    assert!(
        !tokens.to_string().contains(lines[0]),
        "lists never show a token"
    );
    assert_eq!(tokens[0]["member"], "alice");
    assert!(tokens[0]["expires_ms"].as_i64().unwrap() > tokens[0]["created_ms"].as_i64().unwrap());
    let grants: serde_json::Value =
        serde_json::from_str(&ok(&["grant", "list", "acme", "alice", "--json"])).unwrap();
    assert_eq!(
        grants,
        serde_json::json!([{"member": "alice", "pattern": "*:search"}, {"member": "alice", "pattern": "db:*"}])
    );
    let servers: serde_json::Value =
        serde_json::from_str(&ok(&["server", "list", "acme", "--json"])).unwrap();
    assert_eq!(
        servers[0]["headers"],
        serde_json::json!([
            {"name": "X-Team", "source": "literal"},
            {"name": "Authorization", "source": "env:DB_TOKEN"},
        ])
    );
    assert!(
        !servers.to_string().contains("core"),
        "listings show where a header comes from, never its value"
    );
    assert!(
        ok(&["workspace", "list"]).contains("acme")
            && ok(&["member", "list", "acme"]).contains("alice")
    );
    ok(&["enforce", "acme", "on"]);
    let ws: serde_json::Value =
        serde_json::from_str(&ok(&["workspace", "list", "--json"])).unwrap();
    assert_eq!(ws[0]["enforce"], true);
    let id = tokens[0]["id"].as_str().unwrap();
    ok(&["token", "revoke", id]);
    ok(&["grant", "remove", "acme", "alice", "db:*"]);
    ok(&["member", "remove", "acme", "alice"]);
    ok(&["server", "remove", "acme", "db"]);

    // Bad input: exit 1, a clear message on stderr, nothing changed.
    for (args, message) in [
        (
            &["workspace", "create", "acme"][..],
            "workspace \"acme\" already exists",
        ),
        (
            &["member", "add", "nope", "bob"][..],
            "unknown workspace \"nope\"",
        ),
        (
            &["token", "revoke", "tok_missing"][..],
            "unknown token \"tok_missing\"",
        ),
        (
            &["token", "issue", "acme", "ghost"][..],
            "unknown member \"ghost\"",
        ),
        (
            &["token", "issue", "acme", "--expires", "soon"][..],
            "invalid duration",
        ),
        (
            &["server", "add", "acme", "x", "ftp://x"][..],
            "invalid url",
        ),
        (
            &[
                "server", "add", "acme", "x", "http://x", "--header", "nocolon",
            ][..],
            "invalid header",
        ),
    ] {
        let o = admin(dir.path(), args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
    let o = admin(dir.path(), &["grant", "add", "acme", "bob", "db"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid pattern"));
    assert_eq!(
        ok(&["token", "list", "acme", "--json"])
            .matches("tok_")
            .count(),
        1,
        "only the workspace token is left"
    );
}

#[test]
fn the_config_file_selects_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcpgw.toml");
    std::fs::write(
        &config,
        format!(
            "database = \"sqlite://{}/from-config.db\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mcpgw"))
        .args([
            "workspace",
            "create",
            "cfg",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(dir.path().join("from-config.db").exists());
    std::fs::write(&config, "databse = \"typo\"\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mcpgw"))
        .args(["workspace", "list", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown field `databse`"),
        "{o:?}"
    );
}

#[test]
fn server_prefixes_are_listed_and_a_shared_prefix_is_refused_naming_both_servers() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| admin(dir.path(), args);
    assert!(run(&["workspace", "create", "acme"]).status.success());
    let add = |name: &str, prefix: Option<&str>| {
        let url = format!("http://127.0.0.1:9000/{name}");
        let mut args = vec!["server", "add", "acme", name, url.as_str()];
        if let Some(p) = prefix {
            args.extend(["--prefix", p]);
        }
        run(&args)
    };
    assert!(add("db", None).status.success());
    assert!(add("ref", Some("")).status.success());
    let refused = add("other", Some(""));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("other") && err.contains("ref") && err.contains("collide"),
        "{err}"
    );
    assert!(
        !add("bad", Some("a b")).status.success(),
        "prefix characters"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&stdout(&run(&["server", "list", "acme", "--json"]))).unwrap();
    let prefixes: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["prefix"].as_str().unwrap()))
        .collect();
    assert_eq!(prefixes, [("db", "db_"), ("ref", "")]);
}

#[test]
fn servers_over_https_and_stdio_are_listed_with_sources_never_values() {
    let dir = tempfile::tempdir().unwrap();
    // What relative paths are made absolute against: the directory the command runs in.
    let here = dir.path().canonicalize().unwrap();
    let db = format!("sqlite://{}", dir.path().join("mcpgw.db").display());
    // Global flags first: everything after `--` belongs to the stdio command.
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mcpgw"))
            .args(["--database", &db])
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run mcpgw")
    };
    let ok = |args: &[&str]| {
        let o = run(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        stdout(&o)
    };
    ok(&["workspace", "create", "acme"]);
    ok(&[
        "server",
        "add",
        "acme",
        "api",
        "https://api.internal/mcp",
        "--ca-file",
        "ca.pem",
        "--client-cert",
        "tls/client.pem",
        "--client-key",
        "/etc/mcpgw/client.key",
        "--header",
        "X-Team: sekrit-header-value",
        "--header-env",
        "Authorization: API_TOKEN",
        "--header-file",
        "X-Key: key.txt",
    ]);
    ok(&[
        "server",
        "add",
        "acme",
        "gh",
        "--stdio",
        "--env",
        "MODE=sekrit-env-value",
        "--env-from",
        "GITHUB_TOKEN=GH_TOKEN",
        "--env-file",
        "KEY=gh.key",
        "--cwd",
        "work",
        "--no-network",
        "--read-only",
        "/usr/share",
        "--memory-mb",
        "256",
        "--",
        "npx",
        "-y",
        "@modelcontextprotocol/server-github",
    ]);

    let listed = ok(&["server", "list", "acme", "--json"]);
    assert!(!listed.contains("sekrit"), "a value leaked: {listed}");
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let at = |p: &str| here.join(p).display().to_string();
    assert_eq!(v[0]["name"], "api");
    assert_eq!(
        v[0]["headers"],
        serde_json::json!([
            {"name": "X-Team", "source": "literal"},
            {"name": "Authorization", "source": "env:API_TOKEN"},
            {"name": "X-Key", "source": format!("file:{}", at("key.txt"))},
        ])
    );
    assert_eq!(
        v[0]["transport"],
        serde_json::json!({"kind": "http", "tls": {
            "ca_file": at("ca.pem"),
            "client_cert": at("tls/client.pem"),
            "client_key": "/etc/mcpgw/client.key",
        }})
    );
    let gh = &v[1];
    assert_eq!(
        (&gh["name"], &gh["url"], &gh["headers"]),
        (
            &serde_json::json!("gh"),
            &serde_json::json!("stdio://acme/gh"),
            &serde_json::json!([])
        )
    );
    let t = &gh["transport"];
    assert_eq!(
        (&t["kind"], &t["command"], &t["args"], &t["cwd"]),
        (
            &serde_json::json!("stdio"),
            &serde_json::json!("npx"),
            &serde_json::json!(["-y", "@modelcontextprotocol/server-github"]),
            &serde_json::json!(at("work"))
        )
    );
    assert_eq!(
        t["env"],
        serde_json::json!([
            {"name": "MODE", "source": "literal"},
            {"name": "GITHUB_TOKEN", "source": "env:GH_TOKEN"},
            {"name": "KEY", "source": format!("file:{}", at("gh.key"))},
        ])
    );
    assert_eq!(
        (
            &t["fence"]["enabled"],
            &t["fence"]["no_network"],
            &t["fence"]["read_only"],
            &t["fence"]["memory_mb"],
            &t["fence"]["cpu_seconds"]
        ),
        (
            &serde_json::json!(true),
            &serde_json::json!(true),
            &serde_json::json!(["/usr/share"]),
            &serde_json::json!(256),
            &serde_json::json!(3600)
        )
    );

    let table = ok(&["server", "list", "acme"]);
    assert!(!table.contains("sekrit"), "a value leaked: {table}");
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {table}"))
            .to_owned()
    };
    let api = line("api ");
    for part in [
        "https",
        "https://api.internal/mcp",
        "X-Team=literal",
        "Authorization=env:API_TOKEN",
        &format!("X-Key=file:{}", at("key.txt")),
        &format!("ca-file={}", at("ca.pem")),
    ] {
        assert!(api.contains(part), "{part} in {api}");
    }
    let gh = line("gh ");
    for part in [
        "stdio",
        "npx -y @modelcontextprotocol/server-github",
        "MODE=literal",
        "GITHUB_TOKEN=env:GH_TOKEN",
        &format!("KEY=file:{}", at("gh.key")),
    ] {
        assert!(gh.contains(part), "{part} in {gh}");
    }

    // Refused, with the reason, and nothing added.
    for (args, message) in [
        (&["server", "add", "acme", "x"][..], "<URL>"),
        (
            &[
                "server", "add", "acme", "x", "http://x", "--stdio", "--", "srv",
            ][..],
            "cannot be used with",
        ),
        (
            &["server", "add", "acme", "x", "http://x", "--env", "K=V"][..],
            "--stdio",
        ),
        (&["server", "add", "acme", "x", "--stdio"][..], "<COMMAND>"),
        (
            &[
                "server",
                "add",
                "acme",
                "x",
                "--stdio",
                "--no-fence",
                "--no-network",
                "--",
                "srv",
            ][..],
            "cannot be used with",
        ),
        (
            &[
                "server", "add", "acme", "x", "--stdio", "--header", "A: b", "--", "srv",
            ][..],
            "cannot be used with",
        ),
        (
            &[
                "server",
                "add",
                "acme",
                "x",
                "http://x",
                "--ca-file",
                "ca.pem",
            ][..],
            "tls: only for an https:// url",
        ),
        (
            &[
                "server",
                "add",
                "acme",
                "x",
                "https://x",
                "--client-cert",
                "c.pem",
            ][..],
            "--client-key",
        ),
        (
            &[
                "server", "add", "acme", "x", "--stdio", "--env", "PATH=/x", "--", "srv",
            ][..],
            "PATH is set by the gateway",
        ),
        (
            &[
                "server",
                "add",
                "acme",
                "x",
                "--stdio",
                "--memory-mb",
                "0",
                "--",
                "srv",
            ][..],
            "resource limits must be positive",
        ),
    ] {
        let o = run(args);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
    let after: serde_json::Value =
        serde_json::from_str(&ok(&["server", "list", "acme", "--json"])).unwrap();
    assert_eq!(after.as_array().map(Vec::len), Some(2));
}

/// `mcpgw serve` with `MCPGW_LOG_FORMAT` set to `format`, until its first log line; that line.
fn first_log_line(format: Option<&str>) -> String {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcpgw"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .env("MCPGW_DATA_DIR", dir.path())
        .env_remove("MCPGW_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    match format {
        Some(f) => cmd.env("MCPGW_LOG_FORMAT", f),
        None => cmd.env_remove("MCPGW_LOG_FORMAT"),
    };
    let mut child = cmd.spawn().expect("run mcpgw serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    line
}

#[test]
fn logs_are_plain_text_off_a_terminal_or_json_when_asked() {
    // stderr is a pipe here, as in a log file or under a supervisor: no colour codes.
    let text = first_log_line(None);
    assert!(text.contains("INFO"), "{text:?}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI codes off a terminal: {text:?}"
    );
    let json = first_log_line(Some("json"));
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("one JSON object per line");
    assert_eq!(parsed["level"], "INFO", "{json}");
    assert!(parsed["fields"]["message"].is_string(), "{json}");
    assert!(parsed["timestamp"].is_string(), "{json}");
    assert!(!json.contains('\u{1b}'), "{json:?}");
    let o = Command::new(env!("CARGO_BIN_EXE_mcpgw"))
        .args(["workspace", "list"])
        .env("MCPGW_LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("MCPGW_LOG_FORMAT"),
        "{o:?}"
    );
}

#[test]
fn roles_member_disable_and_the_identity_provider_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_mcpgw"))
            .args(args)
            .args([
                "--database",
                &format!("sqlite://{}", dir.path().join("mcpgw.db").display()),
            ])
            .current_dir(dir.path())
            .env_remove("MCPGW_PUBLIC_URL")
            .env_remove("MCPGW_ADMIN_TOKEN")
            .output()
            .expect("run mcpgw");
        (
            o.status.success(),
            stdout(&o),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let ok = |args: &[&str]| {
        let (success, out, err) = run(args);
        assert!(success, "{args:?}: {err}");
        out
    };
    ok(&["workspace", "create", "acme"]);
    ok(&["member", "add", "acme", "alice"]);
    ok(&["role", "create", "acme", "db-readers", "db:query"]);
    ok(&["role", "grant", "acme", "db-readers", "db:schema"]);
    ok(&["role", "assign", "acme", "alice", "db-readers"]);
    let roles = ok(&["role", "list", "acme"]);
    assert!(
        roles.contains("db-readers")
            && roles.contains("db:query db:schema")
            && roles.contains("alice"),
        "{roles}"
    );
    ok(&["member", "disable", "acme", "alice"]);
    let members = ok(&["member", "list", "acme", "--json"]);
    let members: serde_json::Value = serde_json::from_str(&members).unwrap();
    assert!(members[0]["disabled_ms"].is_i64(), "{members}");
    assert_eq!(members[0]["roles"], serde_json::json!(["db-readers"]));
    ok(&["member", "enable", "acme", "alice"]);

    // Bulk import: tokens go to a new file only its owner can read, once.
    std::fs::write(
        dir.path().join("people.csv"),
        "member,grants,roles\nbob,web:search,db-readers\ncarol,,\n",
    )
    .unwrap();
    let out = ok(&[
        "member",
        "import",
        "acme",
        "people.csv",
        "--issue-tokens",
        "tokens.csv",
        "--expires",
        "30d",
    ]);
    assert!(
        out.contains("imported 2 members into acme (2 new, 0 existing)"),
        "{out}"
    );
    let tokens = std::fs::read_to_string(dir.path().join("tokens.csv")).unwrap();
    let lines: Vec<&str> = tokens.lines().collect();
    assert_eq!(lines[0], "member,token_id,token");
    assert!(
        lines[1].starts_with("bob,tok_") && lines[1].contains(",mcpgw_"),
        "{tokens}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("tokens.csv"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (success, _, err) = run(&[
        "member",
        "import",
        "acme",
        "people.csv",
        "--issue-tokens",
        "tokens.csv",
    ]);
    assert!(!success && err.contains("must not exist yet"), "{err}");
    std::fs::write(
        dir.path().join("bad.jsonl"),
        "{\"member\":\"x\",\"roles\":[\"nope\"]}\n",
    )
    .unwrap();
    let (success, _, err) = run(&["member", "import", "acme", "bad.jsonl"]);
    assert!(!success && err.contains("nope"), "{err}");
    let (success, _, err) = run(&["role", "assign", "acme", "alice", "nope"]);
    assert!(!success && err.contains("unknown role \"nope\""), "{err}");

    // Identity provider: checked, stored, shown (the keys live in a running gateway), removed.
    let (success, _, err) = run(&["idp", "set", "acme", "--issuer", "https://idp.example"]);
    assert!(!success && err.contains("--audience"), "{err}");
    let (success, _, err) = run(&[
        "idp",
        "set",
        "acme",
        "--issuer",
        "http://idp.example",
        "--audience",
        "a",
    ]);
    assert!(!success && err.contains("https"), "{err}");
    let (success, _, err) = run(&[
        "idp",
        "set",
        "acme",
        "--issuer",
        "https://idp.example",
        "--audience",
        "a",
        "--role-map",
        "eng=db-readers",
    ]);
    assert!(!success && err.contains("groups_claim"), "{err}");
    ok(&[
        "idp",
        "set",
        "acme",
        "--issuer",
        "https://idp.example/realms/acme",
        "--audience",
        "https://gw.example/mcp",
        "--member-claim",
        "email",
        "--groups-claim",
        "groups",
        "--role-map",
        "eng=db-readers",
        "--scope",
        "mcp:tools",
        "--ca-file",
        "idp-ca.pem",
    ]);
    let show = ok(&["idp", "show", "acme"]);
    assert!(
        show.contains("issuer        https://idp.example/realms/acme")
            && show.contains("role map      eng = db-readers")
            && show.contains("scopes        mcp:tools")
            && show.contains("keys          unknown: no admin token configured"),
        "{show}"
    );
    assert!(
        show.contains(&dir.path().join("idp-ca.pem").display().to_string()),
        "a relative CA file is stored absolute: {show}"
    );
    ok(&["idp", "remove", "acme"]);
    let (success, _, err) = run(&["idp", "show", "acme"]);
    assert!(!success && err.contains("no identity provider"), "{err}");
}
