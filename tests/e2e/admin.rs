//! The admin HTTP API against a running gateway, on both databases.

use mcpgw_tests::TestGateway;
use mcpgw_tests::db::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Instant;

async fn body(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_requires_the_admin_token() {
    let db = TestDb::sqlite();
    let gw = TestGateway::start(&db.url).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/workspaces", gw.admin_url);
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let (_, v) = body(resp).await;
    assert_eq!(v["error"]["code"], "unauthorized");
    for wrong in [
        "",
        "test-admin-token-012345678",
        "test-admin-token-01234567890",
        "x",
    ] {
        let resp = client.get(&url).bearer_auth(wrong).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{wrong:?}");
    }
    assert_eq!(
        client
            .get(format!("{}/healthz", gw.admin_url))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_manages_everything_and_revocation_is_immediate() {
    for db in TestDb::all().await {
        let gw = TestGateway::start(&db.url).await;
        let req = |m: Method, p: &str| gw.admin(m, p);
        let (s, v) = body(
            req(Method::POST, "/v1/workspaces")
                .json(&json!({"name": "acme"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (s, v["enforce"].clone()),
            (StatusCode::CREATED, json!(false)),
            "{}",
            db.backend
        );
        let (s, v) = body(
            req(Method::POST, "/v1/workspaces")
                .json(&json!({"name": "acme"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (StatusCode::CONFLICT, json!("duplicate"))
        );
        req(Method::POST, "/v1/workspaces")
            .json(&json!({"name": "other"}))
            .send()
            .await
            .unwrap();

        let (s, _) = body(
            req(Method::POST, "/v1/workspaces/acme/members")
                .json(&json!({"name": "alice"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        let server = json!({"name": "db", "url": "http://127.0.0.1:9/mcp", "headers": [{"name": "Authorization", "env": "DB_TOKEN"}]});
        let (s, v) = body(
            req(Method::POST, "/v1/workspaces/acme/servers")
                .json(&server)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let bad = json!({"name": "x", "url": "gopher://x"});
        let (s, v) = body(
            req(Method::POST, "/v1/workspaces/acme/servers")
                .json(&bad)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (StatusCode::BAD_REQUEST, json!("invalid"))
        );
        let (_, v) = body(
            req(Method::GET, "/v1/workspaces/acme/servers")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            v[0]["headers"][0],
            json!({"name": "Authorization", "source": "env:DB_TOKEN"})
        );

        let grants = json!({"member": "alice", "patterns": ["db:*", "ci:status"]});
        let (s, v) = body(
            req(Method::POST, "/v1/workspaces/acme/grants")
                .json(&grants)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((s, v.as_array().map(Vec::len)), (StatusCode::OK, Some(2)));
        let bad = json!({"member": "alice", "patterns": ["db"]});
        let (s, _) = body(
            req(Method::POST, "/v1/workspaces/acme/grants")
                .json(&bad)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (_, v) = body(
            req(Method::GET, "/v1/workspaces/acme/grants?member=alice")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            v,
            json!([{"member": "alice", "pattern": "ci:status"}, {"member": "alice", "pattern": "db:*"}])
        );

        let (s, issued) = body(
            req(Method::POST, "/v1/workspaces/acme/tokens")
                .json(&json!({"member": "alice", "expires": "30d"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        let token = issued["token"].as_str().unwrap().to_owned();
        let id = issued["id"].as_str().unwrap().to_owned();
        let (_, list) = body(
            req(Method::GET, "/v1/workspaces/acme/tokens")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(
            !list.to_string().contains(&token),
            "listing never shows the token"
        );
        assert_eq!(list[0]["id"], id.as_str());

        let verify = |t: String| {
            req(Method::POST, "/v1/tokens/verify")
                .json(&json!({"token": t}))
                .send()
        };
        let (_, v) = body(verify(token.clone()).await.unwrap()).await;
        assert_eq!(
            (v["valid"].clone(), v["member"].clone()),
            (json!(true), json!("alice"))
        );

        // A token of another workspace cannot be revoked through this one.
        let (_, other) = body(
            req(Method::POST, "/v1/workspaces/other/tokens")
                .json(&json!({}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let path = format!(
            "/v1/workspaces/acme/tokens/{}",
            other["id"].as_str().unwrap()
        );
        assert_eq!(
            req(Method::DELETE, &path).send().await.unwrap().status(),
            StatusCode::NOT_FOUND
        );

        // Revocation holds on this process as soon as the call returns.
        let started = Instant::now();
        let resp = req(Method::DELETE, &format!("/v1/workspaces/acme/tokens/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let (_, v) = body(verify(token.clone()).await.unwrap()).await;
        let took = started.elapsed();
        assert_eq!(v["valid"], false, "{}", db.backend);
        eprintln!(
            "{}: revoke → refused on the same process in {took:?}",
            db.backend
        );
        assert!(took.as_millis() < 100, "{took:?}");

        let (s, v) = body(
            req(Method::PUT, "/v1/workspaces/acme/enforce")
                .json(&json!({"enforce": true}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((s, v["enforce"].clone()), (StatusCode::OK, json!(true)));
        let (_, v) = body(req(Method::GET, "/v1/workspaces").send().await.unwrap()).await;
        assert_eq!(v[0]["enforce"], true);

        // Errors are JSON with stable codes.
        let (s, v) = body(req(Method::GET, "/v1/nothing").send().await.unwrap()).await;
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (StatusCode::NOT_FOUND, json!("no_route"))
        );
        let (s, v) = body(
            req(Method::POST, "/v1/workspaces")
                .body("{not json")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (StatusCode::BAD_REQUEST, json!("invalid"))
        );
        let (s, v) = body(
            req(Method::POST, "/v1/workspaces")
                .json(&json!({"name": "x", "extra": 1}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (StatusCode::BAD_REQUEST, json!("invalid"))
        );
        let huge = json!({"name": "x".repeat(100_000)});
        let (s, v) = body(
            req(Method::POST, "/v1/workspaces")
                .json(&huge)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (StatusCode::PAYLOAD_TOO_LARGE, json!("too_large"))
        );
        let (s, v) = body(
            req(Method::DELETE, "/v1/workspaces/nope")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (StatusCode::NOT_FOUND, json!("not_found"))
        );

        let (s, v) = body(req(Method::GET, "/v1/policy/status").send().await.unwrap()).await;
        assert_eq!(
            (s, v["modules"][0]["name"].clone()),
            (StatusCode::OK, json!("allowlist"))
        );

        // Removing the member ends the workspace's other tokens of theirs; the workspace remains.
        let (_, t2) = body(
            req(Method::POST, "/v1/workspaces/acme/tokens")
                .json(&json!({"member": "alice"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        req(Method::DELETE, "/v1/workspaces/acme/members/alice")
            .send()
            .await
            .unwrap();
        let (_, v) = body(
            verify(t2["token"].as_str().unwrap().to_owned())
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(v["valid"], false);
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_servers_are_added_and_bad_ones_refused_without_echoing_values() {
    for db in TestDb::all().await {
        let gw = TestGateway::start(&db.url).await;
        let post = |body: Value| {
            gw.admin(Method::POST, "/v1/workspaces/acme/servers")
                .json(&body)
                .send()
        };
        gw.admin(Method::POST, "/v1/workspaces")
            .json(&json!({"name": "acme"}))
            .send()
            .await
            .unwrap();
        let server = json!({
            "name": "gh",
            "stdio": {
                "command": "npx",
                "args": ["-y", "@modelcontextprotocol/server-github"],
                "env": [
                    {"name": "MODE", "value": "sekrit-env-value"},
                    {"name": "GITHUB_TOKEN", "from": "GH_TOKEN"},
                    {"name": "KEY", "file": "/run/secrets/gh"},
                ],
                "fence": {"no_network": true, "memory_mb": 256},
            },
        });
        let (s, added) = body(post(server).await.unwrap()).await;
        assert_eq!(s, StatusCode::CREATED, "{}: {added}", db.backend);
        let (s, listed) = body(
            gw.admin(Method::GET, "/v1/workspaces/acme/servers")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(listed[0], added, "what add answers is what list shows");
        assert!(!listed.to_string().contains("sekrit"), "{listed}");
        assert_eq!(listed[0]["url"], "stdio://acme/gh");
        let t = &listed[0]["transport"];
        assert_eq!(
            (&t["kind"], &t["command"], &t["env"]),
            (
                &json!("stdio"),
                &json!("npx"),
                &json!([
                    {"name": "MODE", "source": "literal"},
                    {"name": "GITHUB_TOKEN", "source": "env:GH_TOKEN"},
                    {"name": "KEY", "source": "file:/run/secrets/gh"},
                ])
            )
        );
        assert_eq!(
            (
                &t["fence"]["no_network"],
                &t["fence"]["memory_mb"],
                &t["fence"]["max_processes"]
            ),
            (&json!(true), &json!(256), &json!(512)),
            "unset fence fields take their defaults"
        );

        for (bad, names) in [
            (
                json!({"name": "x", "stdio": {"command": "c", "fence": {"memory_mb": "sekrit-1"}}}),
                "stdio.fence.memory_mb",
            ),
            (
                json!({"name": "x", "url": "http://x/mcp", "stdio": {"command": "c"}}),
                "url: a stdio server has none",
            ),
            (
                json!({"name": "x", "stdio": {"command": "c", "env": [{"name": "K", "value": "sekrit-2", "from": "V"}]}}),
                "environment variable K: give exactly one of value, from, file",
            ),
            (
                json!({"name": "x", "url": "http://x/mcp", "tls": {"ca_file": "/ca.pem"}}),
                "tls: only for an https:// url",
            ),
        ] {
            let (s, v) = body(post(bad.clone()).await.unwrap()).await;
            assert_eq!(
                (s, &v["error"]["code"]),
                (StatusCode::BAD_REQUEST, &json!("invalid")),
                "{bad}"
            );
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(names), "{bad}: {message}");
            assert!(!message.contains("sekrit"), "{bad}: {message}");
        }
        let (_, listed) = body(
            gw.admin(Method::GET, "/v1/workspaces/acme/servers")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{}", db.backend);
        gw.stop().await;
    }
}
