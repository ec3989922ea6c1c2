//! Targets (e)–(h): a stdio upstream and an HTTPS one, every party in a process of its own.
//!
//! - (e) `stdio direct`: this process spawns the demo `db` server in stdio mode (`mcpgw-load
//!   __serve-db stdio pipes|blocking`) and speaks MCP to it over its stdin/stdout as any stdio
//!   client does: `initialize` once, then the N clients' calls in flight together on the one
//!   pipe, told apart by their JSON-RPC ids ([`StdioClient`]);
//! - (f) `mcpgw → stdio`: a gateway process (`mcpgw-load __gateway DIR`: `mcpgw::run_with` with
//!   the full chain, as target c) whose server `db-stdio` is that same command, spawned by the
//!   gateway through its fence;
//! - (g) `mcpgw → http`: the same gateway, server `db-http`: the same tool served over Streamable
//!   HTTP by another process (`mcpgw-load __serve-db net DIR`);
//! - (h) `mcpgw → https`: the same gateway, server `db-https`: the same process's HTTPS listener
//!   (rustls, ring), its certificate signed by a test CA made at start with rcgen and given to
//!   the gateway as the server's `tls.ca_file`;
//! - (i) `http direct`: g's server spoken to directly, without the gateway.
//!
//! f, g, h and i are stateless 2026-07-28 `tools/call`s over HTTP (one keep-alive connection per
//! client), so every target runs the one tool with the same arguments and the stdio server sees
//! the same message in e and f. The stdio server reads and writes its pipes through rmcp's
//! `stdio_pipes()` (non-blocking, on the runtime's reactor; [`StdioIo::Pipes`], the default) or
//! its `stdio()` (tokio's stdin and stdout, every read and write a hand-off to a blocking-pool
//! thread; [`StdioIo::Blocking`]), the same in e and f. CPU per call comes from /proc/PID/stat (utime + stime) for the
//! gateway and the upstream process, and from getrusage for this process (the clients).

use anyhow::{Context as _, Result, bail};
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::{mpsc, oneshot};

/// The hidden mode that serves the demo `db` server: `stdio pipes|blocking`, or `net DIR` (HTTP
/// and HTTPS).
pub const SERVE_DB: &str = "__serve-db";
/// The hidden mode that runs a gateway on the database and policies in `DIR`.
pub const GATEWAY: &str = "__gateway";

/// Runs a hidden mode when the command line names one.
pub async fn hidden(args: &[String]) -> Option<Result<()>> {
    match args.get(1).map(String::as_str) {
        Some(SERVE_DB) => Some(serve_db(&args[2..]).await),
        Some(GATEWAY) => Some(match args.get(2) {
            Some(dir) => run_gateway(Path::new(dir)).await,
            None => Err(anyhow::anyhow!("{GATEWAY} DIR")),
        }),
        _ => None,
    }
}

/// Resolves when stdin reaches its end: the parent closed it, or went away.
async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
}

async fn serve_db(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("stdio") if args.len() == 2 => {
            use rmcp::ServiceExt as _;
            let db = mcpgw::demo::Db::new();
            let service = match args[1].as_str() {
                "pipes" => db.serve(rmcp::transport::stdio_pipes()).await,
                "blocking" => db.serve(rmcp::transport::stdio()).await,
                other => bail!("{SERVE_DB} stdio: {other:?} is not pipes or blocking"),
            }
            .context("the client's initialize over stdio")?;
            service.waiting().await?;
            Ok(())
        }
        Some("net") if args.len() == 2 => serve_net(Path::new(&args[1])).await,
        _ => bail!("{SERVE_DB} stdio pipes|blocking | {SERVE_DB} net DIR"),
    }
}

/// The demo `db` server (stateless) on an HTTP and an HTTPS port of loopback, one service behind
/// both; prints `HTTP_URL HTTPS_URL`, serves until stdin closes.
async fn serve_net(dir: &Path) -> Result<()> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    // As mcpgw::demo::serve configures it.
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_sse_keep_alive(Some(Duration::from_secs(15)));
    let service = StreamableHttpService::new(
        || Ok(mcpgw::demo::Db::new()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let certs = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .context("server.crt")?
        .collect::<Result<Vec<_>, _>>()
        .context("server.crt")?;
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).context("server.key")?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut out = tokio::io::stdout();
    out.write_all(
        format!(
            "http://{}/mcp https://{}/mcp\n",
            http.local_addr()?,
            https.local_addr()?
        )
        .as_bytes(),
    )
    .await?;
    out.flush().await?;
    tokio::spawn(accept(http, None, service.clone()));
    tokio::spawn(accept(https, Some(tls), service));
    stdin_closed().await;
    Ok(())
}

