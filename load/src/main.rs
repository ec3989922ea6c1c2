//! mcpgw-load: what the gateway costs end to end.
//!
//! N concurrent clients send `tools/call` (Streamable HTTP, one keep-alive connection each) to the
//! `db` demo server's `query` tool, in turn through each target:
//!
//! - (a) `direct`: the upstream itself (a real rmcp server, stateless);
//! - (b) `bare proxy`: a hyper pass-through proxy in this process, nothing else;
//! - (c) `mcpgw`: the gateway in this process with token auth, the allowlist, secrets-guard and
//!   the audit trail to SQLite;
//! - (d) `mcpgw, audit off`: the same without the audit trail (what the trail costs end to end).
//!
//! Targets are measured in turn for several rounds and the figures pooled, so drift on the machine
//! touches every target alike. Prints p50 / p99 latency and throughput for each, then the ratios.
//!
//! `cargo run --release -p mcpgw-load -- --clients 16 --duration 5s --rounds 3`

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "mcpgw-load",
    about = "tools/call load: direct vs bare proxy vs mcpgw"
)]
struct Args {
    /// Concurrent clients (one keep-alive connection each).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Measured time per target per round.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time per target before each measurement.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Rounds over all targets.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measure only these targets (letters, for example `bd`), for profiling one at a time; the
    /// ratios are printed only when all four run.
    #[arg(long, default_value = "abcd")]
    only: String,
}

const SQL: &str = "select id, name, email from users where created_at > now() - interval '7 days' order by id limit 50";

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// One target: where to send, and the bearer token if any.
struct Target {
    name: &'static str,
    url: String,
    token: Option<String>,
    latencies_us: Vec<u32>,
    errors: u64,
    elapsed: Duration,
    /// CPU time of the whole process (user + system) during the measured windows.
    cpu: Duration,
}

/// CPU time this process has used so far, user plus system, all threads.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// The bare proxy: reads the request, sends it upstream, streams the answer back.
async fn bare_proxy(upstream: String) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let upstream: http::Uri = upstream.parse()?;
    let client = client();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (client, upstream) = (client.clone(), upstream.clone());
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (client, upstream) = (client.clone(), upstream.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(forward(&client, upstream, req).await)
                    }
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// One request through the bare proxy; a failure is a 502.
async fn forward(
    client: &Client<HttpConnector, Full<Bytes>>,
    upstream: http::Uri,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Body> {
    let (mut parts, body) = req.into_parts();
    let bad_gateway = || {
        let mut r = hyper::Response::new(Full::new(Bytes::new()).map_err(|n| match n {}).boxed());
        *r.status_mut() = http::StatusCode::BAD_GATEWAY;
        r
    };
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return bad_gateway();
    };
    parts.uri = upstream;
    parts.headers.remove(http::header::HOST);
    match client
        .request(hyper::Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(resp) => resp.map(|b| -> Body { b.map_err(|e| -> BoxError { Box::new(e) }).boxed() }),
        Err(_) => bad_gateway(),
    }
}

/// mcpgw in this process on SQLite in `dir`, with workspace `load`, server `db`, member `m`
/// granted `db:*`, enforcement on, secrets-guard in the policy directory. Returns its URL and a
/// token.
async fn gateway(dir: &std::path::Path, upstream: &str, audit: bool) -> Result<(String, String)> {
    let database = format!("sqlite://{}", dir.join("mcpgw.db").display());
    let store = mcpgw::store::Store::connect(&database).await?;
    store.workspace_create("load").await?;
    store
        .server_add("load", "db", upstream, vec![], None)
        .await?;
    store.member_add("load", "m").await?;
    store.grant_add("load", "m", &["db:*".to_owned()]).await?;
    store.enforce_set("load", true).await?;
    let token = store.token_issue("load", Some("m"), None).await?.token;
    drop(store);
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    std::fs::write(
        policies.join("10-secrets-guard.wasm"),
        mcpgw::policy::SECRETS_GUARD,
    )?;
    let mut config = mcpgw::config::Config::try_from(mcpgw::config::RawConfig::default())?;
    config.database = database;
    config.data_dir = dir.to_owned();
    config.admin_listen = None;
    config.policy.dir = Some(policies);
    config.policy.cache_dir = Some(dir.join("policy-cache"));
    config.audit.enabled = audit;
    let mcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/mcp/db", mcp.local_addr()?);
    tokio::spawn(mcpgw::run_with(
        config,
        mcpgw::Listeners { mcp, admin: None },
        std::future::pending::<()>(),
    ));
    Ok((url, token))
}

fn request(url: &str, token: Option<&str>, id: u64) -> Result<hyper::Request<Full<Bytes>>> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "query", "arguments": {"sql": SQL}}});
    let mut req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    Ok(req.body(Full::new(Bytes::from(body.to_string())))?)
}

