//! The console's pages: one struct per template under `templates/console/`, compiled into the
//! binary by askama (values are HTML-escaped when rendered). Each holds display-ready values,
//! built by `console/mod.rs` from the same store, snapshot, chain and audit calls the API makes.

use super::session::Flash;
use askama::Template;

/// What every page's frame shows.
pub struct Chrome {
    /// Page title.
    pub title: String,
    /// The workspace the page is about (its tabs are shown).
    pub ws: Option<String>,
    /// The current tab.
    pub tab: &'static str,
    /// The session's CSRF token (empty when signed out).
    pub csrf: String,
    /// A one-shot message.
    pub flash: Option<Flash>,
    /// Navigation and sign-out are shown.
    pub signed_in: bool,
}

#[derive(Template)]
#[template(path = "console/login.html")]
pub struct Login {
    pub chrome: Chrome,
    pub login_csrf: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    pub status: u16,
    pub message: String,
}

pub struct WorkspaceRow {
    pub name: String,
    pub enforce: bool,
    pub servers: usize,
    pub created: String,
}

#[derive(Template)]
#[template(path = "console/workspaces.html")]
pub struct Workspaces {
    pub chrome: Chrome,
    pub rows: Vec<WorkspaceRow>,
}

pub struct MemberRow {
    pub name: String,
    pub disabled: bool,
    pub roles: String,
    pub tokens: usize,
    pub created: String,
}

pub struct RoleRow {
    pub name: String,
    pub patterns: String,
    pub members: usize,
}

#[derive(Template)]
#[template(path = "console/members.html")]
pub struct Members {
    pub chrome: Chrome,
    pub ws: String,
    pub q: String,
    pub rows: Vec<MemberRow>,
    pub shown: usize,
    pub total: usize,
    pub roles: Vec<RoleRow>,
}

pub struct TokenRow {
    pub id: String,
    pub prefix: String,
    pub created: String,
    pub expires: String,
    pub last_used: String,
}

#[derive(Template)]
#[template(path = "console/member.html")]
pub struct Member {
    pub chrome: Chrome,
    pub ws: String,
    pub name: String,
    pub disabled: bool,
    pub created: String,
    pub tokens: Vec<TokenRow>,
    pub roles: Vec<String>,
    pub other_roles: Vec<String>,
    pub own: Vec<String>,
    pub effective: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/issued.html")]
pub struct Issued {
    pub chrome: Chrome,
    pub ws: String,
    pub member: String,
    pub token: String,
    pub token_id: String,
    pub expires: String,
    pub url: String,
    pub configs: Vec<crate::clients::ClientConfig>,
}

pub struct EditorTool {
    pub pattern: String,
    pub name: String,
    pub title: Option<String>,
    pub description: String,
    pub checked: bool,
}

pub struct EditorServer {
    pub name: String,
    pub prefix: String,
    pub error: Option<String>,
    pub tools: Vec<EditorTool>,
}

pub struct PreviewItem {
    pub server: String,
    pub tool: String,
    pub exposed: String,
    pub reason: String,
}

pub struct Preview {
    pub visible: Vec<PreviewItem>,
    pub hidden: Vec<PreviewItem>,
    pub total: usize,
}

#[derive(Template)]
#[template(path = "console/editor.html")]
pub struct Editor {
    pub chrome: Chrome,
    pub ws: String,
    pub subject_kind: &'static str,
    pub subject: String,
    pub roles: Vec<String>,
    pub action_url: String,
    pub servers: Vec<EditorServer>,
    pub globs: String,
    pub preview: Preview,
    pub enforce: bool,
}

/// The preview alone, for the editor's live update.
#[derive(Template)]
#[template(path = "console/preview.html")]
pub struct PreviewFragment {
    pub preview: Preview,
    pub enforce: bool,
}

pub struct WouldDenyRow {
    pub member: String,
    pub server: String,
    pub tool: String,
    pub calls: i64,
    pub last: String,
}

#[derive(Template)]
#[template(path = "console/enforcement.html")]
pub struct Enforcement {
    pub chrome: Chrome,
    pub ws: String,
    pub enforce: bool,
    pub rows: Vec<WouldDenyRow>,
}

/// The audit filter form's values as typed.
#[derive(Default)]
pub struct AuditForm {
    pub member: String,
    pub server: String,
    pub tool: String,
    pub decision: String,
    pub status: String,
    pub since: String,
    pub until: String,
}

pub struct AuditRow {
    pub seq: i64,
    pub when: String,
    pub member: String,
    pub server: String,
    pub tool: String,
    pub decision: String,
    pub status: String,
    pub module: String,
    pub latency_ms: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
pub struct Audit {
    pub chrome: Chrome,
    pub ws: String,
    pub f: AuditForm,
    pub decisions: &'static [&'static str],
    pub statuses: &'static [&'static str],
    pub rows: Vec<AuditRow>,
    pub newest: Option<String>,
    pub older: Option<String>,
    pub export_csv: String,
    pub export_jsonl: String,
    pub export_max: i64,
    pub verify_state: String,
    pub verify_detail: String,
}

pub struct ServerRow {
    pub name: String,
    pub target: String,
    pub headers: String,
    pub prefix: String,
    pub healthy: bool,
    pub health: String,
    pub tools: String,
}

#[derive(Template)]
#[template(path = "console/servers.html")]
pub struct Servers {
    pub chrome: Chrome,
    pub ws: String,
    pub rows: Vec<ServerRow>,
}

/// The server form's values as typed.
#[derive(Default)]
pub struct ServerFormValues {
    pub name: String,
    pub kind: String,
    pub url: String,
    pub headers: String,
    pub command: String,
    pub args: String,
    pub prefix: String,
}

#[derive(Template)]
#[template(path = "console/server_form.html")]
pub struct ServerForm {
    pub chrome: Chrome,
    pub ws: String,
    pub editing: bool,
    pub form: ServerFormValues,
    pub error: Option<String>,
}

pub struct ModuleRow {
    pub name: String,
    pub version: String,
    pub source: String,
    pub digest: String,
    pub digest_short: String,
    pub phases: String,
    pub loaded: String,
    pub decisions: u64,
    pub denies: u64,
    pub errors: u64,
    pub skipped: u64,
    pub last_error: String,
}

#[derive(Template)]
#[template(path = "console/policies.html")]
pub struct Policies {
    pub chrome: Chrome,
    pub modules: Vec<ModuleRow>,
    pub rejected: Vec<crate::policy::Rejected>,
}
