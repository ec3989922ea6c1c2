//! The admin console in a real browser: Debian's headless Chromium driven through ChromeDriver
//! (fantoccini), against a gateway on a real listener, a real rmcp upstream, and real MCP
//! clients holding the token the console issued. Screenshots of every page go to
//! `MCPGW_CONSOLE_SCREENSHOTS` when it is set (docs/console/ holds the committed ones).

use fantoccini::{Client, Locator};
use mcpgw_tests::browser::{self, Browser};
use mcpgw_tests::db::TestDb;
use mcpgw_tests::upstream::Upstream;
use mcpgw_tests::{TestGateway, initialize_status, mcp_client};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Saves a screenshot of the page as `name.png` when asked to.
async fn shot(c: &Client, name: &str) {
    let Some(dir) = std::env::var_os("MCPGW_CONSOLE_SCREENSHOTS") else {
        return;
    };
    let png = c.screenshot().await.expect("screenshot");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png)
        .expect("write screenshot");
}

/// The element, waiting for it (a click's navigation may still be loading the page).
async fn find(
    c: &Client,
    css: &str,
) -> Result<fantoccini::elements::Element, fantoccini::error::CmdError> {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
}

async fn text(c: &Client, css: &str) -> String {
    match find(c, css).await {
        Ok(e) => e.text().await.expect("text"),
        Err(e) => panic!(
            "{css}: {e}\non {}:\n{}",
            c.current_url().await.expect("url"),
            c.source().await.unwrap_or_default()
        ),
    }
}

async fn fill(c: &Client, css: &str, value: &str) {
    let field = find(c, css).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    field.clear().await.expect("clear");
    field.send_keys(value).await.expect("type");
}