/// Runs `clients` loops against `target` for `warmup` then `duration`, recording latencies.
async fn measure(target: &mut Target, clients: usize, warmup: Duration, duration: Duration) {
    let client = client();
    let stop = Arc::new(AtomicBool::new(false));
    let record = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, url, token) = (client.clone(), target.url.clone(), target.token.clone());
        let (stop, record) = (stop.clone(), record.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut id = (c as u64) << 40;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let Ok(req) = request(&url, token.as_deref(), id) else {
                    errors += 1;
                    continue;
                };
                let start = Instant::now();
                let ok = match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        match resp.into_body().collect().await {
                            Ok(b) => {
                                let b = b.to_bytes();
                                status.is_success()
                                    && b.windows(9).any(|w| w == b"\"result\":")
                                    && !b.windows(13).any(|w| w == b"\"isError\":true")
                            }
                            Err(_) => false,
                        }
                    }
                    Err(_) => false,
                };
                let us = start.elapsed().as_micros().min(u32::MAX as u128) as u32;
                if record.load(Ordering::Relaxed) {
                    if ok {
                        lat.push(us);
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(warmup).await;
    record.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let cpu_before = process_cpu();
    tokio::time::sleep(duration).await;
    record.store(false, Ordering::Relaxed);
    target.cpu += process_cpu().saturating_sub(cpu_before);
    target.elapsed += started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        if let Ok((lat, errors)) = t.await {
            target.latencies_us.extend(lat);
            target.errors += errors;
        }
    }
}

struct Figures {
    p50: f64,
    p99: f64,
    rps: f64,
    /// Process CPU time per completed request, in µs.
    cpu_us: f64,
}

fn figures(t: &mut Target) -> Figures {
    t.latencies_us.sort_unstable();
    let q = |p: f64| -> f64 {
        let v = &t.latencies_us;
        if v.is_empty() {
            return f64::NAN;
        }
        f64::from(v[((v.len() - 1) as f64 * p).round() as usize])
    };
    Figures {
        p50: q(0.50),
        p99: q(0.99),
        rps: t.latencies_us.len() as f64 / t.elapsed.as_secs_f64(),
        cpu_us: t.cpu.as_secs_f64() * 1e6 / t.latencies_us.len().max(1) as f64,
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.rounds == 0 {
        bail!("--clients and --rounds must be at least 1");
    }
    let upstream = mcpgw::demo::start_db(([127, 0, 0, 1], 0).into(), false)
        .await
        .context("start the upstream")?;
    let proxy = bare_proxy(upstream.url.clone()).await?;
    let dir_on = tempfile::tempdir()?;
    let dir_off = tempfile::tempdir()?;
    let (gw_on, token_on) = gateway(dir_on.path(), &upstream.url, true).await?;
    let (gw_off, token_off) = gateway(dir_off.path(), &upstream.url, false).await?;
    // The gateways are up once they answer.
    for (url, token) in [(&gw_on, &token_on), (&gw_off, &token_off)] {
        let c = client();
        let mut up = false;
        for _ in 0..500 {
            if let Ok(r) = c.request(request(url, Some(token), 0)?).await
                && r.status().is_success()
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !up {
            bail!("the gateway at {url} did not come up");
        }
    }
    let target = |name, url: String, token: Option<String>| Target {
        name,
        url,
        token,
        latencies_us: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
        cpu: Duration::ZERO,
    };
    let mut targets = [
        target("(a) direct", upstream.url.clone(), None),
        target("(b) bare proxy", format!("http://{proxy}/mcp"), None),
        target("(c) mcpgw", gw_on, Some(token_on)),
        target("(d) mcpgw, audit off", gw_off, Some(token_off)),
    ];
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "mcpgw-load: {} clients, {} rounds of {:?} per target (after {:?} warm-up), {cpus} CPUs, tools/call db:query",
        args.clients, args.rounds, args.duration, args.warmup
    );
    for round in 1..=args.rounds {
        for (i, t) in targets.iter_mut().enumerate() {
            if !args.only.contains((b'a' + i as u8) as char) {
                continue;
            }
            measure(t, args.clients, args.warmup, args.duration).await;
            eprintln!("round {round}: {} done", t.name);
        }
    }
    let figs: Vec<Figures> = targets.iter_mut().map(figures).collect();
    println!(
        "\n| target | requests | errors | p50 | p99 | throughput | CPU per request |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for (t, f) in targets.iter().zip(&figs) {
        if t.latencies_us.is_empty() && t.errors == 0 {
            continue;
        }
        println!(
            "| {} | {} | {} | {:.0} µs | {:.0} µs | {:.0} req/s | {:.1} µs |",
            t.name,
            t.latencies_us.len(),
            t.errors,
            f.p50,
            f.p99,
            f.rps,
            f.cpu_us
        );
    }
    if args.only != "abcd" {
        return Ok(());
    }
    let (a, b, c, d) = (&figs[0], &figs[1], &figs[2], &figs[3]);
    println!("\n| ratio | value | budget |\n|---|---:|---:|");
    println!("| added p50, c − a | {:.0} µs | ≤ 100 µs |", c.p50 - a.p50);
    println!("| added p99, c − a | {:.0} µs | ≤ 500 µs |", c.p99 - a.p99);
    println!("| p50 c / a | {:.2}× | |", c.p50 / a.p50);
    println!("| p50 c / b | {:.2}× | |", c.p50 / b.p50);
    println!(
        "| throughput c / b | {:.1} % | ≥ 90 % |",
        100.0 * c.rps / b.rps
    );
    println!("| throughput c / a | {:.1} % | |", 100.0 * c.rps / a.rps);
    println!(
        "| CPU per request added over direct, b − a | {:.1} µs | |",
        b.cpu_us - a.cpu_us
    );
    println!(
        "| CPU per request added over direct, c − a | {:.1} µs | |",
        c.cpu_us - a.cpu_us
    );
    println!("| audit on vs off, p50 c − d | {:.0} µs | |", c.p50 - d.p50);
    println!(
        "| audit on vs off, throughput c / d | {:.1} % | |",
        100.0 * c.rps / d.rps
    );
    if targets.iter().any(|t| t.errors > 0) {
        bail!("some requests failed: see the errors column");
    }
    Ok(())
}
