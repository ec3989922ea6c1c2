//! Servers as the store takes and lists them: every field checked, secrets never listed.

use super::*;
use serde_json::json;

fn stdio(command: &str) -> StdioSpec {
    StdioSpec {
        command: command.into(),
        args: vec![],
        env: vec![],
        cwd: None,
        fence: Fence::default(),
    }
}

fn http(url: &str) -> NewServer {
    NewServer {
        name: "db".into(),
        url: Some(url.into()),
        ..NewServer::default()
    }
}

fn header(name: &str, value: Option<&str>, env: Option<&str>, file: Option<&str>) -> HeaderSpec {
    HeaderSpec {
        name: name.into(),
        value: value.map(Into::into),
        env: env.map(Into::into),
        file: file.map(Into::into),
    }
}

async fn open() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Store::connect(&url).await.unwrap();
    store.workspace_create("acme").await.unwrap();
    (store, dir)
}

#[test]
fn a_new_server_is_checked_field_by_field() {
    let tls = |ca: &str| TlsFiles {
        ca_file: Some(ca.into()),
        ..TlsFiles::default()
    };
    let with_stdio = |s: StdioSpec| NewServer {
        name: "fs".into(),
        stdio: Some(s),
        ..NewServer::default()
    };
    let refused: Vec<(&str, NewServer, &str)> = vec![
        (
            "no url",
            NewServer {
                name: "db".into(),
                ..NewServer::default()
            },
            "url: required",
        ),
        ("not http", http("ftp://x/mcp"), "invalid url"),
        (
            "tls on http://",
            NewServer {
                tls: Some(tls("/ca.pem")),
                ..http("http://x/mcp")
            },
            "tls: only for an https:// url",
        ),
        (
            "relative ca",
            NewServer {
                tls: Some(tls("ca.pem")),
                ..http("https://x/mcp")
            },
            "ca_file must be an absolute path",
        ),
        (
            "cert without key",
            NewServer {
                tls: Some(TlsFiles {
                    client_cert: Some("/c.pem".into()),
                    ..TlsFiles::default()
                }),
                ..http("https://x/mcp")
            },
            "client_cert and client_key go together",
        ),
        (
            "two sources",
            NewServer {
                headers: vec![header("Authorization", Some("v"), Some("TOKEN"), None)],
                ..http("http://x/mcp")
            },
            "give exactly one of value, env, file",
        ),
        (
            "no source",
            NewServer {
                headers: vec![header("A", None, None, None)],
                ..http("http://x/mcp")
            },
            "give exactly one of value, env, file",
        ),
        (
            "relative header file",
            NewServer {
                headers: vec![header("A", None, None, Some("token.txt"))],
                ..http("http://x/mcp")
            },
            "file must be an absolute path",
        ),
        (
            "bad env name",
            NewServer {
                headers: vec![header("A", None, Some("1X"), None)],
                ..http("http://x/mcp")
            },
            "invalid environment variable name",
        ),
        (
            "bad header value",
            NewServer {
                headers: vec![header("A", Some("line\nbreak"), None, None)],
                ..http("http://x/mcp")
            },
            "invalid value for header \"A\"",
        ),
        (
            "stdio with url",
            NewServer {
                url: Some("http://x/mcp".into()),
                ..with_stdio(stdio("srv"))
            },
            "url: a stdio server has none",
        ),
        (
            "stdio with headers",
            NewServer {
                headers: vec![header("A", Some("v"), None, None)],
                ..with_stdio(stdio("srv"))
            },
            "headers: a stdio server has none",
        ),
        (
            "stdio with tls",
            NewServer {
                tls: Some(tls("/ca.pem")),
                ..with_stdio(stdio("srv"))
            },
            "tls: only for an https:// url",
        ),
        (
            "stdio without command",
            with_stdio(stdio("")),
            "needs a command",
        ),
        (
            "reserved variable",
            with_stdio(StdioSpec {
                env: vec![EnvSpec {
                    name: "PATH".into(),
                    value: Some("/tmp".into()),
                    from: None,
                    file: None,
                }],
                ..stdio("srv")
            }),
            "PATH is set by the gateway",
        ),
        (
            "zero limit",
            with_stdio(StdioSpec {
                fence: Fence {
                    memory_mb: 0,
                    ..Fence::default()
                },
                ..stdio("srv")
            }),
            "resource limits must be positive",
        ),
        (
            "relative fence path",
            with_stdio(StdioSpec {
                fence: Fence {
                    read_only: vec!["data".into()],
                    ..Fence::default()
                },
                ..stdio("srv")
            }),
            "fence path must be an absolute path",
        ),
    ];
    for (what, spec, message) in refused {
        let err = spec.check("acme").expect_err(what);
        assert_eq!(err.code(), "invalid", "{what}");
        assert!(err.to_string().contains(message), "{what}: {err}");
    }

    let (url, transport) = http("http://x/mcp").check("acme").unwrap();
    assert_eq!(
        (url.as_str(), transport),
        ("http://x/mcp", None),
        "plain http stores NULL"
    );
    let (_, transport) = NewServer {
        tls: Some(tls("/ca.pem")),
        ..http("HTTPS://x/mcp")
    }
    .check("acme")
    .unwrap();
    assert_eq!(
        transport,
        Some(Transport::Http {
            tls: tls("/ca.pem")
        })
    );
    let (url, transport) = with_stdio(stdio("npx")).check("acme").unwrap();
    assert_eq!(url, "stdio://acme/fs");
    assert_eq!(transport, Some(Transport::Stdio(stdio("npx"))));
}

