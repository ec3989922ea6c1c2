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
use std::time::Duration;

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

async fn click(c: &Client, css: &str) {
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

/// The `server:tool` entries the editor's preview lists as visible.
async fn previewed(c: &Client) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for li in c
        .find_all(Locator::Css("#preview-visible li"))
        .await
        .expect("preview")
    {
        out.insert(
            li.attr("data-tool")
                .await
                .expect("attr")
                .expect("data-tool"),
        );
    }
    out
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
    click(c, "input[value='tools:echo']").await;
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
    let r = http
        .post(format!("{admin}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={login_csrf}&token={}", gw.admin_token))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    // With it, signed in: a session cookie with the same protections.
    let r = http
        .post(format!("{admin}/console/login"))
        .header("cookie", format!("mcpgw_console_login={login_csrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={login_csrf}&token={}", gw.admin_token))
        .send()
        .await
        .expect("post");
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

    // Ten wrong tokens close sign-in for a minute, even to the right one.
    for _ in 0..10 {
        let r = http
            .post(format!("{admin}/console/login"))
            .header("cookie", format!("mcpgw_console_login={login_csrf}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "csrf={login_csrf}&token={}",
                "wrong-wrong-wrong-wrong"
            ))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 401);
    }
    let r = http
        .post(format!("{admin}/console/login"))
        .header("cookie", format!("mcpgw_console_login={login_csrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={login_csrf}&token={}", gw.admin_token))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 429);
    gw.stop().await;
}
