//! The admin console: the workspace's Security tab in a browser, served under `/console` by the
//! admin listener (`/` redirects here). Server-rendered HTML from templates compiled into the
//! binary (askama, `templates/console/`), forms that work without JavaScript, and one small
//! script of our own (`console.js`: copy buttons, the allowlist editor's live preview).
//!
//! Sign-in is with the admin token (constant-time, repeated failures close sign-in for a minute)
//! and gives a session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` when the listener has TLS,
//! 8 hours). Every state change is a POST carrying the session's CSRF token. Every answer carries
//! a `Content-Security-Policy` allowing only this origin's script and style (no inline script),
//! `X-Frame-Options: DENY`, `Cache-Control: no-store` and a `Server-Timing` header.
//!
//! Every page is backed by what the admin API and CLI use: the store's operations, the identity
//! snapshot, the live policy chain (the allowlist preview asks it exactly as `tools/list` does),
//! the audit queries, and the gateway's own MCP client for each server's tools.

pub mod session;
pub mod tools;
mod views;

use crate::admin::Admin;
use crate::audit;
use crate::policy::Principal;
use crate::store;
use askama::Template;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use session::{COOKIE, Flash, LOGIN_COOKIE, Sessions};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use views::Chrome;

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Audit records per page.
const AUDIT_PAGE: i64 = 50;
/// Most records one export holds.
const EXPORT_MAX: i64 = 100_000;
/// Most members listed on the Members page (a search narrows the rest).
const MEMBERS_SHOWN: usize = 500;
const DECISIONS: &[&str] = &["", "allow", "would-deny", "deny", "error"];
const STATUSES: &[&str] = &[
    "",
    "success",
    "tool-error",
    "denied",
    "upstream-error",
    "timeout",
    "cancelled",
];

