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
//! and, with `--only` naming them (`--only efghi`), stdio and HTTPS upstreams with every party in a
//! process of its own (`upstreams.rs`; stateless 2026-07-28 calls of the same tool):
//!
//! - (e) `stdio direct`: this process speaks stdio to the `db` server, which it spawns;
//! - (f) `mcpgw → stdio`: a gateway process with that server as its stdio upstream;
//! - (g) `mcpgw → http`: the same gateway and tool, the server over HTTP in another process;
//! - (h) `mcpgw → https`: the same over HTTPS (a test CA made at start);
//! - (i) `http direct`: the HTTP server of g spoken to directly, for what the gateway adds over
//!   HTTP (g − i) beside what it adds over stdio (f − e).
//!
//! Targets are measured in turn for several rounds and the figures pooled, so drift on the machine
//! touches every target alike. Prints p50 / p99 latency and throughput for each, then the ratios.
//!
//! `cargo run --release -p mcpgw-load -- --clients 16 --duration 5s --rounds 3`
//! `cargo run --release -p mcpgw-load -- --only efghi --clients 1` (see docs/benchmarks.md)

mod upstreams;

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
    about = "tools/call load: direct vs bare proxy vs mcpgw; stdio, HTTP and HTTPS upstreams"
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
    /// Measure only these targets (letters a–i, for example `bd` or `efghi`); each group's
    /// ratios are printed when all its targets run (a–d, e–h, i).
    #[arg(long, default_value = "abcd")]
    only: String,
    /// How the stdio server of targets e and f reads and writes its pipes. `pipes` needs the
    /// server to reopen its pipes through /proc/self/fd, which a server the gateway (as root)
    /// starts as another user cannot do (it falls back to blocking): see --stdio-run-as.
    #[arg(long, value_enum, default_value = "blocking")]
    stdio_io: upstreams::StdioIo,
    /// The user f's stdio server runs as when this process is root (the fence's `run_as`;
    /// default: the fence's own, nobody).
    #[arg(long)]
    stdio_run_as: Option<String>,
}

const SQL: &str = "select id, name, email from users where created_at > now() - interval '7 days' order by id limit 50";

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// How a target is reached.
enum Via {
    /// Streamable HTTP, with the bearer token if any; `modern`: a stateless 2026-07-28 call
    /// (targets f–h), else one without a protocol header (a–d).
    Http {
        url: String,
        token: Option<String>,
        modern: bool,
    },
    /// MCP over a stdio server's stdin/stdout (target e).
    Stdio(Arc<upstreams::StdioClient>),
}

/// One target: how to reach it, and what was measured.
struct Target {
    letter: char,
    name: &'static str,
    via: Via,
    latencies_us: Vec<u32>,
    errors: u64,
    elapsed: Duration,
    /// CPU time of this whole process (user + system) during the measured windows.
    cpu: Duration,
    /// Other processes the target runs on (gateway, server), with their CPU time during the
    /// measured windows (from /proc).
    watched: Vec<Watched>,
}

struct Watched {
    role: Role,
    pid: u32,
    cpu: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Gateway,
    Server,
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

/// The bare proxy on `listen`: reads the request, sends it to the same path on `upstream`'s
/// host, streams the answer back.
async fn bare_proxy(listen: SocketAddr, upstream: String) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve_bare(listener, upstream.parse()?));
    Ok(addr)
}

/// The bare proxy's accept loop on `listener`, with a client of its own.
async fn serve_bare(listener: tokio::net::TcpListener, upstream: http::Uri) {
    let client = client();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (client, upstream) = (client.clone(), upstream.clone());
        let service = hyper::service::service_fn(
            move |req: hyper::Request<hyper::body::Incoming>| {
                let (client, upstream) = (client.clone(), upstream.clone());
                async move { Ok::<_, std::convert::Infallible>(forward(&client, upstream, req).await) }
            },
        );
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
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
    let mut uri = upstream.into_parts();
    uri.path_and_query = parts.uri.path_and_query().cloned();
    let Ok(uri) = http::Uri::from_parts(uri) else {
        return bad_gateway();
    };
    parts.uri = uri;
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

/// The call as a stdio client sends it (target e), and as the stdio server sees it in f.
fn call_message(id: u64) -> serde_json::Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "query", "arguments": {"sql": SQL}}})
}