#[test]
fn header_specs_parse_from_the_command_line_forms() {
    let h = parse_header_file("Authorization: /run/secrets/token").unwrap();
    assert_eq!(
        h,
        header("Authorization", None, None, Some("/run/secrets/token"))
    );
    assert_eq!(h.source(), "file:/run/secrets/token");
    assert_eq!(
        parse_header("X-Team: core", false).unwrap().source(),
        "literal"
    );
    assert_eq!(
        parse_header("A: TOKEN", true).unwrap().source(),
        "env:TOKEN"
    );
    assert!(parse_header_file("A: relative/token").is_err());
    let err = parse_header("Bearer sekrit-no-colon", false).unwrap_err();
    assert!(!err.to_string().contains("sekrit"), "{err}");
}

#[tokio::test]
async fn listings_show_where_values_come_from_never_the_values() {
    let (store, _dir) = open().await;
    store
        .server_add_spec(
            "acme",
            NewServer {
                headers: vec![
                    header("X-Team", Some("sekrit-literal-header"), None, None),
                    header("Authorization", None, Some("DB_TOKEN"), None),
                    header("X-Key", None, None, Some("/run/key")),
                ],
                tls: Some(TlsFiles {
                    ca_file: Some("/etc/ca.pem".into()),
                    client_cert: Some("/etc/c.pem".into()),
                    client_key: Some("/etc/k.pem".into()),
                }),
                ..http("https://db.internal/mcp")
            },
        )
        .await
        .unwrap();
    let env = vec![
        transport::parse_env("MODE=sekrit-literal-env", transport::EnvKind::Literal).unwrap(),
        transport::parse_env("TOKEN=GH_TOKEN", transport::EnvKind::From).unwrap(),
        transport::parse_env("KEY=/run/gh", transport::EnvKind::File).unwrap(),
    ];
    let added = store
        .server_add_spec(
            "acme",
            NewServer {
                name: "gh".into(),
                prefix: Some("".into()),
                stdio: Some(StdioSpec {
                    args: vec!["-y".into(), "server-github".into()],
                    env,
                    cwd: Some("/srv/gh".into()),
                    fence: Fence {
                        no_network: true,
                        ..Fence::default()
                    },
                    ..stdio("npx")
                }),
                ..NewServer::default()
            },
        )
        .await
        .unwrap();
    store
        .server_add("acme", "plain", "http://127.0.0.1:9/mcp", vec![], None)
        .await
        .unwrap();

    let listed = store.server_list("acme").await.unwrap();
    assert_eq!(listed[1], added, "what add answers is what list shows");
    let text = serde_json::to_string(&listed).unwrap();
    assert!(!text.contains("sekrit"), "a value leaked: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v[0]["headers"],
        json!([
            {"name": "X-Team", "source": "literal"},
            {"name": "Authorization", "source": "env:DB_TOKEN"},
            {"name": "X-Key", "source": "file:/run/key"},
        ])
    );
    assert_eq!(
        v[0]["transport"],
        json!({"kind": "http", "tls": {"ca_file": "/etc/ca.pem", "client_cert": "/etc/c.pem", "client_key": "/etc/k.pem"}})
    );
    assert_eq!(v[1]["url"], "stdio://acme/gh");
    assert_eq!(v[1]["prefix"], "");
    assert_eq!(
        v[1]["transport"],
        json!({
            "kind": "stdio",
            "command": "npx",
            "args": ["-y", "server-github"],
            "cwd": "/srv/gh",
            "env": [
                {"name": "MODE", "source": "literal"},
                {"name": "TOKEN", "source": "env:GH_TOKEN"},
                {"name": "KEY", "source": "file:/run/gh"},
            ],
            "fence": {
                "enabled": true, "no_network": true, "read_only": [], "read_write": [],
                "memory_mb": 1024, "max_processes": 512, "max_open_files": 1024,
                "cpu_seconds": 3600, "run_as": "nobody",
            },
        })
    );
    assert_eq!(v[2]["transport"], json!({"kind": "http"}));

    // Stored: the transport as JSON, NULL for plain http (as rows from before transports).
    let Db::Sqlite(pool) = store.db() else {
        unreachable!()
    };
    let stored: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT name, transport FROM servers ORDER BY name")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(stored[2], ("plain".into(), None));
    let gh: Transport = serde_json::from_str(stored[1].1.as_deref().unwrap()).unwrap();
    assert_eq!(
        gh.stdio().map(|s| s.env[0].value.as_deref()),
        Some(Some("sekrit-literal-env"))
    );

    // A transport this build cannot read is listed as such, not guessed at, and hides nothing else.
    sqlx::query(
        "UPDATE servers SET transport = '{\"kind\":\"carrier-pigeon\"}' WHERE name = 'plain'",
    )
    .execute(pool)
    .await
    .unwrap();
    let listed = store.server_list("acme").await.unwrap();
    assert_eq!(
        (listed.len(), &listed[2].transport),
        (3, &TransportView::Unreadable)
    );
}