/// Console errors; each becomes an HTML page with its status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The audit trail could not be read.
    #[error(transparent)]
    Audit(#[from] audit::Error),
    /// A template failed to render.
    #[error("the page could not be rendered: {0}")]
    Render(#[from] askama::Error),
    /// The form or query is not what the page takes.
    #[error("{0}")]
    BadRequest(String),
    /// No such page or workspace.
    #[error("no such page")]
    NotFound,
    /// A state change without the session's CSRF token.
    #[error("the form's CSRF token is missing or wrong: reload the page and try again")]
    Csrf,
    /// Not signed in.
    #[error("sign in first")]
    SignedOut,
    /// The body is over the admin limit.
    #[error("request body too large")]
    TooLarge,
    /// A signed-in request another site made the browser send.
    #[error("requests from other sites are refused")]
    CrossSite,
}

impl Error {
    fn status(&self) -> StatusCode {
        match self {
            Error::Store(e) | Error::Audit(audit::Error::Store(e)) => match e {
                store::Error::Duplicate(..) => StatusCode::CONFLICT,
                store::Error::NotFound(..) => StatusCode::NOT_FOUND,
                store::Error::Invalid(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Error::Audit(_) | Error::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::Csrf | Error::CrossSite => StatusCode::FORBIDDEN,
            Error::SignedOut => StatusCode::UNAUTHORIZED,
            Error::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// What the user is told: an internal failure's details stay in the log.
    fn message(&self) -> String {
        if self.status() == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "console request failed");
            "internal error; see the gateway log".into()
        } else {
            self.to_string()
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;
type Resp = Response<Full<Bytes>>;

/// The last chain verification of a workspace, run from the Audit page.
#[derive(Clone)]
enum Verified {
    Running(i64),
    Done {
        at_ms: i64,
        ok: bool,
        detail: String,
    },
}

/// The console's own state (sessions, tool listings, verifications); everything else is the
/// admin API's.
pub struct Console {
    sessions: Sessions,
    tools: tools::Tools,
    verified: Arc<Mutex<HashMap<String, Verified>>>,
    secure: bool,
    mcp_url: String,
    /// Exports running at once (each holds up to [`EXPORT_MAX`] records in memory).
    exports: tokio::sync::Semaphore,
}

/// A form or query: its pairs in order (a checkbox list repeats its name).
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(text: &str) -> Form {
        Form(crate::admin::query_params(text))
    }

    fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Unix ms as `2026-12-07 13:45:02Z`.
fn when(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replacen('T', " ", 1)
}

fn when_opt(ms: Option<i64>, none: &str) -> String {
    ms.map_or_else(|| none.to_owned(), when)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A path segment, percent-decoded; `None` when it is not UTF-8 or decodes to a character no
/// name holds and a link cannot carry as is (`/`, `?`, `#`, `%`, controls).
fn decode_segment(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            let (h, l) = (hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?);
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).ok()?;
    let odd = |c: char| matches!(c, '/' | '?' | '#' | '%') || c.is_control();
    (!text.chars().any(odd)).then_some(text)
}

/// The value of cookie `name`.
fn cookie<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn html(status: StatusCode, body: String) -> Resp {
    response(status, "text/html; charset=utf-8", body)
}

fn redirect(to: &str) -> Resp {
    let mut resp = response(StatusCode::SEE_OTHER, "text/plain", "");
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Patterns as one string, sorted and without duplicates.
fn patterns_of(form: &Form) -> Vec<String> {
    let mut set: BTreeSet<String> = form.all("pattern").map(str::to_owned).collect();
    set.extend(
        form.get("globs")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned),
    );
    set.into_iter().collect()
}

/// Whose allowlist the editor edits.
enum Subject {
    Member(String),
    Role(String),
}

impl Subject {
    fn kind(&self) -> &'static str {
        match self {
            Subject::Member(_) => "member",
            Subject::Role(_) => "role",
        }
    }

    fn name(&self) -> &str {
        match self {
            Subject::Member(n) | Subject::Role(n) => n,
        }
    }

    fn url(&self, ws: &str) -> String {
        match self {
            Subject::Member(m) => format!("/console/w/{ws}/members/{m}/allowlist"),
            Subject::Role(r) => format!("/console/w/{ws}/roles/{r}/allowlist"),
        }
    }
}

impl Console {
    /// The console of an admin listener; `secure`: the listener has TLS (cookies get `Secure`);
    /// `mcp_url`: the `/mcp` URL client configurations point at.
    pub fn new(client: crate::upstream::client::Client, secure: bool, mcp_url: String) -> Console {
        Console {
            sessions: Sessions::default(),
            tools: tools::Tools::new(client),
            verified: Arc::new(Mutex::new(HashMap::new())),
            secure,
            mcp_url,
            exports: tokio::sync::Semaphore::new(2),
        }
    }

    /// Serves one request under `/console` (`rest`: the path's segments after it).
    pub async fn handle(&self, admin: &Admin, req: Request<Incoming>, rest: &[&str]) -> Resp {
        let start = Instant::now();
        // A segment that does not decode to a name answers 404 (no route has a NUL in it).
        let segs: Option<Vec<String>> = rest.iter().map(|s| decode_segment(s)).collect();
        let segs = segs.unwrap_or_else(|| vec!["\u{0}".to_owned()]);
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let mut resp = match self.route(admin, req, &segs).await {
            Ok(r) => r,
            Err(Error::SignedOut) => redirect("/console/login"),
            Err(e) => self.error_page(&e),
        };
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        let took = start.elapsed().as_secs_f64() * 1000.0;
        if let Ok(v) = HeaderValue::from_str(&format!("app;dur={took:.2}")) {
            h.insert("server-timing", v);
        }
        resp
    }

    fn error_page(&self, e: &Error) -> Resp {
        let status = e.status();
        let page = views::ErrorPage {
            chrome: Chrome {
                title: status.to_string(),
                ws: None,
                tab: "",
                csrf: String::new(),
                flash: None,
                signed_in: false,
            },
            status: status.as_u16(),
            message: e.message(),
        };
        html(status, page.render().unwrap_or_else(|_| e.message()))
    }

    fn cookie_header(&self, name: &str, value: &str, max_age: u64) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ))
        .ok()
    }

    async fn route(&self, admin: &Admin, req: Request<Incoming>, segs: &[&str]) -> Result<Resp> {
        let method = req.method().clone();
        match (&method, segs) {
            (&Method::GET, []) => return Ok(redirect("/console/workspaces")),
            (&Method::GET, ["static", file]) => {
                let (ctype, body) = match *file {
                    "console.css" => ("text/css; charset=utf-8", CSS),
                    "console.js" => ("text/javascript; charset=utf-8", JS),
                    _ => return Err(Error::NotFound),
                };
                let mut r = response(StatusCode::OK, ctype, body);
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("private, max-age=300"),
                );
                return Ok(r);
            }
            (&Method::GET, ["login"]) => return self.login_page(None, StatusCode::OK),
            (&Method::POST, ["login"]) => return self.login(admin, req).await,
            _ => {}
        }
        // A signed-in request must come from the console itself (or be typed in): the browser
        // says where it comes from. SameSite does not tell ports apart, so a page on another
        // loopback port could otherwise make the browser GET an export with the cookie.
        if let Some(site) = req.headers().get("sec-fetch-site")
            && !matches!(site.as_bytes(), b"same-origin" | b"none")
        {
            return Err(Error::CrossSite);
        }
        let sid = cookie(&req, COOKIE).unwrap_or("").to_owned();
        let Some((session, flash)) = self.sessions.get(&sid) else {
            return Err(Error::SignedOut);
        };
        let snapshot = admin.directory.snapshot();
        if let ["w", ws, ..] = segs
            && snapshot.workspace(ws).is_none()
        {
            return Err(Error::Store(store::Error::NotFound(
                "workspace",
                (*ws).to_owned(),
            )));
        }
        if method == Method::POST {
            let body = crate::admin::read_body(req).await.map_err(|e| match e {
                crate::admin::Error::TooLarge => Error::TooLarge,
                e => Error::BadRequest(e.to_string()),
            })?;
            let form = Form::parse(&String::from_utf8_lossy(&body));
            if !session::same_secret(form.get("csrf"), &session.csrf) {
                tracing::warn!(path = %segs.join("/"), "console form refused: CSRF token missing or wrong");
                return Err(Error::Csrf);
            }
            return self.post(admin, &sid, segs, &form).await;
        }
        if method != Method::GET {
            return Err(Error::NotFound);
        }
        let query = Form::parse(req.uri().query().unwrap_or(""));
        let chrome = |title: String, ws: Option<&str>, tab: &'static str| Chrome {
            title,
            ws: ws.map(str::to_owned),
            tab,
            csrf: session.csrf.clone(),
            flash: flash.clone(),
            signed_in: true,
        };
        let page = |t: &dyn askama::DynTemplate| -> Result<Resp> {
            Ok(html(StatusCode::OK, t.dyn_render()?))
        };
        match segs {
            ["workspaces"] => {
                let rows = admin
                    .directory
                    .store()
                    .workspace_list()
                    .await?
                    .into_iter()
                    .map(|w| views::WorkspaceRow {
                        servers: snapshot.workspace(&w.name).map_or(0, |v| v.servers.len()),
                        enforce: w.enforce,
                        created: when(w.created_ms),
                        name: w.name,
                    })
                    .collect();
                page(&views::Workspaces {
                    chrome: chrome("Workspaces".into(), None, "workspaces"),
                    rows,
                })
            }
            ["w", ws] => Ok(redirect(&format!("/console/w/{ws}/members"))),
            ["w", ws, "members"] => {
                let store = admin.directory.store();
                let (members, tokens, roles) = futures_util::future::try_join3(
                    store.member_list(ws),
                    store.token_list(ws),
                    store.role_list(ws),
                )
                .await?;
                let mut per_member: HashMap<&str, usize> = HashMap::new();
                for t in &tokens {
                    if let Some(m) = &t.member {
                        *per_member.entry(m).or_default() += 1;
                    }
                }
                let q = query.get("q").trim().to_lowercase();
                let total = members.len();
                let rows: Vec<views::MemberRow> = members
                    .iter()
                    .filter(|m| q.is_empty() || m.name.to_lowercase().contains(&q))
                    .take(MEMBERS_SHOWN)
                    .map(|m| views::MemberRow {
                        name: m.name.clone(),
                        disabled: m.disabled_ms.is_some(),
                        roles: m.roles.join(", "),
                        tokens: per_member.get(m.name.as_str()).copied().unwrap_or(0),
                        created: when(m.created_ms),
                    })
                    .collect();
                page(&views::Members {
                    chrome: chrome(format!("Members of {ws}"), Some(ws), "members"),
                    ws: (*ws).to_owned(),
                    q: query.get("q").to_owned(),
                    shown: rows.len(),
                    rows,
                    total,
                    roles: roles
                        .into_iter()
                        .map(|r| views::RoleRow {
                            name: r.name,
                            patterns: r.patterns.join(" "),
                            members: r.members.len(),
                        })
                        .collect(),
                })
            }
            ["w", ws, "members", name] => {
                let store = admin.directory.store();
                let (members, tokens, roles, grants) = futures_util::future::try_join4(
                    store.member_list(ws),
                    store.token_list(ws),
                    store.role_list(ws),
                    store.grant_list(ws, Some(name)),
                )
                .await?;
                let m = members
                    .into_iter()
                    .find(|m| m.name == *name)
                    .ok_or_else(|| store::Error::NotFound("member", (*name).to_owned()))?;
                let effective = snapshot
                    .member(ws, name)
                    .map(|v| v.grants.clone())
                    .unwrap_or_default();
                page(&views::Member {
                    chrome: chrome(format!("{name} in {ws}"), Some(ws), "members"),
                    ws: (*ws).to_owned(),
                    name: m.name.clone(),
                    disabled: m.disabled_ms.is_some(),
                    created: when(m.created_ms),
                    tokens: tokens
                        .into_iter()
                        .filter(|t| t.member.as_deref() == Some(name))
                        .map(|t| views::TokenRow {
                            id: t.id,
                            prefix: t.prefix,
                            created: when(t.created_ms),
                            expires: when_opt(t.expires_ms, "never"),
                            last_used: when_opt(t.last_used_ms, "not yet"),
                        })
                        .collect(),
                    other_roles: roles
                        .into_iter()
                        .map(|r| r.name)
                        .filter(|r| !m.roles.contains(r))
                        .collect(),
                    roles: m.roles,
                    own: grants.into_iter().map(|g| g.pattern).collect(),
                    effective,
                })
            }
            ["w", ws, kind @ ("members" | "roles"), name, "allowlist"] => {
                let subject = if *kind == "members" {
                    Subject::Member((*name).to_owned())
                } else {
                    Subject::Role((*name).to_owned())
                };
                let t = self
                    .editor(
                        admin,
                        &subject,
                        ws,
                        None,
                        chrome(String::new(), Some(ws), "members"),
                    )
                    .await?;
                page(&t)
            }
            ["w", ws, "members", name, "allowlist", "preview"]
            | ["w", ws, "roles", name, "allowlist", "preview"] => {
                let subject = if segs[2] == "members" {
                    Subject::Member((*name).to_owned())
                } else {
                    Subject::Role((*name).to_owned())
                };
                let patterns = patterns_of(&query);
                let (preview, enforce) = self.preview(admin, &subject, ws, &patterns).await?;
                page(&views::PreviewFragment { preview, enforce })
            }
            ["w", ws, "enforcement"] => {
                let enforce = snapshot.workspace(ws).is_some_and(|w| w.enforce);
                let since = store::now_ms() - 24 * 3600 * 1000;
                let rows = audit::store::would_deny(admin.directory.store().db(), ws, since, 200)
                    .await?
                    .into_iter()
                    .map(|r| views::WouldDenyRow {
                        member: r.member.unwrap_or_else(|| "(workspace token)".into()),
                        server: r.server,
                        tool: r.tool,
                        calls: r.calls,
                        last: when(r.last_ms),
                    })
                    .collect();
                page(&views::Enforcement {
                    chrome: chrome(format!("Enforcement in {ws}"), Some(ws), "enforcement"),
                    ws: (*ws).to_owned(),
                    enforce,
                    rows,
                })
            }
            ["w", ws, "audit"] => {
                let t = self
                    .audit_page(
                        admin,
                        ws,
                        &query,
                        chrome(format!("Audit of {ws}"), Some(ws), "audit"),
                    )
                    .await?;
                page(&t)
            }
            ["w", ws, "audit", "export"] => self.export(admin, ws, &query).await,
            ["w", ws, "servers"] => {
                let t = self
                    .servers_page(
                        admin,
                        ws,
                        chrome(format!("Servers of {ws}"), Some(ws), "servers"),
                    )
                    .await?;
                page(&t)
            }
            ["w", ws, "servers", "_new"] => page(&views::ServerForm {
                chrome: chrome("Add a server".into(), Some(ws), "servers"),
                ws: (*ws).to_owned(),
                editing: false,
                form: views::ServerFormValues {
                    kind: "http".into(),
                    ..Default::default()
                },
                error: None,
            }),
            ["w", ws, "servers", name] => {
                let server = admin
                    .directory
                    .store()
                    .server_list(ws)
                    .await?
                    .into_iter()
                    .find(|s| s.name == *name)
                    .ok_or_else(|| store::Error::NotFound("server", (*name).to_owned()))?;
                let (form, error) = form_of(&server);
                page(&views::ServerForm {
                    chrome: chrome(format!("Server {name}"), Some(ws), "servers"),
                    ws: (*ws).to_owned(),
                    editing: true,
                    form,
                    error,
                })
            }
            ["policies"] => {
                let status = admin.policies.status();
                page(&views::Policies {
                    chrome: chrome("Policy chain".into(), None, "policies"),
                    modules: status
                        .modules
                        .into_iter()
                        .map(|m| {
                            let phases: Vec<&str> = [
                                (m.phases.list, "list"),
                                (m.phases.call, "call"),
                                (m.phases.result, "result"),
                            ]
                            .into_iter()
                            .filter_map(|(on, p)| on.then_some(p))
                            .collect();
                            views::ModuleRow {
                                digest_short: m.digest.chars().take(12).collect(),
                                digest: m.digest,
                                name: m.name,
                                version: m.version,
                                source: m.source,
                                phases: phases.join(", "),
                                loaded: when(m.loaded_at_ms as i64),
                                decisions: m.decisions,
                                denies: m.denies,
                                errors: m.errors,
                                skipped: m.skipped,
                                last_error: m.last_error.unwrap_or_default(),
                            }
                        })
                        .collect(),
                    rejected: status.rejected,
                })
            }
            _ => Err(Error::NotFound),
        }
    }

    fn login_page(&self, error: Option<String>, status: StatusCode) -> Result<Resp> {
        let csrf = session::random_token().ok_or_else(|| {
            Error::Store(store::Error::Invalid(
                "no randomness for a sign-in form".into(),
            ))
        })?;
        let page = views::Login {
            chrome: Chrome {
                title: "Sign in".into(),
                ws: None,
                tab: "",
                csrf: String::new(),
                flash: None,
                signed_in: false,
            },
            login_csrf: csrf.clone(),
            error,
        };
        let mut resp = html(status, page.render()?);
        if let Some(c) = self.cookie_header(LOGIN_COOKIE, &csrf, 3600) {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        Ok(resp)
    }

    async fn login(&self, admin: &Admin, req: Request<Incoming>) -> Result<Resp> {
        // The sign-in form's own CSRF defence: the token in its hidden field must be the one
        // set in its cookie (a cross-site form can set neither).
        let expected = cookie(&req, LOGIN_COOKIE).unwrap_or("").to_owned();
        let body = crate::admin::read_body(req)
            .await
            .map_err(|_| Error::TooLarge)?;
        let form = Form::parse(&String::from_utf8_lossy(&body));
        if expected.is_empty() || !session::same_secret(form.get("csrf"), &expected) {
            return Err(Error::Csrf);
        }
        if !session::same_secret(form.get("token"), admin.token.expose()) {
            // After many failures, wrong tokens are answered 429 and no longer logged one by
            // one; the right token always signs in (a flood of wrong ones locks nobody out).
            if !self.sessions.sign_in_open() {
                return self.login_page(
                    Some("Too many failed sign-ins: wait a minute and try again.".into()),
                    StatusCode::TOO_MANY_REQUESTS,
                );
            }
            self.sessions.failed_sign_in();
            tracing::warn!("console sign-in failed: wrong admin token");
            return self.login_page(
                Some("That is not the admin token.".into()),
                StatusCode::UNAUTHORIZED,
            );
        }
        let id = self.sessions.start().ok_or_else(|| {
            Error::Store(store::Error::Invalid("no randomness for a session".into()))
        })?;
        tracing::info!("console sign-in");
        let mut resp = redirect("/console/workspaces");
        let max_age = session::SESSION_TTL.as_secs();
        if let Some(c) = self.cookie_header(COOKIE, &id, max_age) {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        if let Some(c) = self.cookie_header(LOGIN_COOKIE, "", 0) {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        Ok(resp)
    }

    /// A state change: done through the store (then made to hold at once, as the API does),
    /// answered by a redirect with a message (or by a page, for a token issued).
    async fn post(&self, admin: &Admin, sid: &str, segs: &[&str], form: &Form) -> Result<Resp> {
        let store = admin.directory.store();
        let back: String;
        let done: Result<String> = match segs {
            ["logout"] => {
                self.sessions.end(sid);
                let mut resp = redirect("/console/login");
                if let Some(c) = self.cookie_header(COOKIE, "", 0) {
                    resp.headers_mut().append(header::SET_COOKIE, c);
                }
                return Ok(resp);
            }
            ["workspaces"] => {
                let name = form.get("name").trim();
                match store.workspace_create(name).await {
                    Ok(_) => {
                        back = format!("/console/w/{name}/members");
                        Ok(format!("Workspace {name} created; enforcement is off."))
                    }
                    Err(e) => {
                        back = "/console/workspaces".into();
                        Err(e.into())
                    }
                }
            }
            ["w", ws, "members"] => {
                let name = form.get("name").trim();
                match store.member_add(ws, name).await {
                    Ok(_) => {
                        back = format!("/console/w/{ws}/members/{name}");
                        Ok(format!("Member {name} added. Issue them a token below."))
                    }
                    Err(e) => {
                        back = format!("/console/w/{ws}/members");
                        Err(e.into())
                    }
                }
            }
            ["w", ws, "members", name, "disabled"] => {
                back = format!("/console/w/{ws}/members/{name}");
                let disabled = form.get("disabled") == "true";
                store
                    .member_set_disabled(ws, name, disabled)
                    .await
                    .map(|()| {
                        if disabled {
                            format!("{name} is disabled: every credential of theirs is refused.")
                        } else {
                            format!("{name} is enabled.")
                        }
                    })
                    .map_err(Error::from)
            }
            ["w", ws, "members", name, "tokens"] => {
                back = format!("/console/w/{ws}/members/{name}");
                let ttl = match form.get("expires") {
                    "" => None,
                    e => Some(store::parse_duration(e)?),
                };
                match store.token_issue(ws, Some(name), ttl).await {
                    Ok(issued) => {
                        admin.changed().await;
                        tracing::info!(workspace = %ws, member = %name, token_id = %issued.info.id, "console issued a token");
                        let page = views::Issued {
                            chrome: Chrome {
                                title: format!("Token for {name}"),
                                ws: Some((*ws).to_owned()),
                                tab: "members",
                                csrf: String::new(),
                                flash: None,
                                signed_in: true,
                            },
                            ws: (*ws).to_owned(),
                            member: (*name).to_owned(),
                            configs: crate::clients::configs(&self.mcp_url, &issued.token),
                            token: issued.token,
                            token_id: issued.info.id,
                            expires: issued.info.expires_ms.map_or_else(
                                || "never expires".to_owned(),
                                |ms| format!("expires {}", when(ms)),
                            ),
                            url: self.mcp_url.clone(),
                        };
                        let mut page = page;
                        // The sign-out form needs the session's token.
                        if let Some((s, _)) = self.sessions.get(sid) {
                            page.chrome.csrf = s.csrf;
                        }
                        return Ok(html(StatusCode::OK, page.render()?));
                    }
                    Err(e) => Err(e.into()),
                }
            }
            ["w", ws, "tokens", id, "revoke"] => {
                back = match form.get("member") {
                    "" => format!("/console/w/{ws}/members"),
                    m => format!("/console/w/{ws}/members/{m}"),
                };
                store
                    .token_revoke(id, Some(ws))
                    .await
                    .map(|()| format!("Token {id} revoked."))
                    .map_err(Error::from)
            }
            ["w", ws, "members", name, "roles"] => {
                back = format!("/console/w/{ws}/members/{name}");
                let role = form.get("role");
                store
                    .role_assign(ws, name, role)
                    .await
                    .map(|()| format!("{name} now has role {role}."))
                    .map_err(Error::from)
            }
            ["w", ws, "members", name, "roles", role, "remove"] => {
                back = format!("/console/w/{ws}/members/{name}");
                store
                    .role_unassign(ws, name, role)
                    .await
                    .map(|()| format!("{name} no longer has role {role}."))
                    .map_err(Error::from)
            }
            ["w", ws, "roles"] => {
                let name = form.get("name").trim();
                match store.role_create(ws, name, &[]).await {
                    Ok(()) => {
                        back = format!("/console/w/{ws}/roles/{name}/allowlist");
                        Ok(format!("Role {name} created: choose what it grants."))
                    }
                    Err(e) => {
                        back = format!("/console/w/{ws}/members#roles");
                        Err(e.into())
                    }
                }
            }
            ["w", ws, kind @ ("members" | "roles"), name, "allowlist"] => {
                let subject = if *kind == "members" {
                    Subject::Member((*name).to_owned())
                } else {
                    Subject::Role((*name).to_owned())
                };
                let patterns = patterns_of(form);
                if form.get("action") == "preview" {
                    // Without JavaScript: the editor again, with the draft and its preview.
                    let csrf = self
                        .sessions
                        .get(sid)
                        .map(|(s, _)| s.csrf)
                        .unwrap_or_default();
                    let chrome = Chrome {
                        title: String::new(),
                        ws: Some((*ws).to_owned()),
                        tab: "members",
                        csrf,
                        flash: None,
                        signed_in: true,
                    };
                    let t = self
                        .editor(admin, &subject, ws, Some(patterns), chrome)
                        .await?;
                    return Ok(html(StatusCode::OK, t.render()?));
                }
                back = subject.url(ws);
                self.save_allowlist(admin, &subject, ws, &patterns).await
            }
            ["w", ws, "enforcement"] => {
                back = format!("/console/w/{ws}/enforcement");
                let on = form.get("enforce") == "true";
                store
                    .enforce_set(ws, on)
                    .await
                    .map(|()| {
                        tracing::info!(workspace = %ws, enforce = on, "console set enforcement");
                        if on {
                            "Enforcement is on.".to_owned()
                        } else {
                            "Enforcement is off: denials are now logged as would-deny.".to_owned()
                        }
                    })
                    .map_err(Error::from)
            }
            ["w", ws, "audit", "verify"] => {
                back = format!("/console/w/{ws}/audit");
                self.start_verify(admin, ws);
                Ok("Verifying the chain; this page shows the result when it is done.".into())
            }
            ["w", ws, "servers"] => {
                back = format!("/console/w/{ws}/servers");
                match spec_of(form) {
                    Ok(spec) => {
                        let name = spec.name.clone();
                        match store.server_add_spec(ws, spec).await {
                            Ok(_) => Ok(format!("Server {name} added.")),
                            Err(e) => return self.server_form_again(sid, ws, form, false, e),
                        }
                    }
                    Err(e) => return self.server_form_again(sid, ws, form, false, e),
                }
            }
            ["w", ws, "servers", "_refresh"] => {
                back = format!("/console/w/{ws}/servers");
                self.tools.forget(ws);
                Ok("Every server is listed again.".into())
            }
            ["w", ws, "servers", name] => {
                back = format!("/console/w/{ws}/servers");
                match spec_of(form) {
                    Ok(spec) if spec.name != *name => {
                        Err(Error::BadRequest("a server cannot be renamed".into()))
                    }
                    Ok(spec) => match self.editable(store, ws, name).await {
                        Err(e) => Err(e),
                        Ok(()) => match store.server_replace(ws, spec).await {
                            Ok(_) => {
                                self.tools.forget(ws);
                                Ok(format!("Server {name} saved."))
                            }
                            Err(e) => return self.server_form_again(sid, ws, form, true, e),
                        },
                    },
                    Err(e) => return self.server_form_again(sid, ws, form, true, e),
                }
            }
            ["w", ws, "servers", name, "remove"] => {
                back = format!("/console/w/{ws}/servers");
                store
                    .server_remove(ws, name)
                    .await
                    .map(|()| format!("Server {name} removed."))
                    .map_err(Error::from)
            }
            _ => return Err(Error::NotFound),
        };
        let flash = match done {
            Ok(text) => {
                admin.changed().await;
                Flash { kind: "ok", text }
            }
            Err(e) if e.status() == StatusCode::INTERNAL_SERVER_ERROR => return Err(e),
            Err(e) => Flash {
                kind: "error",
                text: e.message(),
            },
        };
        self.sessions.flash(sid, flash);
        Ok(redirect(&back))
    }

    /// Refuses to replace a server whose settings the form cannot carry.
    async fn editable(&self, store: &store::Store, ws: &str, name: &str) -> Result<()> {
        let server = store
            .server_list(ws)
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| store::Error::NotFound("server", name.to_owned()))?;
        match form_of(&server).1 {
            Some(why) => Err(Error::BadRequest(why)),
            None => Ok(()),
        }
    }

    /// The server form again, with what was typed and why it was refused.
    fn server_form_again(
        &self,
        sid: &str,
        ws: &str,
        form: &Form,
        editing: bool,
        e: store::Error,
    ) -> Result<Resp> {
        let err = Error::from(e);
        if err.status() == StatusCode::INTERNAL_SERVER_ERROR {
            return Err(err);
        }
        let csrf = self
            .sessions
            .get(sid)
            .map(|(s, _)| s.csrf)
            .unwrap_or_default();
        let page = views::ServerForm {
            chrome: Chrome {
                title: "Server".into(),
                ws: Some(ws.to_owned()),
                tab: "servers",
                csrf,
                flash: None,
                signed_in: true,
            },
            ws: ws.to_owned(),
            editing,
            form: views::ServerFormValues {
                name: form.get("name").to_owned(),
                kind: form.get("kind").to_owned(),
                url: form.get("url").to_owned(),
                // Only lines naming a variable: anything else may be a pasted secret.
                headers: form
                    .get("headers")
                    .lines()
                    .filter(|l| {
                        header_line(l.trim()).is_some_and(|(_, v)| std::env::var_os(v).is_some())
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                command: form.get("command").to_owned(),
                args: form.get("args").to_owned(),
                prefix: form.get("prefix").to_owned(),
            },
            error: Some(err.message()),
        };
        Ok(html(err.status(), page.render()?))
    }

    /// The effective grants `patterns` give `subject`, and the chain's listing decision on
    /// every tool the workspace's servers list now.
    async fn preview(
        &self,
        admin: &Admin,
        subject: &Subject,
        ws: &str,
        patterns: &[String],
    ) -> Result<(views::Preview, bool)> {
        let snapshot = admin.directory.snapshot();
        let view = snapshot.workspace(ws).ok_or(Error::NotFound)?.clone();
        match subject {
            Subject::Member(m) if snapshot.member(ws, m).is_none() => {
                return Err(store::Error::NotFound("member", m.clone()).into());
            }
            Subject::Role(r) if snapshot.role(ws, r).is_none() => {
                return Err(store::Error::NotFound("role", r.clone()).into());
            }
            _ => {}
        }
        let listings = self.tools.of(&view).await;
        Ok((
            self.preview_of(admin, subject, ws, patterns, &listings),
            view.enforce,
        ))
    }

    fn preview_of(
        &self,
        admin: &Admin,
        subject: &Subject,
        ws: &str,
        patterns: &[String],
        listings: &[(Arc<crate::identity::ServerView>, Arc<tools::Listing>)],
    ) -> views::Preview {
        let snapshot = admin.directory.snapshot();
        let mut grants: BTreeSet<String> = patterns.iter().cloned().collect();
        let member = match subject {
            Subject::Member(m) => {
                // Their roles' patterns join the draft, as the snapshot joins them.
                if let Some(v) = snapshot.member(ws, m) {
                    for r in &v.roles {
                        grants.extend(snapshot.role(ws, r).unwrap_or_default().iter().cloned());
                    }
                }
                m.clone()
            }
            // A role is previewed as a member holding only it.
            Subject::Role(r) => format!("role:{r}"),
        };
        let principal = Principal {
            workspace: ws.to_owned(),
            member: Some(member),
            grants: grants.into_iter().collect(),
        };
        let seen = tools::preview(&admin.policies.chain(), &principal, listings);
        let total = seen.len();
        let (visible, hidden): (Vec<_>, Vec<_>) = seen.into_iter().partition(|s| s.visible);
        let item = |s: tools::Seen| views::PreviewItem {
            server: s.server,
            tool: s.tool,
            exposed: s.exposed,
            reason: s.reason.unwrap_or_default(),
        };
        views::Preview {
            visible: visible.into_iter().map(item).collect(),
            hidden: hidden.into_iter().map(item).collect(),
            total,
        }
    }

    /// The allowlist editor of `subject`, on its stored patterns or on a draft.
    async fn editor(
        &self,
        admin: &Admin,
        subject: &Subject,
        ws: &str,
        draft: Option<Vec<String>>,
        mut chrome: Chrome,
    ) -> Result<views::Editor> {
        let store = admin.directory.store();
        let snapshot = admin.directory.snapshot();
        let view = snapshot.workspace(ws).ok_or(Error::NotFound)?.clone();
        let (stored, roles) = match subject {
            Subject::Member(m) => {
                let member = snapshot
                    .member(ws, m)
                    .ok_or_else(|| store::Error::NotFound("member", m.clone()))?;
                let own = store.grant_list(ws, Some(m)).await?;
                (
                    own.into_iter().map(|g| g.pattern).collect::<Vec<_>>(),
                    member.roles.clone(),
                )
            }
            Subject::Role(r) => (
                snapshot
                    .role(ws, r)
                    .ok_or_else(|| store::Error::NotFound("role", r.clone()))?
                    .to_vec(),
                Vec::new(),
            ),
        };
        let patterns = draft.unwrap_or(stored);
        let listings = self.tools.of(&view).await;
        let mut exact = BTreeSet::new();
        let servers = listings
            .iter()
            .map(|(s, l)| views::EditorServer {
                name: s.name.clone(),
                prefix: s.prefix.clone(),
                error: l.tools.as_ref().err().cloned(),
                tools: l
                    .tools
                    .as_ref()
                    .map(|tools| {
                        tools
                            .iter()
                            .map(|t| {
                                let pattern = format!("{}:{}", s.name, t.name);
                                exact.insert(pattern.clone());
                                views::EditorTool {
                                    checked: patterns.contains(&pattern),
                                    pattern,
                                    name: t.name.clone(),
                                    title: t.title.clone(),
                                    description: t.description.clone(),
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        let globs = patterns
            .iter()
            .filter(|p| !exact.contains(*p))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        let preview = self.preview_of(admin, subject, ws, &patterns, &listings);
        chrome.title = format!("Allowlist of {}", subject.name());
        Ok(views::Editor {
            chrome,
            ws: ws.to_owned(),
            subject_kind: subject.kind(),
            subject: subject.name().to_owned(),
            roles,
            action_url: subject.url(ws),
            servers,
            globs,
            preview,
            enforce: view.enforce,
        })
    }

    /// Makes `subject`'s own patterns exactly `patterns`: what is new is granted, what is gone
    /// is revoked, through the same store calls as `mcpgw grant` and `mcpgw role`.
    async fn save_allowlist(
        &self,
        admin: &Admin,
        subject: &Subject,
        ws: &str,
        patterns: &[String],
    ) -> Result<String> {
        let store = admin.directory.store();
        let current: BTreeSet<String> = match subject {
            Subject::Member(m) => store
                .grant_list(ws, Some(m))
                .await?
                .into_iter()
                .map(|g| g.pattern)
                .collect(),
            Subject::Role(r) => crate::admin::role_named(store, ws, r)
                .await
                .map_err(|e| match e {
                    crate::admin::Error::Store(e) => Error::Store(e),
                    e => Error::BadRequest(e.to_string()),
                })?
                .patterns
                .into_iter()
                .collect(),
        };
        let wanted: BTreeSet<String> = patterns.iter().cloned().collect();
        let add: Vec<String> = wanted.difference(&current).cloned().collect();
        let remove: Vec<String> = current.difference(&wanted).cloned().collect();
        match subject {
            Subject::Member(m) => {
                if !add.is_empty() {
                    store.grant_add(ws, m, &add).await?;
                }
                if !remove.is_empty() {
                    store.grant_remove(ws, m, &remove).await?;
                }
            }
            Subject::Role(r) => {
                if !add.is_empty() {
                    store.role_grant(ws, r, &add).await?;
                }
                if !remove.is_empty() {
                    store.role_revoke(ws, r, &remove).await?;
                }
            }
        }
        tracing::info!(workspace = %ws, subject = subject.name(), kind = subject.kind(), added = add.len(), removed = remove.len(), "console saved an allowlist");
        Ok(format!(
            "Allowlist of {} saved: {} added, {} removed.",
            subject.name(),
            add.len(),
            remove.len()
        ))
    }

    /// The audit filter of a query (the workspace is the page's).
    fn audit_filter(ws: &str, q: &Form) -> Result<(audit::Filter, views::AuditForm)> {
        let text = |k: &str| q.get(k).trim().to_owned();
        let opt = |k: &str| Some(text(k)).filter(|v| !v.is_empty());
        let form = views::AuditForm {
            member: text("member"),
            server: text("server"),
            tool: text("tool"),
            decision: text("decision"),
            status: text("status"),
            since: text("since"),
            until: text("until"),
        };
        if !form.status.is_empty() && !STATUSES.contains(&form.status.as_str()) {
            return Err(Error::BadRequest(format!(
                "unknown status {:?}",
                form.status
            )));
        }
        let filter = audit::Filter {
            workspace: Some(ws.to_owned()),
            member: opt("member"),
            server: opt("server"),
            tool: opt("tool"),
            decision: opt("decision"),
            status: opt("status"),
            since_ms: opt("since").map(|v| audit::parse_time(&v)).transpose()?,
            until_ms: opt("until").map(|v| audit::parse_time(&v)).transpose()?,
            before_id: match q.get("before") {
                "" => None,
                b => Some(
                    b.parse()
                        .map_err(|_| Error::BadRequest("before: not a number".into()))?,
                ),
            },
            ..audit::Filter::default()
        };
        Ok((filter, form))
    }

    /// The query string of an audit view (the page's filters, without paging).
    fn audit_query(form: &views::AuditForm) -> String {
        let mut out = Vec::new();
        for (k, v) in [
            ("member", &form.member),
            ("server", &form.server),
            ("tool", &form.tool),
            ("decision", &form.decision),
            ("status", &form.status),
            ("since", &form.since),
            ("until", &form.until),
        ] {
            if !v.is_empty() {
                out.push(format!("{k}={}", encode(v)));
            }
        }
        out.join("&")
    }

    async fn audit_page(
        &self,
        admin: &Admin,
        ws: &str,
        q: &Form,
        chrome: Chrome,
    ) -> Result<views::Audit> {
        let (mut filter, form) = Self::audit_filter(ws, q)?;
        filter.limit = Some(AUDIT_PAGE);
        // The newest page is ordered by time within a window; paging back walks ids.
        let paged = filter.before_id.is_some();
        let mut records = audit::store::query(admin.directory.store().db(), &filter).await?;
        records.reverse();
        let base = Self::audit_query(&form);
        let url = |extra: &str| {
            let q = [base.as_str(), extra]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("&");
            format!(
                "/console/w/{ws}/audit{}{q}",
                if q.is_empty() { "" } else { "?" }
            )
        };
        let older = (records.len() as i64 == AUDIT_PAGE)
            .then(|| records.iter().map(|r| r.id).min())
            .flatten()
            .map(|id| url(&format!("before={id}")));
        let export = |format: &str| {
            let q = [base.as_str(), &format!("format={format}")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("&");
            format!("/console/w/{ws}/audit/export?{q}")
        };
        let (verify_state, verify_detail) = match lock(&self.verified).get(ws).cloned() {
            None => (
                "not verified".to_owned(),
                "since this gateway started.".to_owned(),
            ),
            Some(Verified::Running(at)) => ("verifying…".to_owned(), format!("since {}", when(at))),
            Some(Verified::Done { at_ms, ok, detail }) => (
                if ok { "intact" } else { "BROKEN" }.to_owned(),
                format!("{detail} (checked {})", when(at_ms)),
            ),
        };
        Ok(views::Audit {
            chrome,
            ws: ws.to_owned(),
            rows: records
                .into_iter()
                .map(|r| views::AuditRow {
                    seq: r.seq,
                    when: when(r.ts_ms),
                    member: r
                        .member
                        .or(r.subject)
                        .unwrap_or_else(|| "(workspace token)".into()),
                    server: r.server,
                    tool: r.tool,
                    decision: r.decision,
                    status: r.status,
                    module: [r.module, r.error_code]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" "),
                    latency_ms: format!("{:.1}", r.latency_us as f64 / 1000.0),
                })
                .collect(),
            newest: paged.then(|| url("")),
            older,
            export_csv: export("csv"),
            export_jsonl: export("jsonl"),
            export_max: EXPORT_MAX,
            decisions: DECISIONS,
            statuses: STATUSES,
            f: form,
            verify_state,
            verify_detail,
        })
    }

    /// The filtered view as CSV or JSONL, newest first, up to [`EXPORT_MAX`] records, in the
    /// CLI export's format.
    async fn export(&self, admin: &Admin, ws: &str, q: &Form) -> Result<Resp> {
        let (mut filter, _) = Self::audit_filter(ws, q)?;
        let csv = match q.get("format") {
            "csv" => true,
            "jsonl" | "" => false,
            f => return Err(Error::BadRequest(format!("unknown format {f:?}"))),
        };
        let _permit = self
            .exports
            .acquire()
            .await
            .map_err(|_| Error::BadRequest("the console is shutting down".into()))?;
        let db = admin.directory.store().db();
        let mut out = String::new();
        if csv {
            out.push_str(audit::CSV_HEADER);
            out.push('\n');
        }
        let mut left = EXPORT_MAX;
        loop {
            filter.limit = Some(left.min(5_000));
            let mut page = audit::store::query(db, &filter).await?;
            page.reverse();
            let Some(last) = page.last() else { break };
            filter.before_id = Some(last.id);
            for r in &page {
                if csv {
                    out.push_str(&audit::csv_line(r));
                } else {
                    out.push_str(&serde_json::to_string(r).unwrap_or_default());
                }
                out.push('\n');
            }
            left -= page.len() as i64;
            if left <= 0 || (page.len() as i64) < filter.limit.unwrap_or(0) {
                break;
            }
        }
        let (ctype, ext) = if csv {
            ("text/csv; charset=utf-8", "csv")
        } else {
            ("application/jsonl; charset=utf-8", "jsonl")
        };
        let mut resp = response(StatusCode::OK, ctype, out);
        if let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"audit-{ws}-{}.{ext}\"",
            store::now_ms()
        )) {
            resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
        Ok(resp)
    }

    /// Verifies the workspace's chain in the background (a long trail takes seconds to
    /// minutes); the Audit page shows the outcome.
    fn start_verify(&self, admin: &Admin, ws: &str) {
        {
            let mut v = lock(&self.verified);
            if matches!(v.get(ws), Some(Verified::Running(_))) {
                return;
            }
            v.insert(ws.to_owned(), Verified::Running(store::now_ms()));
        }
        let (db, verified, ws) = (
            admin.directory.store().db().clone(),
            self.verified.clone(),
            ws.to_owned(),
        );
        tokio::spawn(async move {
            let outcome = match audit::store::verify(&db, Some(&ws), &[]).await {
                Ok(report) => match &report.broken {
                    None => Verified::Done {
                        at_ms: store::now_ms(),
                        ok: true,
                        detail: format!("{} records verified", report.records),
                    },
                    Some(b) => Verified::Done {
                        at_ms: store::now_ms(),
                        ok: false,
                        detail: format!("at seq {}: {}", b.seq, b.why),
                    },
                },
                Err(e) => {
                    tracing::error!(workspace = %ws, error = %e, "console chain verification failed");
                    Verified::Done {
                        at_ms: store::now_ms(),
                        ok: false,
                        detail: "the verification failed; see the gateway log".into(),
                    }
                }
            };
            lock(&verified).insert(ws, outcome);
        });
    }

    async fn servers_page(
        &self,
        admin: &Admin,
        ws: &str,
        chrome: Chrome,
    ) -> Result<views::Servers> {
        let snapshot = admin.directory.snapshot();
        let view = snapshot.workspace(ws).ok_or(Error::NotFound)?.clone();
        let (servers, listings) = tokio::join!(
            admin.directory.store().server_list(ws),
            self.tools.of(&view)
        );
        let listings: HashMap<&str, &Arc<tools::Listing>> =
            listings.iter().map(|(s, l)| (s.name.as_str(), l)).collect();
        let rows = servers?
            .into_iter()
            .map(|s| {
                let listing = listings.get(s.name.as_str());
                let target = match &s.transport {
                    store::TransportView::Stdio { command, args, .. } => {
                        format!("stdio: {command} {}", args.join(" "))
                    }
                    _ => s.url.clone(),
                };
                let (healthy, health, tools) = match listing.map(|l| (&l.tools, l.took)) {
                    Some((Ok(t), took)) => (
                        true,
                        format!("listed in {:.0} ms", took.as_secs_f64() * 1000.0),
                        t.len().to_string(),
                    ),
                    Some((Err(e), _)) => (false, e.clone(), "?".into()),
                    None => (
                        false,
                        "not in this process's snapshot yet".into(),
                        "?".into(),
                    ),
                };
                views::ServerRow {
                    headers: s
                        .headers
                        .iter()
                        .map(|h| format!("{} ({})", h.name, h.source))
                        .collect::<Vec<_>>()
                        .join(", "),
                    name: s.name,
                    target,
                    prefix: s.prefix,
                    healthy,
                    health,
                    tools,
                }
            })
            .collect();
        Ok(views::Servers {
            chrome,
            ws: ws.to_owned(),
            rows,
        })
    }
}

/// `%`-encodes a query value.
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The server form as the store's [`store::NewServer`]: headers only from environment
/// variables (the console never takes a secret's value).
fn spec_of(form: &Form) -> Result<store::NewServer, store::Error> {
    let name = form.get("name").trim().to_owned();
    let prefix = Some(form.get("prefix").trim().to_owned()).filter(|p| !p.is_empty());
    if form.get("kind") == "stdio" {
        let command = form.get("command").trim().to_owned();
        let args = form
            .get("args")
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        return Ok(store::NewServer {
            name,
            prefix,
            stdio: Some(store::StdioSpec {
                command,
                args,
                env: Vec::new(),
                cwd: None,
                fence: store::Fence::default(),
            }),
            ..Default::default()
        });
    }
    let headers = form
        .get("headers")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(n, l)| match header_line(l) {
            Some((_, var)) if std::env::var_os(var).is_some() => store::parse_header(l, true),
            // The line may hold a pasted secret: it is neither echoed nor stored.
            Some(_) => Err(store::Error::Invalid(format!(
                "header line {}: the gateway has no environment variable of that name",
                n + 1
            ))),
            None => Err(store::Error::Invalid(format!(
                "header line {}: write `Name: VARIABLE`, naming an environment variable of the \
                 gateway (letters, digits, _), not a value",
                n + 1
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(store::NewServer {
        name,
        url: Some(form.get("url").trim().to_owned()),
        headers,
        prefix,
        ..Default::default()
    })
}

/// A header line `Name: VAR` whose variable is a valid name: (name, variable).
fn header_line(line: &str) -> Option<(&str, &str)> {
    let (name, var) = line.split_once(':')?;
    let var = var.trim();
    let valid = var
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then_some((name.trim(), var))
}

/// A stored server as the form shows it; an error when it has settings the form cannot carry
/// (those are kept by the CLI and API only).
fn form_of(s: &store::Server) -> (views::ServerFormValues, Option<String>) {
    let mut values = views::ServerFormValues {
        name: s.name.clone(),
        prefix: if s.prefix == format!("{}_", s.name) {
            String::new()
        } else {
            s.prefix.clone()
        },
        ..Default::default()
    };
    let mut beyond = Vec::new();
    match &s.transport {
        store::TransportView::Stdio {
            command,
            args,
            env,
            cwd,
            fence,
        } => {
            values.kind = "stdio".into();
            values.command = command.clone();
            values.args = args.join("\n");
            if !env.is_empty() {
                beyond.push("environment variables");
            }
            if cwd.is_some() {
                beyond.push("a working directory");
            }
            if *fence != store::Fence::default() {
                beyond.push("fence settings");
            }
        }
        store::TransportView::Http { tls } => {
            values.kind = "http".into();
            values.url = s.url.clone();
            if !tls.is_empty() {
                beyond.push("TLS files");
            }
        }
        store::TransportView::Unreadable => beyond.push("an unreadable transport"),
    }
    let mut lines = Vec::new();
    for h in &s.headers {
        match h.source.strip_prefix("env:") {
            Some(var) => lines.push(format!("{}: {var}", h.name)),
            None => beyond.push("headers not from environment variables"),
        }
    }
    values.headers = lines.join("\n");
    let error = (!beyond.is_empty()).then(|| {
        format!(
            "This server has {}, which this form does not carry: saving it here would drop them. Edit it with `mcpgw server` or the admin API.",
            beyond.join(", ")
        )
    });
    (values, error)
}
