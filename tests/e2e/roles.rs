//! Roles and member disable end to end: a real rmcp upstream, real rmcp clients, changes made
//! through the admin API. What a member sees and may call is their own grants plus their roles';
//! a disabled member's every credential is refused and the refusals are audited.

use mcpgw_tests::db::TestDb;
use mcpgw_tests::upstream::Upstream;
use mcpgw_tests::{Seed, mcp_client, start_guarded, tool_names};
use reqwest::{Method, StatusCode};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_tools_are_their_grants_plus_their_roles_and_disable_refuses_them() {
    for db in TestDb::all().await {
        let upstream = Upstream::start(true).await;
        let (gw, _policies) = start_guarded(&db.url).await;
        let tokens = gw
            .seed(&Seed {
                workspace: "acme",
                enforce: true,
                servers: &[("db", &upstream.url)],
                members: &[("carol", &[]), ("dave", &["db:echo"])],
            })
            .await;
        let (carol, dave) = (&tokens[0], &tokens[1]);
        let url = format!("{}/mcp/db", gw.mcp_url);
        assert!(tool_names(&url, carol).await.is_empty(), "{}", db.backend);

        // A role with one pattern, assigned: carol sees and calls exactly that.
        let role = gw
            .admin_call(
                Method::POST,
                "/v1/workspaces/acme/roles",
                json!({"name": "db-readers", "patterns": ["db:query"]}),
            )
            .await;
        assert_eq!(role["patterns"], json!(["db:query"]), "{role}");
        gw.admin_call(
            Method::PUT,
            "/v1/workspaces/acme/members/carol/roles/db-readers",
            json!({}),
        )
        .await;
        assert_eq!(tool_names(&url, carol).await, ["query"], "{}", db.backend);
        let client = mcp_client(&url, carol).await.unwrap();
        let r = client
            .call_tool(
                CallToolRequestParams::new("query")
                    .with_arguments(json!({"sql": "select 1"}).as_object().unwrap().clone()),
            )
            .await
            .unwrap();
        assert!(format!("{:?}", r.content).contains("rows for: select 1"));
        let before = upstream.calls();
        let err = client
            .call_tool(CallToolRequestParams::new("schema"))
            .await
            .unwrap_err();
        assert!(
            format!("{err:?}").contains("Unknown tool: schema"),
            "{err:?}"
        );
        assert_eq!(upstream.calls(), before, "the denied call never left");
        client.cancel().await.unwrap();

        // The role grows: everyone holding it sees more; own grants and roles add up.
        gw.admin_call(
            Method::POST,
            "/v1/workspaces/acme/roles/db-readers/grants",
            json!({"patterns": ["db:schema"]}),
        )
        .await;
        gw.admin_call(
            Method::PUT,
            "/v1/workspaces/acme/members/dave/roles/db-readers",
            json!({}),
        )
        .await;
        assert_eq!(tool_names(&url, carol).await, ["query", "schema"]);
        assert_eq!(tool_names(&url, dave).await, ["echo", "query", "schema"]);
        let members = gw
            .admin_call(Method::GET, "/v1/workspaces/acme/members", json!({}))
            .await;
        assert_eq!(members[0]["name"], "carol");
        assert_eq!(members[0]["roles"], json!(["db-readers"]), "{members}");
        assert_eq!(members[0]["disabled_ms"], Value::Null);

        // Unassigned, and the role deleted: back to own grants only.
        gw.admin_call(
            Method::DELETE,
            "/v1/workspaces/acme/members/carol/roles/db-readers",
            json!({}),
        )
        .await;
        assert!(tool_names(&url, carol).await.is_empty());
        gw.admin_call(
            Method::DELETE,
            "/v1/workspaces/acme/roles/db-readers",
            json!({}),
        )
        .await;
        assert_eq!(tool_names(&url, dave).await, ["echo"]);

        // Disabled: every credential of dave's is refused, nobody else's; enabled: back.
        let second = gw
            .admin_post("/v1/workspaces/acme/tokens", json!({"member": "dave"}))
            .await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let open = mcp_client(&url, dave).await.unwrap();
        open.list_all_tools().await.unwrap();
        gw.admin_call(
            Method::PUT,
            "/v1/workspaces/acme/members/dave/disabled",
            json!({"disabled": true}),
        )
        .await;
        assert!(
            open.list_all_tools().await.is_err(),
            "an open session is refused on its next request"
        );
        let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        for token in [dave, &second] {
            let resp = reqwest::Client::new()
                .post(&url)
                .bearer_auth(token)
                .json(&ping)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{}", db.backend);
            let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
            assert!(challenge.contains("invalid_token"), "{challenge}");
        }
        assert!(
            tool_names(&url, carol).await.is_empty(),
            "carol still gets in"
        );
        let members = gw
            .admin_call(Method::GET, "/v1/workspaces/acme/members", json!({}))
            .await;
        assert!(members[1]["disabled_ms"].is_i64(), "{members}");

        // The refusals are in the audit trail, against dave.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let refused = loop {
            let rows = gw
                .admin_call(
                    Method::GET,
                    "/v1/audit?member=dave&status=denied",
                    json!({}),
                )
                .await;
            let n = rows["records"].as_array().map_or(0, |rows| {
                rows.iter()
                    .filter(|r| r["error_code"] == "member-disabled" && r["workspace"] == "acme")
                    .count()
            });
            if n >= 3 || std::time::Instant::now() > deadline {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(refused >= 3, "{}: {refused} refusals audited", db.backend);

        gw.admin_call(
            Method::PUT,
            "/v1/workspaces/acme/members/dave/disabled",
            json!({"disabled": false}),
        )
        .await;
        assert_eq!(tool_names(&url, &second).await, ["echo"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_commands_refuse_bad_input_and_change_nothing() {
    let db = TestDb::sqlite();
    let (gw, _policies) = start_guarded(&db.url).await;
    gw.seed(&Seed {
        workspace: "acme",
        enforce: true,
        servers: &[],
        members: &[("carol", &[])],
    })
    .await;
    let cases: [(Method, &str, Value, StatusCode); 7] = [
        (
            Method::POST,
            "/v1/workspaces/acme/roles",
            json!({"name": "bad name", "patterns": []}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/workspaces/acme/roles",
            json!({"name": "r", "patterns": ["no-colon"]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/v1/workspaces/acme/members/carol/roles/missing",
            json!({}),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PUT,
            "/v1/workspaces/acme/members/nobody/disabled",
            json!({"disabled": true}),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PUT,
            "/v1/workspaces/acme/members/carol/disabled",
            json!({"disabled": "yes"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::DELETE,
            "/v1/workspaces/acme/roles/missing/grants",
            json!({"patterns": ["db:*"]}),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/v1/workspaces/nowhere/roles",
            json!({"name": "r"}),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, path, body, want) in cases {
        let resp = gw.admin(method, path).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), want, "{path} {body}");
    }
    gw.admin_post(
        "/v1/workspaces/acme/roles",
        json!({"name": "r", "patterns": ["db:*"]}),
    )
    .await;
    let resp = gw
        .admin(Method::POST, "/v1/workspaces/acme/roles")
        .json(&json!({"name": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let resp = gw
        .admin(Method::DELETE, "/v1/workspaces/acme/roles/r/grants")
        .json(&json!({"patterns": ["db:*", "ci:*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "ci:* is not the role's"
    );
    let roles = gw
        .admin_call(Method::GET, "/v1/workspaces/acme/roles", json!({}))
        .await;
    assert_eq!(
        roles,
        json!([{"name": "r", "patterns": ["db:*"], "members": [], "created_ms": roles[0]["created_ms"]}]),
        "the failed revoke took nothing away"
    );
}
