//! SCIM 2.0 provisioning end to end, on SQLite and PostgreSQL: the request sequences Okta and
//! Entra ID send (their documented shapes: value-object and path PATCHes, `"False"` strings,
//! `members[value eq "…"]`), against the admin listener of a real gateway, with a real rmcp
//! upstream and real rmcp clients showing what each change does to a member's tools and
//! credentials; and a deactivation through one `mcpgw serve` process refusing the member's
//! opaque token and JWT on another within a second.

use mcpgw_tests::db::TestDb;
use mcpgw_tests::oidc::{SigningKey, TestIssuer};
use mcpgw_tests::upstream::Upstream;
use mcpgw_tests::{Seed, ServeProcess, TestGateway, start_guarded, tool_names};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// A SCIM request as a provider sends it: (status, JSON body or null).
async fn scim(
    admin_url: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{admin_url}{path}"))
        .bearer_auth(token)
        .header("accept", "application/scim+json");
    if let Some(b) = body {
        req = req
            .header("content-type", "application/scim+json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn patch(ops: Value) -> Option<Value> {
    Some(json!({"schemas": [PATCH], "Operations": ops}))
}

/// Status of a raw `initialize` with `token`.
async fn status(url: &str, token: &str) -> StatusCode {
    mcpgw_tests::initialize_status(url, token).await.0
}

async fn eventually_tools(url: &str, token: &str, want: &[&str], backend: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let got = tool_names(url, token).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{backend}: tools {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A guarded gateway (enforcement on) whose workspace `acme` has the upstream as server `db`,
/// a role `db-users` with `patterns`, and a SCIM token: (gateway, its policy dir, the upstream,
/// the token).
async fn provisioned(
    db: &TestDb,
    patterns: &[&str],
) -> (TestGateway, tempfile::TempDir, Upstream, String) {
    let upstream = Upstream::start(true).await;
    let (gw, policies) = start_guarded(&db.url).await;
    gw.seed(&Seed {
        workspace: "acme",
        enforce: true,
        servers: &[("db", &upstream.url)],
        members: &[],
    })
    .await;
    gw.admin_call(
        Method::POST,
        "/v1/workspaces/acme/roles",
        json!({"name": "db-users", "patterns": patterns}),
    )
    .await;
    let token = gw
        .admin_call(Method::POST, "/v1/workspaces/acme/scim/token", json!({}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    (gw, policies, upstream, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_and_entra_sequences_provision_members_and_groups() {
    for db in TestDb::all().await {
        let b = db.backend;
        let (gw, _policies, _upstream, token) = provisioned(&db, &["db:query", "db:schema"]).await;
        let admin = gw.admin_url.clone();
        let call = |m: Method, p: &str, body: Option<Value>| {
            let (admin, token, p) = (admin.clone(), token.clone(), format!("/scim/v2/acme{p}"));
            async move { scim(&admin, &token, m, &p, body).await }
        };

        // Discovery, as a provider reads it when the app is set up.
        let (s, config) = call(Method::GET, "/ServiceProviderConfig", None).await;
        assert_eq!(s, StatusCode::OK, "{b}: {config}");
        assert_eq!(config["patch"]["supported"], true);
        assert_eq!(config["bulk"]["supported"], false);
        let (_, types) = call(Method::GET, "/ResourceTypes", None).await;
        assert_eq!(types["totalResults"], 2, "{types}");
        let (_, schemas) = call(Method::GET, "/Schemas", None).await;
        assert_eq!(
            schemas["Resources"][0]["id"],
            "urn:ietf:params:scim:schemas:core:2.0:User"
        );

        // Only the workspace's SCIM token opens it: not none, not a wrong one, not the admin's.
        for wrong in ["", "mcpgw_scim_0000", gw.admin_token.as_str()] {
            let (s, e) = scim(&admin, wrong, Method::GET, "/scim/v2/acme/Users", None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}: {wrong:?}");
            assert_eq!(e["schemas"], json!([ERROR]), "{e}");
        }
        let (s, _) = call(Method::GET, "/Users", None).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = scim(&admin, &token, Method::GET, "/scim/v2/other/Users", None).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{b}: a token opens its own workspace only"
        );

        // Okta: look the user up, then create them (Okta sends a password; it is never kept).
        let (_, found) = call(
            Method::GET,
            "/Users?filter=userName%20eq%20%22alice%40example.com%22&startIndex=1&count=100",
            None,
        )
        .await;
        assert_eq!(found["totalResults"], 0, "{b}: {found}");
        let (s, alice) = call(
            Method::POST,
            "/Users",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "alice@example.com",
                "name": {"givenName": "Alice", "familyName": "Liddell"},
                "emails": [{"primary": true, "value": "alice@example.com", "type": "work"}],
                "displayName": "Alice Liddell", "externalId": "00u1abcd", "locale": "en-US",
                "password": "Sup3rS3cret!", "active": true
            })),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}: {alice}");
        let alice_id = alice["id"].as_str().unwrap().to_owned();
        assert_eq!(alice["active"], true);
        assert_eq!(alice["name"]["familyName"], "Liddell");
        assert_eq!(alice["meta"]["resourceType"], "User");
        assert!(
            !alice.to_string().contains("Sup3rS3cret"),
            "{b}: password echoed"
        );
        let (s, dup) = call(
            Method::POST,
            "/Users",
            Some(json!({"userName": "ALICE@example.com"})),
        )
        .await;
        assert_eq!(
            (s, dup["scimType"].as_str()),
            (StatusCode::CONFLICT, Some("uniqueness")),
            "{b}: {dup}"
        );
        let (_, found) = call(
            Method::GET,
            "/Users?filter=userName%20eq%20%22Alice%40Example.com%22",
            None,
        )
        .await;
        assert_eq!(
            found["totalResults"], 1,
            "{b}: userName is case-insensitive: {found}"
        );
        let (_, by_ext) = call(
            Method::GET,
            "/Users?filter=externalId%20eq%20%2200u1abcd%22",
            None,
        )
        .await;
        assert_eq!(by_ext["Resources"][0]["id"], alice_id.as_str());

        // The member exists for the admin API too; give her a token, and a group that maps to
        // a role gives her its tools.
        let alice_token = gw
            .admin_call(
                Method::POST,
                "/v1/workspaces/acme/tokens",
                json!({"member": "alice@example.com"}),
            )
            .await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let url = format!("{}/mcp/db", gw.mcp_url);
        assert!(tool_names(&url, &alice_token).await.is_empty(), "{b}");
        let (s, group) = call(
            Method::POST,
            "/Groups",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Engineering", "members": [{"value": alice_id}]
            })),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}: {group}");
        let group_id = group["id"].as_str().unwrap().to_owned();
        assert_eq!(group["members"][0]["display"], "alice@example.com");
        gw.admin_call(
            Method::PUT,
            "/v1/workspaces/acme/scim/groups/Engineering/role",
            json!({"role": "db-users"}),
        )
        .await;
        eventually_tools(&url, &alice_token, &["query", "schema"], b).await;
        let (_, alice_now) = call(Method::GET, &format!("/Users/{alice_id}"), None).await;
        assert_eq!(
            alice_now["groups"][0]["display"], "Engineering",
            "{alice_now}"
        );

        // Okta deactivates: replace with a value object. Refused at once on this process.
        let (s, off) = call(
            Method::PATCH,
            &format!("/Users/{alice_id}"),
            patch(json!([{"op": "replace", "value": {"active": false}}])),
        )
        .await;
        assert_eq!(
            (s, &off["active"]),
            (StatusCode::OK, &json!(false)),
            "{b}: {off}"
        );
        assert_eq!(
            status(&url, &alice_token).await,
            StatusCode::UNAUTHORIZED,
            "{b}"
        );
        // Entra ID reactivates: capitalised op, a path, a string.
        let (s, on) = call(
            Method::PATCH,
            &format!("/Users/{alice_id}"),
            patch(json!([{"op": "Replace", "path": "active", "value": "True"}])),
        )
        .await;
        assert_eq!(
            (s, &on["active"]),
            (StatusCode::OK, &json!(true)),
            "{b}: {on}"
        );
        assert_eq!(status(&url, &alice_token).await, StatusCode::OK, "{b}");
        // Entra ID's attribute updates keep what they do not name.
        let (_, upd) = call(Method::PATCH, &format!("/Users/{alice_id}"), patch(json!([
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "alice@new.example"},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "R&D"}
        ]))).await;
        assert_eq!(upd["emails"][0]["value"], "alice@new.example", "{b}: {upd}");
        assert_eq!(upd["name"]["givenName"], "Alice");

        // Group membership: Okta removes with a filter path, Entra adds with a value list.
        let (s, _) = call(
            Method::PATCH,
            &format!("/Groups/{group_id}"),
            patch(json!([{"op": "remove", "path": format!("members[value eq \"{alice_id}\"]")}])),
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
        eventually_tools(&url, &alice_token, &[], b).await;
        let (s, _) = call(
            Method::PATCH,
            &format!("/Groups/{group_id}"),
            patch(json!([{"op": "Add", "path": "members", "value": [{"value": alice_id}]}])),
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
        eventually_tools(&url, &alice_token, &["query", "schema"], b).await;
        let (_, groups) = call(
            Method::GET,
            "/Groups?filter=displayName%20eq%20%22Engineering%22&excludedAttributes=members",
            None,
        )
        .await;
        assert_eq!(groups["totalResults"], 1, "{groups}");
        assert!(
            groups["Resources"][0].get("members").is_none(),
            "{b}: members excluded"
        );

        // Paging: startIndex is 1-based, in creation order.
        for i in 1..=5 {
            let (s, _) = call(
                Method::POST,
                "/Users",
                Some(json!({"userName": format!("user{i}@example.com")})),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED);
        }
        let (_, page) = call(Method::GET, "/Users?startIndex=2&count=2", None).await;
        assert_eq!(
            (
                page["totalResults"].as_i64(),
                page["itemsPerPage"].as_i64(),
                page["startIndex"].as_i64()
            ),
            (Some(6), Some(2), Some(2)),
            "{b}: {page}"
        );
        assert_eq!(page["Resources"][0]["userName"], "user1@example.com");
        assert_eq!(page["Resources"][1]["userName"], "user2@example.com");

        // Bad input: a SCIM error each, and nothing changes.
        let alice_path = format!("/Users/{alice_id}");
        let bad: Vec<(Method, &str, Option<Value>, StatusCode, &str)> = vec![
            (
                Method::POST,
                "/Users",
                Some(json!({"displayName": "no userName"})),
                StatusCode::BAD_REQUEST,
                "invalidValue",
            ),
            (
                Method::POST,
                "/Users",
                Some(json!({"userName": "bad name with spaces"})),
                StatusCode::BAD_REQUEST,
                "invalidValue",
            ),
            (
                Method::POST,
                "/Users",
                Some(json!("not an object")),
                StatusCode::BAD_REQUEST,
                "invalidSyntax",
            ),
            (
                Method::GET,
                "/Users?filter=userName%20sw%20%22a%22",
                None,
                StatusCode::BAD_REQUEST,
                "invalidFilter",
            ),
            (
                Method::PATCH,
                &alice_path,
                patch(json!([{"op": "move", "path": "active"}])),
                StatusCode::BAD_REQUEST,
                "invalidSyntax",
            ),
            (
                Method::PATCH,
                &alice_path,
                Some(json!({"Operations": []})),
                StatusCode::BAD_REQUEST,
                "invalidSyntax",
            ),
            (
                Method::PATCH,
                &alice_path,
                patch(json!([{"op": "remove", "path": "active"}])),
                StatusCode::BAD_REQUEST,
                "mutability",
            ),
            (
                Method::POST,
                "/Groups",
                Some(json!({"displayName": "Ghosts", "members": [{"value": "999999"}]})),
                StatusCode::BAD_REQUEST,
                "invalidValue",
            ),
            (
                Method::GET,
                "/Users/999999",
                None,
                StatusCode::NOT_FOUND,
                "",
            ),
            (
                Method::GET,
                "/Users/not-a-number",
                None,
                StatusCode::NOT_FOUND,
                "",
            ),
        ];
        for (m, p, body, want, scim_type) in bad {
            let (s, e) = call(m.clone(), p, body).await;
            assert_eq!(s, want, "{b}: {m} {p}: {e}");
            assert_eq!(e["schemas"], json!([ERROR]), "{b}: {m} {p}: {e}");
            if !scim_type.is_empty() {
                assert_eq!(e["scimType"], scim_type, "{b}: {m} {p}: {e}");
            }
        }
        let (_, all) = call(Method::GET, "/Users", None).await;
        assert_eq!(all["totalResults"], 6, "{b}: bad input changed nothing");
        let (_, all_groups) = call(Method::GET, "/Groups", None).await;
        assert_eq!(all_groups["totalResults"], 1, "{b}");
        assert_eq!(
            status(&url, &alice_token).await,
            StatusCode::OK,
            "{b}: alice untouched"
        );

        // A rename through PUT keeps the member (and her token); delete ends her.
        let (s, renamed) = call(
            Method::PUT,
            &format!("/Users/{alice_id}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "alice.liddell@example.com", "active": true, "externalId": "00u1abcd"
            })),
        )
        .await;
        assert_eq!(
            (s, &renamed["userName"]),
            (StatusCode::OK, &json!("alice.liddell@example.com")),
            "{b}: {renamed}"
        );
        eventually_tools(&url, &alice_token, &["query", "schema"], b).await;
        let (s, _) = call(Method::DELETE, &format!("/Groups/{group_id}"), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        eventually_tools(&url, &alice_token, &[], b).await;
        let (s, _) = call(Method::DELETE, &format!("/Users/{alice_id}"), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert_eq!(
            status(&url, &alice_token).await,
            StatusCode::UNAUTHORIZED,
            "{b}"
        );
        let (s, e) = call(Method::GET, &format!("/Users/{alice_id}"), None).await;
        assert_eq!(
            (s, &e["status"]),
            (StatusCode::NOT_FOUND, &json!("404")),
            "{b}: {e}"
        );
    }
}

/// Issue 22: a user deactivated through SCIM on one process has their opaque token and their
/// identity-provider JWT refused by another process sharing the database within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deactivated_through_scim_on_one_process_is_refused_by_another_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::ec("ec-1");
    let issuer = TestIssuer::start(dir.path(), &[&key]).await;
    for db in TestDb::all().await {
        let b = db.backend;
        let upstream = Upstream::start(true).await;
        let (a, other) = (ServeProcess::start(&db.url), ServeProcess::start(&db.url));
        a.admin_call(Method::POST, "/v1/workspaces", json!({"name": "acme"}))
            .await;
        a.admin_call(
            Method::POST,
            "/v1/workspaces/acme/servers",
            json!({"name": "db", "url": upstream.url}),
        )
        .await;
        let audience = "https://gw.example/mcp";
        a.admin_call(Method::PUT, "/v1/workspaces/acme/idp",
            json!({"issuer": issuer.url, "audience": audience, "member_claim": "email", "ca_file": issuer.ca_file}))
            .await;
        let scim_token = a
            .admin_call(Method::POST, "/v1/workspaces/acme/scim/token", json!({}))
            .await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let (s, user) = scim(
            &a.admin_url,
            &scim_token,
            Method::POST,
            "/scim/v2/acme/Users",
            Some(json!({"userName": "alice@example.com", "active": true})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}: {user}");
        let id = user["id"].as_str().unwrap().to_owned();
        let opaque = a
            .admin_call(
                Method::POST,
                "/v1/workspaces/acme/tokens",
                json!({"member": "alice@example.com"}),
            )
            .await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let jwt = key.sign(&issuer.claims(
            audience,
            json!({"sub": "u-1", "email": "alice@example.com"}),
        ));
        let url = format!("{}/mcp/db", other.mcp_url);
        let deadline = Instant::now() + Duration::from_secs(5);
        while status(&url, &jwt).await != StatusCode::OK
            || status(&url, &opaque).await != StatusCode::OK
        {
            assert!(
                Instant::now() < deadline,
                "{b}: the other process never took both credentials"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let started = Instant::now();
        let (s, _) = scim(
            &a.admin_url,
            &scim_token,
            Method::PATCH,
            &format!("/scim/v2/acme/Users/{id}"),
            patch(json!([{"op": "Replace", "path": "active", "value": "False"}])),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        while status(&url, &jwt).await != StatusCode::UNAUTHORIZED
            || status(&url, &opaque).await != StatusCode::UNAUTHORIZED
        {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{b}: the other process still takes a deactivated user's credentials"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!(
            "{b}: deactivated through SCIM on process A, both credentials refused by process B after {:?}",
            started.elapsed()
        );
        // Reactivated: both work again there.
        scim(
            &a.admin_url,
            &scim_token,
            Method::PATCH,
            &format!("/scim/v2/acme/Users/{id}"),
            patch(json!([{"op": "replace", "value": {"active": true}}])),
        )
        .await;
        let started = Instant::now();
        while status(&url, &jwt).await != StatusCode::OK
            || status(&url, &opaque).await != StatusCode::OK
        {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{b}: reactivation did not reach the other process"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A real SCIM client: `tests/python/scim_client.py` drives scim2-client (PyPI), which builds its
/// models from the gateway's `/Schemas` and rejects any response that does not validate against
/// them, through discovery, users, filters, paging, groups, deactivation, reactivation,
/// membership and deletion. Between its steps this test checks what each did to the member's
/// credential and tools through a real rmcp client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_scim_client_provisions_and_deprovisions_a_member() {
    use std::io::{BufRead as _, Write as _};
    let Some(python) = mcpgw_tests::python() else {
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/scim_client.py");
    for db in TestDb::all().await {
        let b = db.backend;
        let (gw, _policies, _upstream, token) = provisioned(&db, &["db:query"]).await;
        let mut child = std::process::Command::new(&python)
            .args([script, &format!("{}/scim/v2/acme", gw.admin_url), &token])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("run the SCIM client");
        let mut stdin = child.stdin.take().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let url = format!("{}/mcp/db", gw.mcp_url);
        let mut member_token = String::new();
        let mut steps = Vec::new();
        while let Ok(Some(step)) = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            let name = step["step"].as_str().unwrap_or_default().to_owned();
            match name.as_str() {
                "created" => {
                    assert_eq!(step["userName"], "bjensen@example.com");
                    member_token = gw
                        .admin_call(
                            Method::POST,
                            "/v1/workspaces/acme/tokens",
                            json!({"member": "bjensen@example.com"}),
                        )
                        .await["token"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    assert!(tool_names(&url, &member_token).await.is_empty(), "{b}");
                }
                "grouped" => {
                    gw.admin_call(
                        Method::PUT,
                        "/v1/workspaces/acme/scim/groups/Engineering/role",
                        json!({"role": "db-users"}),
                    )
                    .await;
                    eventually_tools(&url, &member_token, &["query"], b).await;
                }
                "deactivated" => assert_eq!(
                    status(&url, &member_token).await,
                    StatusCode::UNAUTHORIZED,
                    "{b}"
                ),
                "reactivated" => eventually_tools(&url, &member_token, &["query"], b).await,
                "ungrouped" => eventually_tools(&url, &member_token, &[], b).await,
                "deleted" => assert_eq!(
                    status(&url, &member_token).await,
                    StatusCode::UNAUTHORIZED,
                    "{b}"
                ),
                other => panic!("{b}: unknown step {other:?}"),
            }
            steps.push(name);
            stdin.write_all(b"\n").unwrap();
        }
        drop(stdin);
        let exit = child.wait().unwrap();
        assert!(
            exit.success(),
            "{b}: the SCIM client failed ({exit}) after steps {steps:?}"
        );
        assert_eq!(
            steps,
            [
                "created",
                "grouped",
                "deactivated",
                "reactivated",
                "ungrouped",
                "deleted"
            ],
            "{b}"
        );
    }
}
