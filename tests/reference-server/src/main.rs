//! `reference-server`: a real MCP server (rmcp, Streamable HTTP) with every fixture that the
//! official conformance suite's server scenarios (`@modelcontextprotocol/conformance server`)
//! call, for spec versions 2025-11-25 (initialize, sessions) and 2026-07-28 (stateless,
//! `server/discover`, input-required results). `scripts/conformance` runs the suite against it
//! directly and through mcpgw and compares.
//!
//! ```text
//! reference-server [--listen 127.0.0.1:0]
//! ```
//!
//! The first line on stdout is the endpoint, `http://ADDR/mcp`; the server runs until SIGTERM or
//! SIGINT, then exits at once (open streams are dropped).

mod fixtures;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Request, Response, StatusCode, body::Bytes};
use rmcp::transport::{
    StreamableHttpServerConfig, StreamableHttpService,
    streamable_http_server::session::local::LocalSessionManager,
};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The path the MCP endpoint is served on; every other path is 404.
const MCP_PATH: &str = "/mcp";

fn parse_args() -> anyhow::Result<SocketAddr> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args
                    .next()
                    .context("--listen needs an address, e.g. 127.0.0.1:0")?;
                listen = value
                    .parse()
                    .with_context(|| format!("--listen {value}: not an IP:PORT address"))?;
            }
            "-h" | "--help" => {
                println!(
                    "usage: reference-server [--listen IP:PORT]\n\n\
                     Serves the conformance fixtures over MCP Streamable HTTP on IP:PORT\n\
                     (default 127.0.0.1:0, any free port) at {MCP_PATH}. The first line on\n\
                     stdout is the endpoint URL."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(listen)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen = parse_args()?;
    let stop = CancellationToken::new();

    // Defaults: 2025-11-25 sessions with SSE priming and a retry hint (SEP-1699), 2026-07-28
    // always stateless, Host validated against loopback names (DNS rebinding protection).
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(true)
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_cancellation_token(stop.child_token());
    let fixtures = fixtures::Fixtures::new();
    let service = StreamableHttpService::new(
        move || Ok(fixtures.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("http://{addr}{MCP_PATH}\n").as_bytes())
        .await?;
    stdout.flush().await?;

    let shutdown = stop.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        shutdown.cancel();
    });

    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    eprintln!("reference-server: accept: {e}");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        let handler = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let mut service = service.clone();
            async move {
                if req.uri().path() != MCP_PATH {
                    return Ok::<_, Infallible>(not_found());
                }
                let response = tower_service::Service::call(&mut service, req).await?;
                Ok(response.map(|body| body.map_err(Into::into).boxed()))
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), handler)
                .await;
        });
    }
    Ok(())
}

fn not_found() -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(b"not found\n"))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}