#[allow(deprecated)] // as mcpgw::tls::provider: ring, not the default aws-lc-rs
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn accept<S>(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: rmcp::transport::streamable_http_server::StreamableHttpService<
        S,
        rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
    >,
) where
    S: rmcp::ServerHandler + Send + 'static,
{
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (service, tls) = (service.clone(), tls.clone());
        let handler =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut service = service.clone();
                async move {
                    let resp = tower_service::Service::call(&mut service, req).await?;
                    Ok::<_, Infallible>(
                        resp.map(|b| b.map_err(|e| -> BoxError { e.into() }).boxed()),
                    )
                }
            });
        tokio::spawn(async move {
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(tcp), handler).await;
                }
                Some(tls) => {
                    if let Ok(stream) = tls.accept(tcp).await {
                        let _ = http.serve_connection(TokioIo::new(stream), handler).await;
                    }
                }
            }
        });
    }
}

/// A gateway on `dir/mcpgw.db` (set up by [`Upstreams::start`]) with `dir/policies`, the full
/// chain as target c: token auth, allowlist, secrets-guard, audit to SQLite. Prints
/// `LISTEN http://ADDR/mcp/`, serves until stdin closes (then stops its stdio servers).
async fn run_gateway(dir: &Path) -> Result<()> {
    let mut config = mcpgw::config::Config::try_from(mcpgw::config::RawConfig::default())?;
    config.database = format!("sqlite://{}", dir.join("mcpgw.db").display());
    config.data_dir = dir.to_owned();
    config.admin_listen = None;
    config.policy.dir = Some(dir.join("policies"));
    config.policy.cache_dir = Some(dir.join("policy-cache"));
    config.audit.enabled = true;
    let mcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut out = tokio::io::stdout();
    out.write_all(format!("LISTEN http://{}/mcp/\n", mcp.local_addr()?).as_bytes())
        .await?;
    out.flush().await?;
    mcpgw::run_with(
        config,
        mcpgw::Listeners { mcp, admin: None },
        stdin_closed(),
    )
    .await
}

/// A process of ours, its stdin held open (closing it is its cue to exit, so it also goes when
/// this process dies), its stdout's first line read and the rest drained.
struct Spawned {
    pid: u32,
    _process: tokio::process::Child,
    first_line: String,
}

async fn spawn_ours(args: &[&str], what: &str) -> Result<Spawned> {
    let exe = std::env::current_exe()?;
    let mut process = tokio::process::Command::new(exe)
        .args(args)
        .env("MCPGW_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("spawn {what}"))?;
    let pid = process.id().context("pid")?;
    let stdout = process.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first_line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if !line.is_empty() {
                return Ok(line);
            }
        }
        bail!("{what} exited before it was ready")
    })
    .await
    .with_context(|| format!("{what} did not come up"))??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Spawned {
        pid,
        _process: process,
        first_line,
    })
}

/// How the stdio server reads and writes its pipes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StdioIo {
    /// rmcp's `stdio_pipes()`: non-blocking pipes on the runtime's reactor (rmcp's advice when
    /// both streams are pipes).
    Pipes,
    /// rmcp's `stdio()`: tokio's stdin and stdout, each read and write on a blocking-pool thread.
    Blocking,
}

impl StdioIo {
    fn arg(self) -> &'static str {
        match self {
            StdioIo::Pipes => "pipes",
            StdioIo::Blocking => "blocking",
        }
    }
}

/// Whether process `pid` reads its stdin through a descriptor of its own (rmcp's `stdio_pipes`
/// reopens stdin and stdout through /proc/self/fd, and falls back to the blocking handles
/// silently when it cannot).
pub fn reopened_stdin(pid: u32) -> bool {
    let link = |fd: &str| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok();
    let Some(stdin) = link("0") else { return false };
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|fd| fd.parse::<u32>().is_ok_and(|n| n > 2))
        .any(|fd| link(&fd).as_ref() == Some(&stdin))
}

