//! Ready-to-paste configurations of the AI clients members run (Claude Desktop, Cursor, VS Code)
//! for one token: what `mcpgw dev` prints and the console shows when it issues a token.

use serde_json::json;

/// One client's configuration.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The client.
    pub client: &'static str,
    /// Where its configuration lives.
    pub file: &'static str,
    /// The JSON to paste, pretty-printed.
    pub json: String,
}

/// The configurations pointing `url` (the gateway's `/mcp`) at the gateway with `token`.
pub fn configs(url: &str, token: &str) -> Vec<ClientConfig> {
    let bearer = format!("Bearer {token}");
    // Claude Desktop reaches remote servers through the mcp-remote bridge, which refuses plain
    // http:// unless told.
    let mut args = vec![json!("-y"), json!("mcp-remote"), json!(url)];
    if url.starts_with("http://") {
        args.push(json!("--allow-http"));
    }
    args.push(json!("--header"));
    args.push(json!(format!("Authorization:{bearer}")));
    let claude = json!({"mcpServers": {"mcpgw": {"command": "npx", "args": args}}});
    let cursor =
        json!({"mcpServers": {"mcpgw": {"url": url, "headers": {"Authorization": bearer}}}});
    let vscode = json!({"servers": {"mcpgw": {"type": "http", "url": url, "headers": {"Authorization": bearer}}}});
    [
        ("Claude Desktop", "claude_desktop_config.json", claude),
        ("Cursor", "~/.cursor/mcp.json", cursor),
        ("VS Code", ".vscode/mcp.json", vscode),
    ]
    .into_iter()
    .map(|(client, file, v)| ClientConfig {
        client,
        file,
        json: serde_json::to_string_pretty(&v).unwrap_or_default(),
    })
    .collect()
}
