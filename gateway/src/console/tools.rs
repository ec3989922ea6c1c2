//! What each upstream server lists now, for the allowlist editor and the Servers page: fetched
//! through the gateway's own MCP client (the one `/mcp` uses), a few seconds old at most, and the
//! preview of which tools a set of grants shows, asked of the live policy chain.

use crate::identity::{ServerView, WorkspaceView};
use crate::mcp::exposed_name;
use crate::policy::{PolicyChain, Principal, Question, Verdict};
use crate::upstream::client::{Client, Revision};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a listing is reused before it is fetched again.
const FRESH: Duration = Duration::from_secs(15);
/// How long one server may take to list its tools.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);
/// The owner of the console's upstream sessions (2025-11-25 servers).
const OWNER: &str = "mcpgw-console";

/// One tool as its server lists it.
#[derive(Clone, Debug)]
pub struct Tool {
    /// Name on its server.
    pub name: String,
    /// Title, when the server gives one.
    pub title: Option<String>,
    /// Description (may be empty).
    pub description: String,
}

/// One server's listing.
#[derive(Debug)]
pub struct Listing {
    /// Its tools, or why they could not be listed.
    pub tools: Result<Vec<Tool>, String>,
    /// How long the listing took.
    pub took: Duration,
    /// When it was fetched.
    pub at: Instant,
    /// The server's URL then (an edited server is listed again).
    url: String,
}

/// Listings by (workspace, server).
pub struct Tools {
    client: Client,
    cache: Mutex<HashMap<(String, String), Arc<Listing>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn tool_of(v: &Value) -> Option<Tool> {
    Some(Tool {
        name: v.get("name")?.as_str()?.to_owned(),
        title: v
            .get("title")
            .or_else(|| v.pointer("/annotations/title"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        description: v
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    })
}

impl Tools {
    /// Listings through `client`.
    pub fn new(client: Client) -> Tools {
        Tools {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Every server of `ws` in name order with its listing, fetching (concurrently) those older
    /// than a few seconds or never fetched.
    pub async fn of(&self, ws: &WorkspaceView) -> Vec<(Arc<ServerView>, Arc<Listing>)> {
        let mut servers: Vec<&Arc<ServerView>> = ws.servers.values().collect();
        servers.sort_by(|a, b| a.name.cmp(&b.name));
        let cached: Vec<Option<Arc<Listing>>> = {
            let mut cache = lock(&self.cache);
            cache.retain(|(w, s), _| w != &ws.name || ws.servers.contains_key(s));
            servers
                .iter()
                .map(|s| {
                    cache
                        .get(&(ws.name.clone(), s.name.clone()))
                        .filter(|l| l.at.elapsed() < FRESH && l.url == s.url)
                        .cloned()
                })
                .collect()
        };
        let fetched =
            futures_util::future::join_all(servers.iter().zip(&cached).map(|(s, c)| async move {
                match c {
                    Some(l) => l.clone(),
                    None => Arc::new(self.fetch(s).await),
                }
            }))
            .await;
        let mut cache = lock(&self.cache);
        servers
            .into_iter()
            .zip(fetched)
            .map(|(s, l)| {
                cache.insert((ws.name.clone(), s.name.clone()), l.clone());
                (s.clone(), l)
            })
            .collect()
    }

    /// Forgets the listings of `workspace`: the next page lists again.
    pub fn forget(&self, workspace: &str) {
        lock(&self.cache).retain(|(w, _), _| w != workspace);
    }

    async fn fetch(&self, server: &ServerView) -> Listing {
        let start = Instant::now();
        let listed = tokio::time::timeout(LIST_TIMEOUT, async {
            let revision = self.client.revision(server, Revision::Modern).await;
            // A 2026-07-28 request says who asks in its `_meta`.
            let meta = serde_json::json!({
                "io.modelcontextprotocol/protocolVersion": crate::upstream::client::MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo":
                    {"name": "mcpgw-console", "version": env!("CARGO_PKG_VERSION")},
            });
            self.client
                .list(OWNER, server, "tools/list", "tools", revision, Some(&meta))
                .await
        })
        .await;
        let tools = match listed {
            Ok(Ok(listed)) => Ok(listed.items.iter().filter_map(tool_of).collect()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {LIST_TIMEOUT:?}")),
        };
        Listing {
            tools,
            took: start.elapsed(),
            at: Instant::now(),
            url: server.url.clone(),
        }
    }
}

/// One listed tool as a principal would see it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Server name.
    pub server: String,
    /// Name on the server.
    pub tool: String,
    /// The name clients see on `/mcp`.
    pub exposed: String,
    /// Shown in `tools/list` (with enforcement on).
    pub visible: bool,
    /// Why not, from the deciding module.
    pub reason: Option<String>,
}

/// Which of the listed tools `principal` sees: the policy chain's own listing decision, asked
/// once per tool as `tools/list` asks it (outside the chain's listing cache; the modules'
/// decision counters count it).
pub fn preview(
    chain: &PolicyChain,
    principal: &Principal,
    listings: &[(Arc<ServerView>, Arc<Listing>)],
) -> Vec<Seen> {
    let mut out = Vec::new();
    for (server, listing) in listings {
        let Ok(tools) = &listing.tools else { continue };
        for tool in tools {
            let verdict = chain.preview_listing(&Question {
                request_id: "console-preview",
                principal,
                server: &server.name,
                tool: &tool.name,
                arguments: None,
                facts: None,
                client: None,
                labels: &[],
            });
            let reason = match verdict {
                Verdict::Allow => None,
                Verdict::Deny(d) => Some(format!("{}: {}", d.module, d.reason)),
            };
            out.push(Seen {
                server: server.name.clone(),
                tool: tool.name.clone(),
                exposed: exposed_name(&server.prefix, &tool.name),
                visible: reason.is_none(),
                reason,
            });
        }
    }
    out
}