/// `modern`: a stateless 2026-07-28 call (its headers and `_meta`), else one without a protocol
/// header.
fn request(
    url: &str,
    token: Option<&str>,
    id: u64,
    modern: bool,
) -> Result<hyper::Request<Full<Bytes>>> {
    let mut body = call_message(id);
    let mut req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if modern {
        body["params"]["_meta"] = serde_json::json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}});
        req = req
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "query");
    }
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    Ok(req.body(Full::new(Bytes::from(body.to_string())))?)
}

/// One HTTP call: whether it succeeded (a result, not a tool error).
async fn call_http(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: hyper::Request<Full<Bytes>>,
) -> bool {
    match client.request(req).await {
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
    }
}

/// Runs `clients` loops against `target` for `warmup` then `duration`, recording latencies.
async fn measure(target: &mut Target, clients: usize, warmup: Duration, duration: Duration) {
    let client = client();
    let stop = Arc::new(AtomicBool::new(false));
    let record = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let via = match &target.via {
            Via::Http { url, token, modern } => Via::Http {
                url: url.clone(),
                token: token.clone(),
                modern: *modern,
            },
            Via::Stdio(s) => Via::Stdio(s.clone()),
        };
        let client = client.clone();
        let (stop, record) = (stop.clone(), record.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut id = (c as u64) << 40;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let start;
                let ok = match &via {
                    Via::Http { url, token, modern } => {
                        let Ok(req) = request(url, token.as_deref(), id, *modern) else {
                            errors += 1;
                            continue;
                        };
                        start = Instant::now();
                        call_http(&client, req).await
                    }
                    Via::Stdio(stdio) => {
                        // One id space on the one pipe.
                        let id = stdio.next_id();
                        start = Instant::now();
                        stdio.send(id, &call_message(id)).await
                    }
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
    let watched_before: Vec<Option<Duration>> = target
        .watched
        .iter()
        .map(|w| upstreams::process_cpu_of(w.pid))
        .collect();
    tokio::time::sleep(duration).await;
    record.store(false, Ordering::Relaxed);
    target.cpu += process_cpu().saturating_sub(cpu_before);
    for (w, before) in target.watched.iter_mut().zip(watched_before) {
        if let (Some(before), Some(after)) = (before, upstreams::process_cpu_of(w.pid)) {
            w.cpu += after.saturating_sub(before);
        }
    }
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
    /// The gateway process's, when it runs in a process of its own.
    gateway_us: Option<f64>,
    /// The upstream server process's, when it runs in a process of its own.
    server_us: Option<f64>,
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
    let per_call = |d: Duration| d.as_secs_f64() * 1e6 / t.latencies_us.len().max(1) as f64;
    let role = |role| {
        t.watched
            .iter()
            .find(|w| w.role == role)
            .map(|w| per_call(w.cpu))
    };
    Figures {
        p50: q(0.50),
        p99: q(0.99),
        rps: t.latencies_us.len() as f64 / t.elapsed.as_secs_f64(),
        cpu_us: per_call(t.cpu),
        gateway_us: role(Role::Gateway),
        server_us: role(Role::Server),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    // The processes targets e–h spawn of this binary: the demo server, a gateway.
    let argv: Vec<String> = std::env::args().collect();
    if let Some(done) = upstreams::hidden(&argv).await {
        return done;
    }
    // `mcpgw-load bare-proxy LISTEN UPSTREAM`: the bare proxy as a process of its own, for
    // load/processes.
    // `mcpgw-load bare-proxy-per-core LISTEN UPSTREAM`: the same with one single-threaded runtime
    // per core, each with its own client, all accepting on one socket.
    if let [_, role, listen, upstream] = argv.as_slice()
        && role == "bare-proxy"
    {
        let addr = bare_proxy(listen.parse()?, upstream.clone()).await?;
        println!("listening on {addr}");
        std::future::pending::<()>().await;
    }
    if let [_, role, listen, upstream] = argv.as_slice()
        && role == "bare-proxy-per-core"
    {
        let listener = std::net::TcpListener::bind(listen.as_str())?;
        listener.set_nonblocking(true)?;
        println!("listening on {}", listener.local_addr()?);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut joins = Vec::new();
        for _ in 0..threads {
            let listener = listener.try_clone()?;
            let upstream: http::Uri = upstream.parse()?;
            joins.push(std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    serve_bare(listener, upstream).await;
                });
            }));
        }
        for j in joins {
            let _ = j.join();
        }
        return Ok(());
    }
    let args = Args::parse();
    if args.clients == 0 || args.rounds == 0 {
        bail!("--clients and --rounds must be at least 1");
    }
    if let Some(c) = args.only.chars().find(|c| !('a'..='i').contains(c)) {
        bail!("--only: {c:?} is not a target (a–i)");
    }
    let wants = |letters: &str| letters.chars().any(|c| args.only.contains(c));
    let target = |letter, name, via| Target {
        letter,
        name,
        via,
        latencies_us: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
        cpu: Duration::ZERO,
        watched: Vec::new(),
    };
    let http = |url: String, token: Option<String>, modern| Via::Http { url, token, modern };
    let mut targets = Vec::new();
    // Kept alive until the end: the in-process upstream and the gateways' directories.
    let mut _keep = None;
    if wants("abcd") {
        let upstream = mcpgw::demo::start_db(([127, 0, 0, 1], 0).into(), false)
            .await
            .context("start the upstream")?;
        let proxy = bare_proxy(([127, 0, 0, 1], 0).into(), upstream.url.clone()).await?;
        let dir_on = tempfile::tempdir()?;
        let dir_off = tempfile::tempdir()?;
        let (gw_on, token_on) = gateway(dir_on.path(), &upstream.url, true).await?;
        let (gw_off, token_off) = gateway(dir_off.path(), &upstream.url, false).await?;
        // The gateways are up once they answer.
        for (url, token) in [(&gw_on, &token_on), (&gw_off, &token_off)] {
            let c = client();
            let mut up = false;
            for _ in 0..500 {
                if let Ok(r) = c.request(request(url, Some(token), 0, false)?).await
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
        targets.extend([
            target('a', "(a) direct", http(upstream.url.clone(), None, false)),
            target(
                'b',
                "(b) bare proxy",
                http(format!("http://{proxy}/mcp"), None, false),
            ),
            target('c', "(c) mcpgw", http(gw_on, Some(token_on), false)),
            target(
                'd',
                "(d) mcpgw, audit off",
                http(gw_off, Some(token_off), false),
            ),
        ]);
        _keep = Some((upstream, dir_on, dir_off));
    }
    let mut _upstreams = None;
    if wants("efghi") {
        let check = client();
        let up = upstreams::Upstreams::start(
            args.stdio_io,
            args.stdio_run_as.as_deref(),
            async |url: &str, token: &str| match request(url, Some(token), 0, true) {
                Ok(req) => call_http(&check, req).await,
                Err(_) => false,
            },
        )
        .await
        .context("start targets e–i")?;
        let watch = |pids: &[(Role, u32)]| -> Vec<Watched> {
            pids.iter()
                .map(|&(role, pid)| Watched {
                    role,
                    pid,
                    cpu: Duration::ZERO,
                })
                .collect()
        };
        let url = |server| format!("{}{server}", up.gateway_base);
        let token = Some(up.token.clone());
        let [stdio, plain, tls] = upstreams::SERVERS;
        let (gw, net) = (up.gateway_pid, up.net_pid);
        let mut e = target('e', "(e) stdio direct", Via::Stdio(up.direct.clone()));
        e.watched = watch(&[(Role::Server, up.direct.pid)]);
        let mut f = target(
            'f',
            "(f) mcpgw → stdio",
            http(url(stdio), token.clone(), true),
        );
        f.watched = watch(&[(Role::Gateway, gw), (Role::Server, up.gateway_stdio_pid)]);
        let mut g = target(
            'g',
            "(g) mcpgw → http",
            http(url(plain), token.clone(), true),
        );
        g.watched = watch(&[(Role::Gateway, gw), (Role::Server, net)]);
        let mut h = target('h', "(h) mcpgw → https", http(url(tls), token, true));
        h.watched = watch(&[(Role::Gateway, gw), (Role::Server, net)]);
        let mut i = target(
            'i',
            "(i) http direct",
            http(up.http_url.clone(), None, true),
        );
        i.watched = watch(&[(Role::Server, net)]);
        targets.extend([e, f, g, h, i]);
        _upstreams = Some(up);
    }
    if let Some(up) = &_upstreams {
        let io = |pid| {
            if upstreams::reopened_stdin(pid) {
                "non-blocking pipes"
            } else {
                "blocking stdin/stdout"
            }
        };
        println!(
            "stdio server ({:?}): e reads it through {}, f through {}",
            args.stdio_io,
            io(up.direct.pid),
            io(up.gateway_stdio_pid)
        );
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "mcpgw-load: {} clients, {} rounds of {:?} per target (after {:?} warm-up), {cpus} CPUs, tools/call db:query",
        args.clients, args.rounds, args.duration, args.warmup
    );
    for round in 1..=args.rounds {
        for t in targets.iter_mut() {
            if !args.only.contains(t.letter) {
                continue;
            }
            measure(t, args.clients, args.warmup, args.duration).await;
            eprintln!("round {round}: {} done", t.name);
        }
    }
    let figs: Vec<Figures> = targets.iter_mut().map(figures).collect();
    let fig = |letter: char| -> Option<&Figures> {
        let i = targets.iter().position(|t| t.letter == letter)?;
        args.only.contains(letter).then_some(&figs[i])
    };
    if wants("abcd") {
        println!(
            "\n| target | requests | errors | p50 | p99 | throughput | CPU per request |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for (t, f) in targets.iter().zip(&figs) {
            if t.letter > 'd' || !args.only.contains(t.letter) {
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
    }
    if let (Some(a), Some(b), Some(c), Some(d)) = (fig('a'), fig('b'), fig('c'), fig('d')) {
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
    }
    if wants("efghi") {
        println!(
            "\n| target | requests | errors | p50 | p99 | throughput | CPU/call: clients | gateway | server |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let us = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.1} µs"));
        for (t, f) in targets.iter().zip(&figs) {
            if t.letter < 'e' || !args.only.contains(t.letter) {
                continue;
            }
            println!(
                "| {} | {} | {} | {:.0} µs | {:.0} µs | {:.0} req/s | {:.1} µs | {} | {} |",
                t.name,
                t.latencies_us.len(),
                t.errors,
                f.p50,
                f.p99,
                f.rps,
                f.cpu_us,
                us(f.gateway_us),
                us(f.server_us)
            );
        }
    }
    if let (Some(e), Some(f), Some(g), Some(h)) = (fig('e'), fig('f'), fig('g'), fig('h')) {
        let cpu = |x: &Figures, role: fn(&Figures) -> Option<f64>| role(x).unwrap_or(f64::NAN);
        let gw = |x: &Figures| x.gateway_us;
        let srv = |x: &Figures| x.server_us;
        println!("\n| ratio | value |\n|---|---:|");
        println!("| throughput f / e | {:.1} % |", 100.0 * f.rps / e.rps);
        println!("| p50 f / e | {:.2}× |", f.p50 / e.p50);
        println!("| added p50, f − e | {:.0} µs |", f.p50 - e.p50);
        println!("| added p99, f − e | {:.0} µs |", f.p99 - e.p99);
        println!(
            "| server CPU/call f / e | {:.2}× |",
            cpu(f, srv) / cpu(e, srv)
        );
        println!("| throughput f / g | {:.1} % |", 100.0 * f.rps / g.rps);
        println!("| p50 f − g | {:.0} µs |", f.p50 - g.p50);
        println!(
            "| gateway CPU/call f / g | {:.2}× |",
            cpu(f, gw) / cpu(g, gw)
        );
        println!(
            "| server CPU/call f / g | {:.2}× |",
            cpu(f, srv) / cpu(g, srv)
        );
        println!(
            "| gateway + server CPU/call f / g | {:.2}× |",
            (cpu(f, gw) + cpu(f, srv)) / (cpu(g, gw) + cpu(g, srv))
        );
        println!("| throughput h / g | {:.1} % |", 100.0 * h.rps / g.rps);
        println!("| p50 h − g | {:.0} µs |", h.p50 - g.p50);
        println!(
            "| gateway CPU/call h − g | {:.1} µs |",
            cpu(h, gw) - cpu(g, gw)
        );
        println!(
            "| server CPU/call h − g | {:.1} µs |",
            cpu(h, srv) - cpu(g, srv)
        );
        if let Some(i) = fig('i') {
            println!("| added p50 over HTTP, g − i | {:.0} µs |", g.p50 - i.p50);
            println!("| throughput g / i | {:.1} % |", 100.0 * g.rps / i.rps);
            println!(
                "| throughput e / i (stdio vs HTTP, no gateway) | {:.1} % |",
                100.0 * e.rps / i.rps
            );
            println!(
                "| server CPU/call e / i | {:.2}× |",
                cpu(e, srv) / cpu(i, srv)
            );
        }
    }
    if targets.iter().any(|t| t.errors > 0) {
        bail!("some requests failed: see the errors column");
    }
    Ok(())
}
