//! `mcpgw server status WS`: the processes of a workspace's stdio servers, as the running
//! gateway's admin API reports them (`GET /v1/workspaces/{ws}/servers/status`).

use super::print_json;
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mcpgw::config::Config;
use mcpgw::upstream::fence::StepState;
use mcpgw::upstream::stdio::ProcessStatus;
use std::process::ExitCode;

/// GETs `path` from the running gateway's admin API (`--admin-url`, else `admin_listen`) with
/// the configured admin token; the answer's body.
pub async fn admin_get(config: &Config, admin_url: Option<&str>, path: &str) -> Result<Bytes> {
    let base = match (admin_url, config.admin_listen) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(addr)) => format!("http://{addr}"),
        (None, None) => bail!("the admin API is off (admin_listen); give --admin-url"),
    };
    let Some(token) = &config.admin_token else {
        bail!("no admin token configured (MCPGW_ADMIN_TOKEN or admin_token_env)");
    };
    let uri = format!("{base}{path}");
    let req = http::Request::get(&uri)
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", token.expose()),
        )
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
        .await
        .with_context(|| format!("{uri}: no answer within 10 s"))?
        .with_context(|| format!("{uri}: is the gateway running?"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    if !status.is_success() {
        bail!(
            "{uri}: {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(512)])
        );
    }
    Ok(body)
}

/// Asks the admin API and prints one line per server (and its fence with `--json`).
pub async fn server_status(
    config: &Config,
    workspace: &str,
    admin_url: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let body = admin_get(
        config,
        admin_url,
        &format!("/v1/workspaces/{workspace}/servers/status"),
    )
    .await?;
    let list: Vec<ProcessStatus> =
        serde_json::from_slice(&body).context("the admin API's answer")?;
    if json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<12} {:>8} {:>9} {:>8} {:>9}  {:<28} FENCE",
        "SERVER", "STATE", "PID", "UPTIME", "RESTARTS", "IN FLIGHT", "LAST EXIT"
    );
    for p in list {
        let fence = p.fence.as_ref().map_or_else(String::new, |f| {
            f.steps
                .iter()
                .map(|s| {
                    let mark = match &s.state {
                        StepState::Applied => "",
                        StepState::Off => " off",
                        StepState::Refused { .. } => " REFUSED",
                    };
                    format!("{}{mark}", s.step)
                })
                .collect::<Vec<_>>()
                .join(",")
        });
        println!(
            "{:<16} {:<12} {:>8} {:>9} {:>8} {:>9}  {:<28} {}",
            p.server,
            p.state,
            p.pid.map_or("-".into(), |p| p.to_string()),
            p.uptime_s.map_or("-".into(), |s| format!("{s}s")),
            p.restarts,
            p.in_flight,
            p.last_exit.as_deref().unwrap_or("-"),
            fence
        );
    }
    Ok(ExitCode::SUCCESS)
}
