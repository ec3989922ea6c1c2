//! Members signed in through an identity provider, end to end: a real OIDC issuer (discovery and
//! JWKS over HTTPS, keys made per test: RSA, P-256, Ed25519), tokens minted in the test, a real
//! rmcp upstream and real rmcp clients through the gateway, on SQLite and PostgreSQL.

use mcpgw_tests::db::TestDb;
use mcpgw_tests::oidc::{SigningKey, TestIssuer, forge};
use mcpgw_tests::upstream::Upstream;
use mcpgw_tests::{Seed, TestGateway, mcp_client, tool_names};
use reqwest::{Method, StatusCode};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A raw `initialize` with `token`: the status and the challenge.
async fn list(url: &str, token: &str) -> (StatusCode, String) {
    mcpgw_tests::initialize_status(url, token).await
}

async fn auth_records(gw: &TestGateway) -> Vec<Value> {
    let all = gw
        .admin_call(Method::GET, "/v1/audit?limit=1000", json!({}))
        .await;
    all["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "auth")
        .cloned()
        .collect()
}

async fn gateway(db: &TestDb) -> TestGateway {
    TestGateway::start_config(&db.url, |c| {
        c.idp.min_refresh = Duration::from_millis(100);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_the_identity_provider_get_their_groups_roles_and_bad_tokens_get_401() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, ec, ed) = (
        SigningKey::rsa("rsa-1", dir.path()),
        SigningKey::ec("ec-1"),
        SigningKey::ed25519("ed-1"),
    );
    let issuer = TestIssuer::start(dir.path(), &[&rsa, &ec, &ed]).await;
    for db in TestDb::all().await {
        let upstream = Upstream::start(true).await;
        let gw = gateway(&db).await;
        gw.seed(&Seed {
            workspace: "acme",
            enforce: true,
            servers: &[("db", &upstream.url)],
            members: &[],
        })
        .await;
        let url = format!("{}/mcp/db", gw.mcp_url);
        let audience = format!("{}/mcp", gw.mcp_url);
        gw.admin_post(
            "/v1/workspaces/acme/members",
            json!({"name": "alice@example.com"}),
        )
        .await;
        gw.admin_post(
            "/v1/workspaces/acme/roles",
            json!({"name": "db-readers", "patterns": ["db:query"]}),
        )
        .await;
        let mut idp = json!({
            "issuer": issuer.url, "audience": audience, "member_claim": "email",
            "groups_claim": "groups", "role_map": [{"group": "eng", "role": "db-readers"}],
            "scopes": ["mcp:tools"], "ca_file": issuer.ca_file,
        });
        gw.admin_call(Method::PUT, "/v1/workspaces/acme/idp", idp.clone())
            .await;
        let alice = |extra: Value| {
            let mut claims = json!({"sub": "u-1", "email": "alice@example.com",
                                    "groups": ["eng", "all"], "scope": "openid mcp:tools"});
            if let (Some(c), Value::Object(e)) = (claims.as_object_mut(), extra) {
                c.extend(e);
            }
            issuer.claims(&audience, claims)
        };

        // Each kind of key signs a token that works; the group gives the role's tools only.
        for key in [&rsa, &ec, &ed] {
            let token = key.sign(&alice(json!({})));
            assert_eq!(
                tool_names(&url, &token).await,
                ["query"],
                "{} {:?}",
                db.backend,
                key.alg
            );
        }
        let token = rsa.sign(&alice(json!({})));
        let client = mcp_client(&url, &token).await.unwrap();
        let r = client
            .call_tool(
                CallToolRequestParams::new("query")
                    .with_arguments(json!({"sql": "select 1"}).as_object().unwrap().clone()),
            )
            .await
            .unwrap();
        assert!(format!("{:?}", r.content).contains("rows for: select 1"));
        client.cancel().await.unwrap();
        // Not in the group: not the role.
        let outsider = rsa.sign(&alice(json!({"groups": ["sales"]})));
        assert!(tool_names(&url, &outsider).await.is_empty());

        // The audit names the member, the subject and the issuer; never the token.
        let deadline = Instant::now() + Duration::from_secs(5);
        let call = loop {
            let rows = gw
                .admin_call(Method::GET, "/v1/audit?tool=query", json!({}))
                .await;
            if let Some(r) = rows["records"].as_array().and_then(|r| r.last()).cloned() {
                break r;
            }
            assert!(Instant::now() < deadline, "no call record");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(call["member"], "alice@example.com", "{call}");
        assert_eq!(call["subject"], "u-1", "{call}");
        assert_eq!(call["issuer"], issuer.url.as_str(), "{call}");
        assert!(
            !call.to_string().contains(&token[..40]),
            "no token in the audit"
        );

        let before = auth_records(&gw).await.len();
        // Metadata and challenges name the provider and the scope.
        let meta: Value = reqwest::get(format!(
            "{}/.well-known/oauth-protected-resource/mcp/db",
            gw.mcp_url
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(meta["authorization_servers"], json!([issuer.url]), "{meta}");
        assert_eq!(meta["scopes_supported"], json!(["mcp:tools"]), "{meta}");
        let (status, challenge) = list(&url, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            challenge.contains("resource_metadata=") && challenge.contains("scope=\"mcp:tools\""),
            "{challenge}"
        );
        let (status, challenge) = list(&url, &rsa.sign(&alice(json!({"scope": "openid"})))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{}", db.backend);
        assert!(
            challenge.contains("error=\"insufficient_scope\"")
                && challenge.contains("scope=\"mcp:tools\""),
            "{challenge}"
        );

        // Bad tokens: each 401 with a failed-authentication record (after the two above).
        let now = alice(json!({}))["iat"].as_u64().unwrap();
        let ghost = SigningKey::ec("ghost");
        let hmac_key =
            jsonwebtoken::EncodingKey::from_secret(rsa.public_pem.as_deref().unwrap().as_bytes());
        let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        hs_header.kid = Some(rsa.kid.clone());
        let good = rsa.sign(&alice(json!({})));
        let (body, signature) = good.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        let bad = [
            (
                "expired",
                rsa.sign(&alice(json!({"exp": now - 3600, "nbf": now - 7200}))),
            ),
            (
                "not yet valid",
                rsa.sign(&alice(json!({"nbf": now + 3600}))),
            ),
            (
                "wrong issuer",
                rsa.sign(&alice(json!({"iss": "https://idp.evil.example"}))),
            ),
            (
                "wrong audience",
                rsa.sign(&alice(json!({"aud": "https://other.example/mcp"}))),
            ),
            (
                "alg none",
                forge(
                    &json!({"alg": "none", "kid": rsa.kid}),
                    &alice(json!({})),
                    |_| Vec::new(),
                ),
            ),
            (
                "HS256 with the RSA public key",
                jsonwebtoken::encode(&hs_header, &alice(json!({})), &hmac_key).unwrap(),
            ),
            ("unknown kid", ghost.sign(&alice(json!({})))),
            (
                "bad signature",
                format!("{body}.{flipped}{}", &signature[1..]),
            ),
            (
                "64 KiB",
                rsa.sign(&alice(json!({"pad": "x".repeat(64 * 1024)}))),
            ),
        ];
        for (what, token) in &bad {
            let (status, challenge) = list(&url, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{}: {what}", db.backend);
            assert!(challenge.contains("invalid_token"), "{what}: {challenge}");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let records = auth_records(&gw).await;
            if records.len() >= before + 2 + bad.len() {
                // Records of different chains (unauthenticated, acme) may interleave: count.
                let mut codes: Vec<&str> = records[before..]
                    .iter()
                    .map(|r| r["error_code"].as_str().unwrap_or(""))
                    .collect();
                codes.sort();
                let mut want = vec!["invalid-token"; bad.len() - 1];
                want.extend(["expired-token", "missing-token", "insufficient-scope"]);
                want.sort();
                assert_eq!(codes, want, "{}", db.backend);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: refusals not audited",
                db.backend
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Another workspace trusting the same issuer needs an audience of its own, and a token
        // for its audience never reaches acme's members.
        gw.admin_post("/v1/workspaces", json!({"name": "beta"}))
            .await;
        let resp = gw
            .admin(Method::PUT, "/v1/workspaces/beta/idp")
            .json(&idp)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::BAD_REQUEST,
            "same issuer and audience"
        );
        let beta_url = format!("{}/mcp/db", gw.mcp_url);
        gw.admin_call(
            Method::PUT,
            "/v1/workspaces/beta/idp",
            json!({"issuer": issuer.url, "audience": "beta", "member_claim": "email",
                   "ca_file": issuer.ca_file}),
        )
        .await;
        let for_beta = rsa.sign(&alice(json!({"aud": "beta"})));
        assert_eq!(
            list(&beta_url, &for_beta).await.0,
            StatusCode::UNAUTHORIZED,
            "alice is acme's member, not beta's"
        );
        let both = rsa.sign(&alice(json!({"aud": ["beta", audience]})));
        assert_eq!(
            list(&url, &both).await.0,
            StatusCode::UNAUTHORIZED,
            "ambiguous"
        );
        let unverified = rsa.sign(&alice(json!({"email_verified": false})));
        assert_eq!(list(&url, &unverified).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            list(&url, &rsa.sign(&alice(json!({"aud": ["other", audience]}))))
                .await
                .0,
            StatusCode::OK,
            "one of several audiences"
        );

        // Unknown members are refused, or created on first sight with auto_create.
        let bob = rsa.sign(&issuer.claims(
            &audience,
            json!({"sub": "u-2", "email": "bob@example.com", "groups": ["eng"], "scope": "mcp:tools"}),
        ));
        assert_eq!(list(&url, &bob).await.0, StatusCode::UNAUTHORIZED);
        idp["auto_create"] = json!(true);
        gw.admin_call(Method::PUT, "/v1/workspaces/acme/idp", idp.clone())
            .await;
        assert_eq!(tool_names(&url, &bob).await, ["query"]);
        let members = gw
            .admin_call(Method::GET, "/v1/workspaces/acme/members", json!({}))
            .await;
        assert!(
            members
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "bob@example.com"),
            "{members}"
        );

        // Key rotation: the new key's tokens work at once, the old key's stop once it is gone.
        let rotated = SigningKey::ec("ec-2");
        issuer.publish(&[&rotated, &ed]);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            tool_names(&url, &rotated.sign(&alice(json!({})))).await,
            ["query"],
            "{}: rotated key",
            db.backend
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            list(&url, &ec.sign(&alice(json!({})))).await.0,
            StatusCode::UNAUTHORIZED,
            "{}: a key that left the JWKS",
            db.backend
        );
        let status = gw
            .admin_call(Method::GET, "/v1/workspaces/acme/idp", json!({}))
            .await;
        assert_eq!(status["status"]["keys"], 2, "{status}");
        assert!(status["status"]["last_refresh_ms"].is_i64(), "{status}");
        issuer.publish(&[&rsa, &ec, &ed]);

        // Disabled through this gateway: refused by a second one on the same database within
        // a second.
        let other = gateway(&db).await;
        let other_url = format!("{}/mcp/db", other.mcp_url);
        let token = ed.sign(&alice(json!({})));
        assert_eq!(list(&other_url, &token).await.0, StatusCode::OK);
        let started = Instant::now();
        gw.admin_call(
            Method::PUT,
            "/v1/workspaces/acme/members/alice@example.com/disabled",
            json!({"disabled": true}),
        )
        .await;
        loop {
            if list(&other_url, &token).await.0 == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{}: disable not seen by the other gateway",
                db.backend
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!(
            "{}: an identity-provider member disabled through one gateway is refused by the other after {:?}",
            db.backend,
            started.elapsed()
        );
        assert_eq!(list(&url, &token).await.0, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_provider_down_cached_keys_work_until_they_expire_then_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::ec("ec-1");
    let issuer = TestIssuer::start(dir.path(), &[&key]).await;
    let db = TestDb::sqlite();
    let upstream = Upstream::start(true).await;
    let gw = TestGateway::start_config(&db.url, |c| {
        c.idp.min_refresh = Duration::from_millis(50);
        c.idp.refresh_every = Duration::from_millis(200);
        c.idp.max_age = Duration::from_millis(3000);
        c.idp.fetch_timeout = Duration::from_millis(500);
    })
    .await;
    gw.seed(&Seed {
        workspace: "acme",
        enforce: true,
        servers: &[("db", &upstream.url)],
        members: &[("u-1", &["db:*"])],
    })
    .await;
    let url = format!("{}/mcp/db", gw.mcp_url);
    let audience = "https://gw.example/mcp";
    gw.admin_call(
        Method::PUT,
        "/v1/workspaces/acme/idp",
        json!({"issuer": issuer.url, "audience": audience, "ca_file": issuer.ca_file}),
    )
    .await;
    let token = key.sign(&issuer.claims(audience, json!({"sub": "u-1"})));
    assert_eq!(list(&url, &token).await.0, StatusCode::OK);

    // The provider goes away: the keys fetched keep working while they last...
    let ca_file = issuer.ca_file.clone();
    let issuer_url = issuer.url.clone();
    drop(issuer);
    // When the keys held now were fetched (no fetch succeeds from here on).
    let fetched = gw
        .admin_call(Method::GET, "/v1/workspaces/acme/idp", json!({}))
        .await["status"]["last_refresh_ms"]
        .as_i64()
        .expect("keys fetched");
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    if now_ms() < fetched + 2500 {
        assert_eq!(list(&url, &token).await.0, StatusCode::OK, "cached keys");
    }
    // ...then every token of that issuer is refused, and the status says why.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let (status, challenge) = list(&url, &token).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(challenge.is_empty(), "not the token's fault: {challenge}");
            break;
        }
        assert!(Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        now_ms() >= fetched + 2900,
        "refused {} ms after the keys were fetched, before they expired",
        now_ms() - fetched
    );
    let show = gw
        .admin_call(Method::GET, "/v1/workspaces/acme/idp", json!({}))
        .await;
    assert!(
        show["status"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(".well-known/openid-configuration")),
        "{show}"
    );
    assert_eq!(show["config"]["ca_file"], json!(ca_file));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let records = auth_records(&gw).await;
        if records.iter().any(|r| r["error_code"] == "idp-unavailable") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refusal not audited: {issuer_url}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two real `mcpgw serve` processes on one database: an identity-provider member disabled
/// through one is refused by the other within a second, on SQLite and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_disabled_through_one_process_is_refused_by_the_other_within_a_second() {
    use mcpgw_tests::ServeProcess;
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::ec("ec-1");
    let issuer = TestIssuer::start(dir.path(), &[&key]).await;
    for db in TestDb::all().await {
        let upstream = Upstream::start(true).await;
        let (a, b) = (ServeProcess::start(&db.url), ServeProcess::start(&db.url));
        a.admin_call(Method::POST, "/v1/workspaces", json!({"name": "acme"}))
            .await;
        a.admin_call(
            Method::POST,
            "/v1/workspaces/acme/servers",
            json!({"name": "db", "url": upstream.url}),
        )
        .await;
        a.admin_call(
            Method::POST,
            "/v1/workspaces/acme/members",
            json!({"name": "alice@example.com"}),
        )
        .await;
        let audience = "https://gw.example/mcp";
        a.admin_call(
            Method::PUT,
            "/v1/workspaces/acme/idp",
            json!({"issuer": issuer.url, "audience": audience, "member_claim": "email",
                   "ca_file": issuer.ca_file}),
        )
        .await;
        let token = key.sign(&issuer.claims(
            audience,
            json!({"sub": "u-1", "email": "alice@example.com"}),
        ));
        let (a_url, b_url) = (
            format!("{}/mcp/db", a.mcp_url),
            format!("{}/mcp/db", b.mcp_url),
        );
        // B learns of the provider through the database and fetches its keys itself.
        let deadline = Instant::now() + Duration::from_secs(5);
        while list(&b_url, &token).await.0 != StatusCode::OK {
            assert!(
                Instant::now() < deadline,
                "{}: B never took the token",
                db.backend
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(list(&a_url, &token).await.0, StatusCode::OK);

        let started = Instant::now();
        a.admin_call(
            Method::PUT,
            "/v1/workspaces/acme/members/alice@example.com/disabled",
            json!({"disabled": true}),
        )
        .await;
        while list(&b_url, &token).await.0 != StatusCode::UNAUTHORIZED {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{}: B still takes the disabled member's token",
                db.backend
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed();
        assert_eq!(list(&a_url, &token).await.0, StatusCode::UNAUTHORIZED);
        eprintln!(
            "{}: disabled through process A, refused by process B after {took:?}",
            db.backend
        );
    }
}