#[test]
fn body_errors_name_the_field_and_never_echo_a_value() {
    let cases = [
        (
            json!({"name": "fs", "stdio": {"command": "c", "fence": {"memory_mb": "sekrit-1"}}}),
            "stdio.fence.memory_mb: invalid type: string, expected u64",
        ),
        (
            json!({"name": "db", "url": "http://x", "headers": [{"name": "A", "env": "E"}, {"name": "B", "value": 7}]}),
            "headers[1]: invalid type: integer, expected a string",
        ),
        (
            json!({"name": "fs", "stdio": {"command": "c", "env": [{"name": "K", "value": ["sekrit-2"]}]}}),
            "stdio.env[0]: invalid type: sequence, expected a string",
        ),
        (
            json!({"name": "fs", "stdio": {"command": "c", "fence": {"max_processes": -1}}}),
            "stdio.fence.max_processes: invalid value: integer, expected u64",
        ),
        (
            json!({"name": "db", "tls": {"ca": "/x"}}),
            "tls: unknown field `ca`",
        ),
        (json!({"name": "db", "sekrit": 1}), "unknown field `sekrit`"),
        (json!({"url": "http://x"}), "missing field `name`"),
        (
            json!({"name": "fs", "stdio": {"args": []}}),
            "stdio: missing field `command`",
        ),
    ];
    for (body, message) in cases {
        let err = NewServer::from_json(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.code(), "invalid");
        let text = err.to_string();
        assert!(text.starts_with(message), "{body}: {text}");
        assert!(!text.contains("sekrit-"), "{body}: {text}");
    }
    let err = NewServer::from_json(b"{\"name\": \"sekrit-3").unwrap_err();
    assert!(err.to_string().starts_with("invalid JSON: EOF"), "{err}");
    assert!(!err.to_string().contains("sekrit"));

    let ok = NewServer::from_json(
        br#"{"name": "fs", "stdio": {"command": "npx", "env": [{"name": "T", "from": "GH"}]}}"#,
    )
    .unwrap();
    assert_eq!(ok.stdio.map(|s| s.env[0].source()), Some("env:GH".into()));
}

#[test]
fn durations_parse_and_a_multibyte_last_character_is_refused_not_a_panic() {
    assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
    assert_eq!(
        parse_duration("2w").unwrap(),
        Duration::from_secs(2 * 604_800)
    );
    for bad in ["", "d", "0d", "5", "5x", "é", "5é", "30dé", "-1d"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}