/// Everything targets e–i need, up and answering.
pub struct Upstreams {
    _dir: tempfile::TempDir,
    _net: Spawned,
    _gateway: Spawned,
    /// The gateway's process.
    pub gateway_pid: u32,
    /// The HTTP(S) upstream's process.
    pub net_pid: u32,
    /// The stdio server the gateway spawned.
    pub gateway_stdio_pid: u32,
    /// The HTTP upstream's own URL (target i).
    pub http_url: String,
    /// `http://ADDR/mcp/` of the gateway: append the server name.
    pub gateway_base: String,
    /// The member's token.
    pub token: String,
    /// Target e's client, with its own server process.
    pub direct: Arc<StdioClient>,
}

/// The stdio server's name, the HTTP one's and the HTTPS one's in the gateway's workspace.
pub const SERVERS: [&str; 3] = ["db-stdio", "db-http", "db-https"];

impl Upstreams {
    /// Makes the CA and certificate, starts the HTTP(S) upstream and the gateway, checks that
    /// each of f, g and h answers, and starts e's stdio server.
    /// `call_ok(url, token)`: whether one call through `url` succeeds (main.rs makes it).
    /// `run_as`: the fence's user for f's server (when this process is root), else its default.
    pub async fn start(
        io: StdioIo,
        run_as: Option<&str>,
        call_ok: impl AsyncFn(&str, &str) -> bool,
    ) -> Result<Upstreams> {
        let dir = tempfile::tempdir()?;
        let ca_file = make_certificates(dir.path())?;
        let net = spawn_ours(
            &[SERVE_DB, "net", &dir.path().display().to_string()],
            "the HTTP(S) upstream",
        )
        .await?;
        let Some((http_url, https_url)) = net.first_line.split_once(' ') else {
            bail!("the HTTP(S) upstream said {:?}", net.first_line);
        };
        let gw_dir = dir.path().join("gateway");
        std::fs::create_dir_all(gw_dir.join("policies"))?;
        std::fs::write(
            gw_dir.join("policies").join("10-secrets-guard.wasm"),
            mcpgw::policy::SECRETS_GUARD,
        )?;
        let exe = std::env::current_exe()?;
        let token = {
            let database = format!("sqlite://{}", gw_dir.join("mcpgw.db").display());
            let store = mcpgw::store::Store::connect(&database).await?;
            store.workspace_create("load").await?;
            let mut stdio = serde_json::json!({"command": exe.display().to_string(),
                "args": [SERVE_DB, "stdio", io.arg()]});
            if let Some(user) = run_as {
                stdio["fence"] = serde_json::json!({"run_as": user});
            }
            let specs = [
                serde_json::json!({"name": SERVERS[0], "stdio": stdio}),
                serde_json::json!({"name": SERVERS[1], "url": http_url}),
                serde_json::json!({"name": SERVERS[2], "url": https_url,
                    "tls": {"ca_file": ca_file.display().to_string()}}),
            ];
            for spec in specs {
                let spec = mcpgw::store::NewServer::from_json(spec.to_string().as_bytes())?;
                store.server_add_spec("load", spec).await?;
            }
            store.member_add("load", "m").await?;
            let grants: Vec<String> = SERVERS.iter().map(|s| format!("{s}:*")).collect();
            store.grant_add("load", "m", &grants).await?;
            store.enforce_set("load", true).await?;
            store.token_issue("load", Some("m"), None).await?.token
        };
        let gateway = spawn_ours(&[GATEWAY, &gw_dir.display().to_string()], "the gateway").await?;
        let Some(base) = gateway.first_line.strip_prefix("LISTEN ") else {
            bail!("the gateway said {:?}", gateway.first_line);
        };
        let gateway_base = base.to_owned();
        // Each server answers through the gateway (the first call starts the stdio process).
        for server in SERVERS {
            let url = format!("{gateway_base}{server}");
            let mut up = false;
            for _ in 0..500 {
                if call_ok(&url, &token).await {
                    up = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !up {
                bail!("{url} does not answer the call");
            }
        }
        let children = children_of(gateway.pid);
        let [gateway_stdio_pid] = children[..] else {
            bail!(
                "the gateway (pid {}) should have one child, its stdio server: {children:?}",
                gateway.pid
            );
        };
        let direct = StdioClient::spawn(io).await?;
        Ok(Upstreams {
            _dir: dir,
            gateway_pid: gateway.pid,
            net_pid: net.pid,
            gateway_stdio_pid,
            http_url: http_url.to_owned(),
            gateway_base,
            token,
            direct,
            _net: net,
            _gateway: gateway,
        })
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost in `dir` (`ca.pem`, `server.crt`,
/// `server.key`); the CA's path.
fn make_certificates(dir: &Path) -> Result<PathBuf> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "mcpgw-load test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "mcpgw-load upstream");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &issuer)?;
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem())?;
    std::fs::write(dir.join("server.crt"), cert.pem())?;
    std::fs::write(dir.join("server.key"), key.serialize_pem())?;
    Ok(ca_file)
}

/// The pids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| stat_fields(child).is_some_and(|f| f.get(1) == Some(&pid.to_string())))
        .collect()
}

/// The fields of /proc/PID/stat after the command name (`state` first).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU time (user + system, every thread) `pid` has used so far, from /proc/PID/stat.
pub fn process_cpu_of(pid: u32) -> Option<Duration> {
    let f = stat_fields(pid)?;
    // utime and stime are fields 14 and 15 of the line; `state` (field 3) is f[0].
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// An answer (or a message) of the stdio server: only what the client needs of it.
#[derive(serde::Deserialize)]
struct Answer {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    method: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    result: Option<AnswerResult>,
}

#[derive(serde::Deserialize)]
struct AnswerResult {
    #[serde(default, rename = "isError")]
    is_error: bool,
}

/// Target e's client: one stdio server process, many requests in flight on its pipe. A writer
/// task writes whatever is queued in one `write`; a reader task hands each answer to the call
/// with its id.
pub struct StdioClient {
    /// The server's pid.
    pub pid: u32,
    _process: tokio::process::Child,
    stdin: mpsc::UnboundedSender<Vec<u8>>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<bool>>>>,
    next_id: AtomicU64,
}

impl StdioClient {
    async fn spawn(io: StdioIo) -> Result<Arc<StdioClient>> {
        let exe = std::env::current_exe()?;
        let mut process = tokio::process::Command::new(exe)
            .args([SERVE_DB, "stdio", io.arg()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn the stdio server")?;
        let pid = process.id().context("pid")?;
        let mut stdin = process.stdin.take().context("stdin")?;
        let stdout = process.stdout.take().context("stdout")?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(64 << 10);
            while let Some(first) = rx.recv().await {
                buf.clear();
                buf.extend_from_slice(&first);
                while let Ok(more) = rx.try_recv() {
                    buf.extend_from_slice(&more);
                }
                if stdin.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<bool>>>> = Arc::default();
        let routes = pending.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(64 << 10, stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let Ok(answer) = serde_json::from_slice::<Answer>(&line) else {
                    continue;
                };
                if answer.method.is_some() {
                    continue; // a notification or a request of the server: none expected
                }
                let Some(id) = answer.id else { continue };
                let tx = routes.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                if let Some(tx) = tx {
                    let _ = tx.send(answer.result.is_some_and(|r| !r.is_error));
                }
            }
            // The server is gone: every call in flight fails.
            routes.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        let client = Arc::new(StdioClient {
            pid,
            _process: process,
            stdin: tx,
            pending,
            next_id: AtomicU64::new(1),
        });
        let init = serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "mcpgw-load", "version": env!("CARGO_PKG_VERSION")}}});
        let ok = tokio::time::timeout(Duration::from_secs(30), client.send(0, &init))
            .await
            .context("no initialize answer")?;
        if !ok {
            bail!("the stdio server refused initialize");
        }
        let mut initialized = serde_json::to_vec(
            &serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )?;
        initialized.push(b'\n');
        client
            .stdin
            .send(initialized)
            .map_err(|_| anyhow::anyhow!("the stdio server went away"))?;
        Ok(client)
    }

    /// A fresh request id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends request `message` (whose id is `id`) and waits for its answer: whether it is a
    /// result that is not a tool error.
    pub async fn send(&self, id: u64, message: &serde_json::Value) -> bool {
        let Ok(mut line) = serde_json::to_vec(message) else {
            return false;
        };
        line.push(b'\n');
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        if self.stdin.send(line).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}
