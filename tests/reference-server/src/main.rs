//! `reference-server`: a real MCP server (rmcp, Streamable HTTP) with every fixture that the
//! official conformance suite's server scenarios (`@modelcontextprotocol/conformance server`)
//! call, for spec versions 2025-11-25 (initialize, sessions) and 2026-07-28 (stateless,
//! `server/discover`, input-required results). `scripts/conformance` runs the suite against it
//! directly and through mcpgw and compares.
//!
//! ```text
//! reference-server [--listen 127.0.0.1:0]
//! reference-server --stdio
//! ```
//!
//! Over HTTP, the first line on stdout is the endpoint, `http://ADDR/mcp`; the server runs until
//! SIGTERM or SIGINT, then exits at once (open streams are dropped).
//!
//! With `--stdio` it serves one client on stdin/stdout instead (newline-delimited JSON-RPC, MCP's
//! stdio transport), for the gateway's stdio-upstream tests: the same fixtures plus the tools of
//! [`debug`] (`debug_environment`, `debug_crash`). Both revisions: `initialize` (2025-11-25 and
//! older) or stateless requests from the first line (2026-07-28, `server/discover`). Stdout then
//! carries protocol messages only; the server exits 0 when stdin reaches end of file.
//!
//! Built as a workspace member: `cargo build -p reference-server`, or any `cargo test
//! --workspace` (which `scripts/test` runs), puts it at `target/debug/reference-server`.

mod debug;
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

/// What to serve on.
enum Mode {
    /// Streamable HTTP on this address.
    Http(SocketAddr),
    /// One client on stdin/stdout.
    Stdio,
}

fn parse_args() -> anyhow::Result<Mode> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut stdio = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--stdio" => stdio = true,
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
                    "usage: reference-server [--listen IP:PORT]\n       \
                     reference-server --stdio\n\n\
                     Serves the conformance fixtures over MCP Streamable HTTP on IP:PORT\n\
                     (default 127.0.0.1:0, any free port) at {MCP_PATH}. The first line on\n\
                     stdout is the endpoint URL.\n\n\
                     --stdio serves them to one client on stdin/stdout instead (MCP's stdio\n\
                     transport), with two more tools: debug_environment and debug_crash.\n\
                     It exits when stdin is closed."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(if stdio {
        Mode::Stdio
    } else {
        Mode::Http(listen)
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match parse_args()? {
        Mode::Stdio => serve_stdio().await,
        Mode::Http(listen) => serve_http(listen).await,
    }
}

/// Serves one client on stdin/stdout until it closes stdin (or the session otherwise ends);
/// a client that closes stdin before its first request is a clean exit too. Nothing but the
/// transport writes to stdout here: errors go to stderr.
async fn serve_stdio() -> anyhow::Result<()> {
    use rmcp::{ServiceExt as _, service::ServerInitializeError};
    let service = match fixtures::Fixtures::new()
        .with_debug_tools()
        .serve(rmcp::transport::stdio())
        .await
    {
        Ok(service) => service,
        Err(ServerInitializeError::ConnectionClosed(_)) => return Ok(()),
        Err(e) => return Err(e).context("the client's first request over stdio"),
    };
    service.waiting().await.context("the stdio session")?;
    Ok(())
}

async fn serve_http(listen: SocketAddr) -> anyhow::Result<()> {
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