/// Clicks what leads to another page, and waits until the browser has left this one (so the
/// next lookup cannot find an element of the old page).
async fn click(c: &Client, css: &str) {
    let old = c.find(Locator::Css("html")).await.expect("a page");
    tick(c, css).await;
    for _ in 0..400 {
        if old.tag_name().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("clicking {css} did not lead to another page");
}

/// Clicks what stays on this page (a checkbox).
async fn tick(c: &Client, css: &str) {
    find(c, css)
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn path(c: &Client) -> String {
    c.current_url().await.expect("url").path().to_owned()
}

async fn flash(c: &Client) -> String {
    text(c, "#flash").await
}

/// The `server:tool` entries the editor's preview lists as visible. The live preview replaces
/// the list while it is read (an element gone stale): then it is read again.
async fn previewed(c: &Client) -> BTreeSet<String> {
    'read: for _ in 0..50 {
        let mut out = BTreeSet::new();
        for li in c
            .find_all(Locator::Css("#preview-visible li"))
            .await
            .expect("preview")
        {
            match li.attr("data-tool").await {
                Ok(tool) => {
                    out.insert(tool.expect("data-tool"));
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue 'read;
                }
            }
        }
        return out;
    }
    panic!("the preview never held still");
}

/// The tools `token` sees on `/mcp` through the official Rust SDK, as `server:tool`.
async fn listed(mcp_url: &str, token: &str) -> BTreeSet<String> {
    let client = mcp_client(&format!("{mcp_url}/mcp"), token)
        .await
        .expect("connect");
    let names = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect::<Vec<_>>();
    client.cancel().await.expect("close");
    // Exposed as `tools_NAME` (the server's default prefix).
    names
        .into_iter()
        .map(|n| format!("tools:{}", n.strip_prefix("tools_").expect("prefixed")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_runs_a_workspace_from_the_console_in_a_real_browser() {
    if !browser::available("the console browser test") {
        return;
    }
    let db = TestDb::sqlite();
    let upstream = Upstream::start(false).await;
    let gw = TestGateway::start(&db.url).await;
    let b = Browser::start().await;
    let c = &b.client;
    let admin = &gw.admin_url;

    // `/` leads to the console, which asks to sign in.
    c.goto(&format!("{admin}/")).await.expect("goto");
    assert_eq!(path(c).await, "/console/login");
    shot(c, "login").await;

    // A wrong admin token cannot sign in.
    fill(c, "#token", "not-the-admin-token-at-all").await;
    click(c, "form button[type=submit]").await;
    assert!(
        text(c, "#login-error")
            .await
            .contains("not the admin token")
    );
    c.goto(&format!("{admin}/console/workspaces"))
        .await
        .expect("goto");
    assert_eq!(path(c).await, "/console/login", "still signed out");

    // The right one does.
    fill(c, "#token", &gw.admin_token).await;
    click(c, "form button[type=submit]").await;
    assert_eq!(path(c).await, "/console/workspaces");

    // A workspace, its server, enforcement on.
    fill(c, "#ws-name", "acme").await;
    click(c, "form.card button[type=submit]").await;
    assert_eq!(path(c).await, "/console/w/acme/members");
    assert!(flash(c).await.contains("acme created"));
    click(c, "nav a[href='/console/w/acme/servers']").await;
    click(c, "#add-server").await;
    fill(c, "#s-name", "tools").await;
    fill(c, "#s-url", &upstream.url).await;
    click(c, "#save-server").await;
    assert_eq!(path(c).await, "/console/w/acme/servers");
    assert!(flash(c).await.contains("tools added"), "{}", flash(c).await);
    let row = text(c, "#servers tbody tr").await;
    assert!(row.contains("ok") && row.contains(&upstream.url), "{row}");
    shot(c, "servers").await;
    click(c, "nav a[href='/console/w/acme/enforcement']").await;
    click(c, "#toggle-enforce").await;
    assert_eq!(text(c, "#enforce-state").await, "on");

    // A member and their token, shown once.
    click(c, "nav a[href='/console/w/acme/members']").await;
    fill(c, "#member-name", "alice").await;
    click(c, "form.card button[type=submit]").await;
    assert_eq!(path(c).await, "/console/w/acme/members/alice");
    click(c, "form[action$='/tokens'] button").await;
    let token = c
        .find(Locator::Css("#token-value"))
        .await
        .expect("token field")
        .prop("value")
        .await
        .expect("value")
        .expect("a token");
    assert!(token.starts_with("mcpgw_"), "{token}");
    let configs = text(c, "main").await;
    assert!(configs.contains("Claude Desktop") && configs.contains(".vscode/mcp.json"));
    assert!(configs.contains(&format!("Bearer {token}")));
    shot(c, "token").await;
    c.goto(&format!("{admin}/console/w/acme/members/alice"))
        .await
        .expect("goto");
    let page = c.source().await.expect("source");
    assert!(
        !page.contains(&token),
        "the token is shown once, never again"
    );
    assert_eq!(
        c.find_all(Locator::Css("#tokens tbody tr"))
            .await
            .expect("rows")
            .len(),
        1
    );
    shot(c, "member").await;

    // No grant yet: with enforcement on, alice sees nothing.
    assert!(listed(&gw.mcp_url, &token).await.is_empty());

    // The editor: the upstream's tools with their descriptions; tick one, type a glob, and the
    // live preview (the chain's own listing decision) follows.
    click(c, "#edit-allowlist").await;
    assert_eq!(path(c).await, "/console/w/acme/members/alice/allowlist");
    let editor = text(c, "#allowlist fieldset").await;
    assert!(
        editor.contains("echo") && editor.contains("Echo the text"),
        "{editor}"
    );
    assert!(previewed(c).await.is_empty());
    tick(c, "input[value='tools:echo']").await;
    fill(c, "#globs", "tools:s*").await;
    let expected: BTreeSet<String> = ["tools:echo", "tools:schema", "tools:slow", "tools:steps"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut shown = BTreeSet::new();
    for _ in 0..100 {
        shown = previewed(c).await;
        if shown == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shown, expected, "the live preview follows the draft");
    shot(c, "allowlist").await;
    click(c, "#save").await;
    assert!(flash(c).await.contains("2 added"), "{}", flash(c).await);
    assert_eq!(previewed(c).await, expected, "saved, the preview stays");

    // A real MCP client with the token lists exactly the previewed tools.
    assert_eq!(listed(&gw.mcp_url, &token).await, expected);

    // Enforcement off: a call outside the allowlist goes through, as a would-deny.
    c.goto(&format!("{admin}/console/w/acme/enforcement"))
        .await
        .expect("goto");
    assert!(c.find(Locator::Css("#no-would-deny")).await.is_ok());
    click(c, "#toggle-enforce").await;
    assert_eq!(text(c, "#enforce-state").await, "off");
    let client = mcp_client(&format!("{}/mcp", gw.mcp_url), &token)
        .await
        .expect("connect");
    let args = serde_json::json!({"sql": "select 1"});
    client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("tools_query")
                .with_arguments(args.as_object().expect("object").clone()),
        )
        .await
        .expect("a would-deny call goes through");
    client.cancel().await.expect("close");
    let mut found = false;
    for _ in 0..100 {
        c.refresh().await.expect("refresh");
        if c.find(Locator::Css("#would-deny tbody tr")).await.is_ok() {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "a would-deny row appears");
    let row = text(c, "#would-deny tbody tr").await;
    assert!(
        row.contains("alice") && row.contains("tools:query"),
        "{row}"
    );
    shot(c, "enforcement").await;

    // The audit trail shows it, filtered, and exports it.
    c.goto(&format!("{admin}/console/w/acme/audit?decision=would-deny"))
        .await
        .expect("goto");
    let rows = c
        .find_all(Locator::Css("#audit tbody tr"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    assert!(rows[0].text().await.expect("text").contains("tools:query"));
    click(c, "form[action$='/audit/verify'] button").await;
    let mut state = String::new();
    for _ in 0..100 {
        c.refresh().await.expect("refresh");
        state = text(c, "#verify-state").await;
        if state != "verifying…" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "intact", "the chain verifies");
    shot(c, "audit").await;
    c.goto(&format!("{admin}/console/w/acme/audit?decision=would-deny"))
        .await
        .expect("goto");
    let export = c
        .find(Locator::Css("#export-csv"))
        .await
        .expect("export link")
        .attr("href")
        .await
        .expect("href")
        .expect("a link");
    assert!(export.contains("decision=would-deny") && export.contains("format=csv"));
    // Downloaded in this browser session (its HttpOnly cookie, read through WebDriver).
    let sid = c
        .get_named_cookie("mcpgw_console")
        .await
        .expect("session cookie");
    let csv = reqwest::Client::new()
        .get(format!("{admin}{export}"))
        .header("cookie", format!("mcpgw_console={}", sid.value()))
        .send()
        .await
        .expect("export");
    assert_eq!(csv.status(), 200);
    let csv = csv.text().await.expect("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("id,workspace,seq"));
    assert!(
        lines[1].contains(",alice,") && lines[1].contains(",tools,query,would-deny,"),
        "{csv}"
    );

    c.goto(&format!("{admin}/console/policies"))
        .await
        .expect("goto");
    assert!(text(c, "#modules").await.contains("allowlist"));
    shot(c, "policies").await;
    c.goto(&format!("{admin}/console/workspaces"))
        .await
        .expect("goto");
    assert!(text(c, "main table").await.contains("acme"));
    shot(c, "workspaces").await;
    c.goto(&format!("{admin}/console/w/acme/members"))
        .await
        .expect("goto");
    shot(c, "members").await;

    // A form posted without the CSRF token is refused, and changes nothing.
    c.execute(
        "document.querySelector(\"form[action='/console/w/acme/members'] input[name=csrf]\").remove()",
        vec![],
    )
    .await
    .expect("script");
    fill(c, "#member-name", "mallory").await;
    click(c, "form.card button[type=submit]").await;
    assert!(text(c, "#error").await.contains("CSRF"));
    c.goto(&format!("{admin}/console/w/acme/members"))
        .await
        .expect("goto");
    assert!(!text(c, "#members").await.contains("mallory"));

    // Revoking the token refuses the client.
    assert_eq!(
        initialize_status(&format!("{}/mcp", gw.mcp_url), &token)
            .await
            .0,
        200
    );
    c.goto(&format!("{admin}/console/w/acme/members/alice"))
        .await
        .expect("goto");
    click(c, "#tokens button.danger").await;
    assert!(flash(c).await.contains("revoked"));
    assert_eq!(
        initialize_status(&format!("{}/mcp", gw.mcp_url), &token)
            .await
            .0,
        401
    );

    // Signing out ends the session.
    click(c, ".signout button").await;
    assert_eq!(path(c).await, "/console/login");
    c.goto(&format!("{admin}/console/w/acme/members"))
        .await
        .expect("goto");
    assert_eq!(path(c).await, "/console/login");

    b.client.clone().close().await.expect("close browser");
    gw.stop().await;
}

/// Posts the sign-in form: its CSRF field, its cookie when `with_cookie`, and `token`.
async fn sign_in(
    http: &reqwest::Client,
    admin: &str,
    csrf: &str,
    with_cookie: bool,
    token: &str,
) -> reqwest::Response {
    let mut req = http
        .post(format!("{admin}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&token={token}"));
    if with_cookie {
        req = req.header("cookie", format!("mcpgw_console_login={csrf}"));
    }
    req.send().await.expect("sign in")
}

/// What a browser is told to enforce, checked on the wire: the cookie's attributes, the CSP, a
/// sign-in form without its own CSRF cookie, and the preview without JavaScript.
#[tokio::test]
async fn console_responses_carry_their_protections() {
    let db = TestDb::sqlite();
    let gw = TestGateway::start(&db.url).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let admin = &gw.admin_url;
    let login = http
        .get(format!("{admin}/console/login"))
        .send()
        .await
        .expect("login page");
    let csp = login.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(login.headers()["x-frame-options"], "DENY");
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let login_csrf = cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_owned())
        .expect("login csrf");
    let body = login.text().await.expect("body");
    assert!(!body.contains("<script>"), "no inline script");

    // Without the form's cookie (a cross-site post), even the right token is refused.
    let r = sign_in(&http, admin, &login_csrf, false, &gw.admin_token).await;
    assert_eq!(r.status(), 403);
    // With it, signed in: a session cookie with the same protections.
    let r = sign_in(&http, admin, &login_csrf, true, &gw.admin_token).await;
    assert_eq!(r.status(), 303);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("mcpgw_console="))
        .expect("session cookie")
        .to_owned();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    assert!(session.contains("Max-Age=28800") && !session.contains("Secure"));
    let sid = session.split(';').next().expect("pair").to_owned();

    // Signed in, a page answers with its server time.
    let r = http
        .get(format!("{admin}/console/workspaces"))
        .header("cookie", &sid)
        .send()
        .await
        .expect("page");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["server-timing"]
            .to_str()
            .expect("timing")
            .starts_with("app;dur=")
    );
    assert_eq!(r.headers()["cache-control"], "no-store");

    // A signed-in request another site (another port of this host, say) made is refused.
    let r = http
        .get(format!("{admin}/console/workspaces"))
        .header("cookie", &sid)
        .header("sec-fetch-site", "same-site")
        .send()
        .await
        .expect("page");
    assert_eq!(r.status(), 403);
    let r = http
        .get(format!("{admin}/console/workspaces"))
        .header("cookie", &sid)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .expect("page");
    assert_eq!(r.status(), 200);
    // A segment that decodes to a separator is no name.
    let r = http
        .get(format!("{admin}/console/w/a%2Fb/members"))
        .header("cookie", &sid)
        .send()
        .await
        .expect("page");
    assert_eq!(r.status(), 404);

    // After ten wrong tokens in a minute, wrong ones get 429; the right one still signs in.
    for _ in 0..10 {
        let r = sign_in(&http, admin, &login_csrf, true, "wrong-wrong-wrong-wrong").await;
        assert_eq!(r.status(), 401);
    }
    let r = sign_in(&http, admin, &login_csrf, true, "wrong-again-wrong-again").await;
    assert_eq!(r.status(), 429);
    let r = sign_in(&http, admin, &login_csrf, true, &gw.admin_token).await;
    assert_eq!(r.status(), 303, "a flood of wrong tokens locks nobody out");
    gw.stop().await;
}

/// Server time of every console page at real sizes, a benchmark rather than a test:
///
/// ```sh
/// cargo test --release -p mcpgw-tests --test e2e console_pages -- --ignored --nocapture
/// ```
///
/// (`MCPGW_SCALE_BACKEND=sqlite` or `postgres` for one database.) A workspace of 1,000 members
/// (each with a grant and a token), 50 servers (each a real rmcp server's listing: one upstream
/// behind 50 names, 7 tools each) and 1,000,000 audit records over 30 days, 2 % of them
/// would-deny. Each page is asked 20 times; the figure is the gateway's own `Server-Timing`.
/// Figures go to docs/benchmarks.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: see the function's documentation for the command"]
async fn console_pages_at_1000_members_50_servers_1m_audit_records() {
    use mcpgw::audit::{self, Record, store::Appender};
    use mcpgw::store::Store;
    const DAY: i64 = 86_400_000;
    const RECORDS: usize = 1_000_000;
    let only = std::env::var("MCPGW_SCALE_BACKEND").ok();
    let upstream = Upstream::start(false).await;
    let mut slowest = Vec::new();
    for db in TestDb::all().await {
        let b = db.backend;
        if only.as_deref().is_some_and(|o| o != b) {
            continue;
        }
        let store = Store::connect(&db.url).await.expect("store");
        let started = Instant::now();
        store.workspace_create("big").await.expect("workspace");
        for s in 0..50 {
            store
                .server_add("big", &format!("s{s:02}"), &upstream.url, Vec::new(), None)
                .await
                .expect("server");
        }
        for m in 0..1000 {
            let name = format!("m{m:04}");
            store.member_add("big", &name).await.expect("member");
            store
                .grant_add("big", &name, &[format!("s{:02}:*", m % 50)])
                .await
                .expect("grant");
            store
                .token_issue("big", Some(&name), None)
                .await
                .expect("token");
        }
        let appender = Appender::new(store.db());
        let base = mcpgw::store::now_ms() - 30 * DAY;
        let step = (30 * DAY) as f64 / RECORDS as f64;
        let mut batch = Vec::with_capacity(1000);
        for i in 0..RECORDS {
            let would = i % 50 == 7;
            batch.push(Record {
                workspace: "big".into(),
                ts_ms: base + (i as f64 * step) as i64,
                kind: audit::KIND_CALL.into(),
                member: Some(format!("m{:04}", (i / 3) % 1000)),
                token_id: Some(format!("tok_{:04}", (i / 3) % 1000)),
                server: format!("s{:02}", i % 50),
                tool: ["echo", "query", "schema", "slow", "steps", "fail", "roots"][i % 7].into(),
                decision: if would { "would-deny" } else { "allow" }.into(),
                status: "success".into(),
                latency_us: 800,
                upstream_latency_us: Some(500),
                request_id: format!("req-{i}"),
                ..Record::default()
            });
            if batch.len() == 1000 {
                appender.append(&mut batch).await.expect("append");
                batch.clear();
            }
        }
        // What the gateway's housekeeping (SQLite) and autovacuum (PostgreSQL) do after a bulk
        // load: the planners need the tables' statistics.
        if let mcpgw::store::Db::Postgres(pool) = store.db() {
            sqlx::query("ANALYZE").execute(pool).await.expect("analyze");
        }
        assert_eq!(store.optimize().await.expect("optimize"), b == "sqlite");
        eprintln!("{b}: seeded in {:?}", started.elapsed());

        let gw = TestGateway::start(&db.url).await;
        let session = Session::start(&gw).await;
        let (http, admin, sid) = (&session.http, &gw.admin_url, &session.cookie);
        let server_ms = |r: &reqwest::Response| -> f64 {
            r.headers()["server-timing"]
                .to_str()
                .expect("timing")
                .trim_start_matches("app;dur=")
                .parse()
                .expect("ms")
        };
        let mid_id = 500_000;
        let pages = [
            "/console/workspaces".to_owned(),
            "/console/w/big/members".to_owned(),
            "/console/w/big/members?q=m05".to_owned(),
            "/console/w/big/members/m0500".to_owned(),
            "/console/w/big/members/m0500/allowlist".to_owned(),
            "/console/w/big/members/m0500/allowlist/preview?pattern=s01:echo&globs=s1*:*"
                .to_owned(),
            "/console/w/big/enforcement".to_owned(),
            "/console/w/big/audit".to_owned(),
            "/console/w/big/audit?member=m0500".to_owned(),
            "/console/w/big/audit?server=s07&tool=query".to_owned(),
            "/console/w/big/audit?decision=would-deny&since=24h".to_owned(),
            format!("/console/w/big/audit?before={mid_id}"),
            "/console/w/big/servers".to_owned(),
            "/console/w/big/servers/s07".to_owned(),
            "/console/policies".to_owned(),
        ];
        let mut worst = 0.0f64;
        eprintln!("{b}: page | first | p50 | max (ms of server time, 20 asks)");
        for page in &pages {
            let mut times = Vec::new();
            for _ in 0..21 {
                let r = http
                    .get(format!("{admin}{page}"))
                    .header("cookie", sid)
                    .send()
                    .await
                    .expect("page");
                assert_eq!(r.status(), 200, "{page}");
                times.push(server_ms(&r));
                let body = r.text().await.expect("body");
                assert!(body.len() > 200, "{page}");
            }
            let first = times.remove(0);
            times.sort_by(f64::total_cmp);
            let p50 = times[times.len() / 2];
            let max = times[times.len() - 1];
            worst = worst.max(p50);
            eprintln!("{b}: {page} | {first:.1} | {p50:.1} | {max:.1}");
        }
        eprintln!("{b}: slowest page p50 {worst:.1} ms");
        slowest.push((b, worst));
        gw.stop().await;
    }
    if !cfg!(debug_assertions) {
        for (b, worst) in slowest {
            assert!(
                worst < 50.0,
                "{b}: a page takes {worst:.1} ms of server time"
            );
        }
    }
}

/// A signed-in console session over plain HTTP (no JavaScript): its cookie and CSRF token.
struct Session {
    http: reqwest::Client,
    admin: String,
    cookie: String,
    csrf: String,
}

impl Session {
    async fn start(gw: &TestGateway) -> Session {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let admin = gw.admin_url.clone();
        let login = http
            .get(format!("{admin}/console/login"))
            .send()
            .await
            .expect("login");
        let login_csrf = login.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .split(';')
            .next()
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.to_owned())
            .expect("csrf");
        let r = sign_in(&http, &admin, &login_csrf, true, &gw.admin_token).await;
        let cookie = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("mcpgw_console="))
            .and_then(|v| v.split(';').next())
            .expect("session")
            .to_owned();
        let mut s = Session {
            http,
            admin,
            cookie,
            csrf: String::new(),
        };
        let page = s.get("/console/workspaces").await;
        let at = page.find("name=\"csrf\" value=\"").expect("a form") + 19;
        s.csrf = page[at..at + 64].to_owned();
        s
    }

    async fn get(&self, path: &str) -> String {
        let r = self
            .http
            .get(format!("{}{path}", self.admin))
            .header("cookie", &self.cookie)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200, "{path}");
        r.text().await.expect("body")
    }

    /// Posts a form (the CSRF token added); the status and the body or redirect target.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut body = format!("csrf={}", self.csrf);
        for (k, v) in fields {
            body.push_str(&format!("&{k}={}", urlencode(v)));
        }
        let r = self
            .http
            .post(format!("{}{path}", self.admin))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = r.text().await.expect("body");
        (status, location.unwrap_or(text))
    }
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The forms alone, as a browser without JavaScript posts them: roles and their editor (the
/// *Preview* button renders the draft), role assignment, editing a server, and a server whose
/// settings the form cannot carry left alone.
#[tokio::test]
async fn the_console_works_without_javascript() {
    let db = TestDb::sqlite();
    let upstream = Upstream::start(true).await;
    let gw = TestGateway::start(&db.url).await;
    let s = Session::start(&gw).await;
    assert_eq!(
        s.post("/console/workspaces", &[("name", "acme")]).await,
        (303, "/console/w/acme/members".to_owned())
    );
    let (status, to) = s
        .post(
            "/console/w/acme/servers",
            &[
                ("name", "db"),
                ("kind", "http"),
                ("url", &upstream.url),
                ("headers", "X-Owner: HOME"),
            ],
        )
        .await;
    assert_eq!((status, to.as_str()), (303, "/console/w/acme/servers"));
    assert!(
        s.get("/console/w/acme/servers")
            .await
            .contains("X-Owner (env:HOME)")
    );
    // A literal header value is not a form field: the server form takes names of variables.
    let (status, page) = s
        .post(
            "/console/w/acme/servers",
            &[
                ("name", "db2"),
                ("kind", "http"),
                ("url", &upstream.url),
                ("headers", "Authorization: Bearer s3cret"),
            ],
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        !page.contains("s3cret"),
        "a refused value is not echoed back"
    );
    // Nor one shaped like a variable's name that the gateway does not have.
    let (status, page) = s
        .post(
            "/console/w/acme/servers",
            &[
                ("name", "db2"),
                ("kind", "http"),
                ("url", &upstream.url),
                ("headers", "X-Api-Key: sk_live_abc123"),
            ],
        )
        .await;
    assert_eq!(status, 400);
    assert!(page.contains("no environment variable of that name"));
    assert!(!page.contains("sk_live_abc123"), "not echoed");

    // Editing: a new prefix, checked by the admin API.
    let (status, _) = s
        .post(
            "/console/w/acme/servers/db",
            &[
                ("name", "db"),
                ("kind", "http"),
                ("url", &upstream.url),
                ("headers", "X-Owner: HOME"),
                ("prefix", "d_"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    let servers = gw
        .admin_call(
            reqwest::Method::GET,
            "/v1/workspaces/acme/servers",
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(servers[0]["prefix"], "d_");
    // A server with TLS files (set through the API) cannot be saved from the form.
    gw.admin_post(
        "/v1/workspaces/acme/servers",
        serde_json::json!({"name": "tls", "url": "https://127.0.0.1:1/mcp", "tls": {"ca_file": "/etc/ssl/certs/ca-certificates.crt"}}),
    )
    .await;
    assert!(
        s.get("/console/w/acme/servers/tls")
            .await
            .contains("TLS files")
    );
    let (status, _) = s
        .post(
            "/console/w/acme/servers/tls",
            &[
                ("name", "tls"),
                ("kind", "http"),
                ("url", "https://127.0.0.1:2/mcp"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    let servers = gw
        .admin_call(
            reqwest::Method::GET,
            "/v1/workspaces/acme/servers",
            serde_json::Value::Null,
        )
        .await;
    let tls = servers
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["name"] == "tls")
        .expect("tls");
    assert_eq!(tls["url"], "https://127.0.0.1:1/mcp", "left as it was");
    assert_eq!(
        tls["transport"]["tls"]["ca_file"],
        "/etc/ssl/certs/ca-certificates.crt"
    );
    s.post("/console/w/acme/servers/tls/remove", &[]).await;

    // A role, its allowlist previewed without JavaScript, then saved.
    assert_eq!(
        s.post("/console/w/acme/roles", &[("name", "readers")])
            .await,
        (303, "/console/w/acme/roles/readers/allowlist".to_owned())
    );
    let (status, page) = s
        .post(
            "/console/w/acme/roles/readers/allowlist",
            &[
                ("pattern", "db:query"),
                ("globs", "db:sch*"),
                ("action", "preview"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        page.contains("data-tool=\"db:query\"") && page.contains("data-tool=\"db:schema\""),
        "{page}"
    );
    assert!(!page.contains("data-tool=\"db:echo\""));
    assert!(page.contains("Preview: 2 of 7 tools visible"), "{page}");
    let roles = gw
        .admin_call(
            reqwest::Method::GET,
            "/v1/workspaces/acme/roles",
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(
        roles[0]["patterns"],
        serde_json::json!([]),
        "a preview saves nothing"
    );
    s.post(
        "/console/w/acme/roles/readers/allowlist",
        &[
            ("pattern", "db:query"),
            ("globs", "db:sch*"),
            ("action", "save"),
        ],
    )
    .await;
    let roles = gw
        .admin_call(
            reqwest::Method::GET,
            "/v1/workspaces/acme/roles",
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(
        roles[0]["patterns"],
        serde_json::json!(["db:query", "db:sch*"])
    );

    // A member with the role sees its tools; the editor's preview joins them.
    s.post("/console/w/acme/members", &[("name", "bob")]).await;
    s.post("/console/w/acme/members/bob/roles", &[("role", "readers")])
        .await;
    s.post("/console/w/acme/enforcement", &[("enforce", "true")])
        .await;
    let page = s.get("/console/w/acme/members/bob/allowlist").await;
    assert!(page.contains("data-tool=\"db:query\"") && page.contains("data-tool=\"db:schema\""));
    let (status, page) = s
        .post("/console/w/acme/members/bob/tokens", &[("expires", "30d")])
        .await;
    assert_eq!(status, 200);
    let needle = "id=\"token-value\" readonly value=\"";
    let at = page.find(needle).expect("token") + needle.len();
    let token = &page[at..page[at..].find('"').expect("end") + at];
    let names = mcpgw_tests::tool_names(&format!("{}/mcp", gw.mcp_url), token).await;
    assert_eq!(names, ["d_query", "d_schema"]);
    gw.stop().await;
}

/// SQLite's statistics: gathered once the audit trail is big enough, not again until it has
/// doubled, and with them the planner takes a member's own index for a member's records in a
/// workspace (without them it walked the workspace's index).
#[tokio::test]
async fn sqlite_statistics_steer_the_audit_lists_to_the_narrow_index() {
    use mcpgw::audit::{self, Record, store::Appender};
    let db = TestDb::sqlite();
    let store = mcpgw::store::Store::connect(&db.url).await.expect("store");
    let appender = Appender::new(store.db());
    let mut batch: Vec<Record> = (0..20_000)
        .map(|i| Record {
            workspace: "big".into(),
            ts_ms: 1_000 + i,
            kind: audit::KIND_CALL.into(),
            member: Some(format!("m{:03}", i % 500)),
            server: format!("s{:02}", i % 50),
            tool: ["echo", "query", "schema", "slow", "steps", "fail", "roots"][i as usize % 7]
                .into(),
            decision: "allow".into(),
            status: "success".into(),
            request_id: format!("req-{i}"),
            ..Record::default()
        })
        .collect();
    appender.append(&mut batch).await.expect("append");
    let plan = |sql: &'static str| {
        let db = store.db().clone();
        async move {
            let mcpgw::store::Db::Sqlite(pool) = &db else {
                unreachable!()
            };
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sql).fetch_all(pool).await.expect("plan");
            rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("; ")
        }
    };
    let member = "EXPLAIN QUERY PLAN SELECT id FROM audit_records WHERE workspace = 'big' \
                  AND member = 'm007' ORDER BY id DESC LIMIT 50";
    assert!(
        store.optimize().await.expect("optimize"),
        "no statistics yet"
    );
    assert!(
        !store.optimize().await.expect("optimize"),
        "fresh statistics"
    );
    let used = plan(member).await;
    assert!(used.contains("audit_records_member"), "{used}");
    let tool = "EXPLAIN QUERY PLAN SELECT id FROM audit_records WHERE workspace = 'big' \
                AND server = 's07' AND tool = 'query' ORDER BY id DESC LIMIT 50";
    let used = plan(tool).await;
    assert!(used.contains("audit_records_tool"), "{used}");
}
