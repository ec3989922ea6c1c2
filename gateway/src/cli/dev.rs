//! `mcpgw dev` (part of the binary): the whole product in one command, on embedded defaults.

use anyhow::{Context as _, Result};
use mcpgw::config::{Config, Secret};
use mcpgw::store::Store;
use std::path::PathBuf;

/// The demo workspace, rebuilt on every start (the demo servers get new ports).
const WORKSPACE: &str = "demo";

/// Who gets what: alice runs the team, bob is the intern.
const MEMBERS: &[(&str, &[&str])] = &[
    ("alice", &["db:*", "ci:*", "search:*"]),
    ("bob", &["db:schema", "ci:status", "search:*"]),
];

pub struct DevArgs {
    pub data_dir: PathBuf,
    pub listen: String,
    pub admin_listen: String,
}

pub async fn run(mut config: Config, args: DevArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    let policy_dir = args.data_dir.join("policies");
    std::fs::create_dir_all(&policy_dir)?;
    std::fs::write(
        policy_dir.join("10-secrets-guard.wasm"),
        mcpgw::policy::SECRETS_GUARD,
    )
    .context("install secrets-guard")?;
    config.data_dir = args.data_dir.clone();
    config.policy.dir = Some(policy_dir.clone());
    config.policy.cache_dir = Some(args.data_dir.join("policy-cache"));

    let servers = mcpgw::demo::start_all()
        .await
        .context("start the demo servers")?;
    let store = Store::connect(&config.database)
        .await
        .context("open the database")?;
    match store.workspace_delete(WORKSPACE).await {
        Ok(()) | Err(mcpgw::store::Error::NotFound(..)) => {}
        Err(e) => return Err(e.into()),
    }
    store.workspace_create(WORKSPACE).await?;
    for s in &servers {
        store
            .server_add(WORKSPACE, s.name, &s.url, vec![], None)
            .await?;
    }
    let mut tokens = Vec::new();
    for (member, grants) in MEMBERS {
        store.member_add(WORKSPACE, member).await?;
        let grants: Vec<String> = grants.iter().map(|g| g.to_string()).collect();
        store.grant_add(WORKSPACE, member, &grants).await?;
        let issued = store.token_issue(WORKSPACE, Some(member), None).await?;
        tokens.push((*member, grants, issued.token));
    }
    store.enforce_set(WORKSPACE, true).await?;
    drop(store);

    let admin_token = mcpgw::store::random_hex(24)?;
    let mcp = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("bind {}", args.listen))?;
    let admin = tokio::net::TcpListener::bind(&args.admin_listen)
        .await
        .with_context(|| format!("bind {}", args.admin_listen))?;
    let base = format!("http://{}", mcp.local_addr()?);
    let admin_url = format!("http://{}", admin.local_addr()?);

    let mut out = String::new();
    out.push_str("\nmcpgw dev: a complete gateway on embedded defaults\n\n");
    out.push_str(&format!(
        "  data       {} (SQLite, audit trail, policies/)\n",
        args.data_dir.display()
    ));
    out.push_str(
        "  policy     built-in allowlist, then secrets-guard (drop more .wasm into policies/)\n",
    );
    out.push_str(&format!(
        "  workspace  {WORKSPACE}, enforcement on\n  upstreams  "
    ));
    let names: Vec<String> = servers
        .iter()
        .map(|s| format!("{} ({})", s.name, s.url))
        .collect();
    out.push_str(&names.join(", "));
    out.push_str("\n\n  endpoints  ");
    out.push_str(&format!(
        "{base}/mcp (every server, tools named server_tool)\n"
    ));
    for s in &servers {
        out.push_str(&format!(
            "             {base}/mcp/{} (one server)\n",
            s.name
        ));
    }
    out.push_str(&format!(
        "  admin API  {admin_url} (token {admin_token})\n  console    {admin_url}/ (sign in with the admin token)\n\n"
    ));
    for (member, grants, token) in &tokens {
        out.push_str(&format!(
            "  {member:<6} token {token}\n         may use {}\n",
            grants.join(" ")
        ));
    }
    let (member, _, token) = &tokens[0];
    let url = format!("{base}/mcp");
    let bearer = format!("Bearer {token}");
    out.push_str(&format!(
        "\nClient configs ({member}'s token; use bob's to see the difference):\n\n"
    ));
    for c in mcpgw::clients::configs(&url, token) {
        out.push_str(&format!("{} ({}):\n{}\n\n", c.client, c.file, c.json));
    }
    out.push_str(&format!(
        "Try: curl -s {url} -H 'Authorization: {bearer}' -H 'Accept: application/json, text/event-stream' \\\n  -H 'Content-Type: application/json' -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/list' \\\n  -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}}'\n"
    ));
    out.push_str(&format!(
        "Audit: mcpgw audit tail --follow --database sqlite://{}\n",
        args.data_dir.join("mcpgw.db").display()
    ));
    out.push_str("Ctrl-C stops it.\n");
    println!("{out}");

    let listeners = mcpgw::Listeners {
        mcp,
        admin: Some((admin, Secret::new(admin_token))),
    };
    let result = mcpgw::run_with(config, listeners, mcpgw::shutdown_signal()).await;
    drop(servers);
    result
}
