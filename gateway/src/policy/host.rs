//! The wasmtime side: one [`PolicyEngine`] per process compiles components once per (re)load, keeps
//! a typed pre-instance per module, and evaluates each question in a store bounded by an epoch
//! deadline and a memory cap. Modules get the `mcpgw:policy/host` import and nothing else.

use super::{Denial, Error, Phases, Question};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::{
    Component, ComponentType, Func, Linker, Lower, TypedFunc, types::ComponentItem,
};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline};

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy",
    });
}

pub(crate) use bindings::mcpgw::policy::types as wit;
/// The WIT types (`tool-call`, `decision`, ...) as the host sees them.
pub use bindings::mcpgw::policy::types as wit_types;
use bindings::{Policy as PolicyBindings, PolicyPre};

/// How often the ticker thread advances the engine's epoch; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Largest module file accepted; a policy that needs more is not a policy.
pub const MAX_MODULE_BYTES: usize = 32 * 1024 * 1024;
/// Longest reason a module may give; longer output is malformed.
const MAX_REASON_BYTES: usize = 1024;
/// Log lines a module may emit per evaluation; the rest are dropped (and counted in one warning).
const LOG_LINES_PER_CALL: u32 = 8;
/// Budget for `metadata`, `configure` and the trial evaluation at load.
const LOAD_TIMEOUT: Duration = Duration::from_millis(500);

/// Where an instance comes from for each evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceStrategy {
    /// Reuse configured instances across evaluations (about 1-2 µs a call). A module's own globals
    /// survive from one call to the next; an instance that traps or times out is thrown away.
    #[default]
    Warm,
    /// A new instance for every evaluation (tens of µs): no state survives a call.
    Fresh,
}

/// Bounds on every evaluation.
#[derive(Clone, Debug)]
pub struct Limits {
    /// CPU-time budget of one module call (see [`Budget`]); past it the call traps and the
    /// module denies.
    pub timeout: Duration,
    /// Linear memory a module instance may grow to.
    pub memory_bytes: usize,
    /// Instance reuse strategy.
    pub strategy: InstanceStrategy,
    /// Idle warm instances kept per module; more are created under concurrency and dropped after.
    pub max_idle_instances: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(10),
            memory_bytes: 16 * 1024 * 1024,
            strategy: InstanceStrategy::Warm,
            max_idle_instances: 32,
        }
    }
}

/// Per-store host state: the limiter, the module's name for logs, its log budget and the time
/// budget of the call under way.
pub struct HostState {
    limits: StoreLimits,
    module: Arc<str>,
    log_budget: u32,
    budget: Budget,
}

/// What one evaluation may spend: `cpu` of the evaluating thread's CPU time, counted once `cpu`
/// of wall-clock time has passed. On a busy host a thread is preempted for milliseconds at a
/// time, and a module that was only waiting for a core has not been slow (a wall-clock limit
/// denied well-behaved calls under load). So the epoch deadline fires after `cpu` of wall-clock
/// time; only then is the thread's CPU clock read (a call that finishes in time never reads it),
/// and the call may use `cpu` more of CPU time before it traps. A module that needs less than
/// `cpu` is never stopped however long it waits; one that spins is stopped within `2 * cpu` of
/// CPU time. A module can wait for nothing (its only import is `log`), and `wall` is the backstop
/// for a host so overloaded that a core is rarely had at all.
#[derive(Clone, Copy)]
struct Budget {
    cpu: Duration,
    wall: Duration,
    wall_start: Instant,
    /// The thread's CPU clock when the wall-clock deadline first passed.
    cpu_mark: Option<Duration>,
}

impl Budget {
    fn new(cpu: Duration) -> Budget {
        Budget {
            cpu,
            wall: (cpu * 20).max(Duration::from_secs(1)),
            wall_start: Instant::now(),
            cpu_mark: None,
        }
    }

    /// Called each time the epoch deadline passes: trap when the budget is spent, otherwise the
    /// ticks until it could be.
    fn check(&mut self) -> wasmtime::Result<UpdateDeadline> {
        if self.wall_start.elapsed() >= self.wall {
            return Err(Trap::Interrupt.into());
        }
        // Without a CPU clock (never on Linux), the wall-clock deadline is the limit.
        let now = thread_cpu_time().ok_or(Trap::Interrupt)?;
        let used = match self.cpu_mark {
            None => {
                self.cpu_mark = Some(now);
                Duration::ZERO
            }
            Some(mark) => now.saturating_sub(mark),
        };
        if used >= self.cpu {
            return Err(Trap::Interrupt.into());
        }
        Ok(UpdateDeadline::Continue(ticks(self.cpu - used)))
    }
}

/// The CPU time the calling thread has used.
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call writes nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Epoch ticks covering `d`, plus one for the tick already under way.
fn ticks(d: Duration) -> u64 {
    (d.as_micros().div_ceil(EPOCH_TICK.as_micros()) as u64).max(1) + 1
}

/// Starts a budget of `cpu` for the next call on `store`.
fn arm(store: &mut Store<HostState>, cpu: Duration) {
    store.data_mut().budget = Budget::new(cpu);
    store.set_epoch_deadline(ticks(cpu));
}

impl bindings::mcpgw::policy::host::Host for HostState {
    fn log(&mut self, level: wit::Level, message: String, fields: Vec<(String, String)>) {
        if self.log_budget == 0 {
            return;
        }
        self.log_budget -= 1;
        let mut message = message;
        truncate(&mut message, 512);
        let mut rendered = String::new();
        for (k, v) in fields.iter().take(16) {
            if !rendered.is_empty() {
                rendered.push(' ');
            }
            rendered.push_str(k);
            rendered.push('=');
            rendered.push_str(v);
        }
        truncate(&mut rendered, 1024);
        let module = &*self.module;
        match level {
            wit::Level::Trace => {
                tracing::trace!(target: "mcpgw::policy::guest", module, fields = %rendered, "{message}")
            }
            wit::Level::Debug => {
                tracing::debug!(target: "mcpgw::policy::guest", module, fields = %rendered, "{message}")
            }
            wit::Level::Info => {
                tracing::info!(target: "mcpgw::policy::guest", module, fields = %rendered, "{message}")
            }
            wit::Level::Warn => {
                tracing::warn!(target: "mcpgw::policy::guest", module, fields = %rendered, "{message}")
            }
            wit::Level::Error => {
                tracing::error!(target: "mcpgw::policy::guest", module, fields = %rendered, "{message}")
            }
        }
    }
}

impl wit::Host for HostState {}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

/// Imports a module may carry that the host satisfies with functions that trap: WASI interfaces a
/// `wasm32-wasip2` toolchain links in by default (panic printing, environment, clocks). Calling one
/// traps, so the module denies; none grants anything. Every other import refuses the module at load.
const STUBBED_IMPORTS: &[&str] = &[
    "wasi:cli/environment@",
    "wasi:cli/exit@",
    "wasi:cli/stdin@",
    "wasi:cli/stdout@",
    "wasi:cli/stderr@",
    "wasi:cli/terminal-input@",
    "wasi:cli/terminal-output@",
    "wasi:cli/terminal-stdin@",
    "wasi:cli/terminal-stdout@",
    "wasi:cli/terminal-stderr@",
    "wasi:io/error@",
    "wasi:io/poll@",
    "wasi:io/streams@",
    "wasi:clocks/wall-clock@",
    "wasi:clocks/monotonic-clock@",
    "wasi:random/random@",
    "wasi:random/insecure@",
    "wasi:random/insecure-seed@",
];
const HOST_IMPORT: &str = "mcpgw:policy/host@0.3.";
const TYPES_IMPORT: &str = "mcpgw:policy/types@0.3.";

/// The compiler and runtime shared by every module of the process.
pub struct PolicyEngine {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    cache_dir: Option<PathBuf>,
    fuel: bool,
    /// Components compiled in this process, by content digest: reloading a file seen before
    /// (a rename back, a touch, a duplicate event) costs no compilation.
    compiled: Mutex<HashMap<String, Component>>,
}

impl PolicyEngine {
    /// An engine with the given limits, caching compiled artifacts in `cache_dir` when set.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Arc<Self>, Error> {
        Self::build(limits, cache_dir, false)
    }

    /// An engine that also meters fuel (Wasm instructions), for `mcpgw policy run`. Slower.
    pub fn with_fuel(limits: Limits) -> Result<Arc<Self>, Error> {
        Self::build(limits, None, true)
    }

    fn build(limits: Limits, cache_dir: Option<PathBuf>, fuel: bool) -> Result<Arc<Self>, Error> {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(fuel)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            // A policy never needs a 4 GiB reservation; keep virtual memory per instance small.
            .memory_reservation(limits.memory_bytes.next_power_of_two() as u64)
            .memory_guard_size(64 * 1024)
            .max_wasm_stack(512 * 1024)
            // Faults are reported by their cause; backtraces would only cost time on every trap.
            .wasm_backtrace_max_frames(None);
        let engine = wasmtime::Engine::new(&config).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        PolicyBindings::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| Error::Engine(format!("{e:#}")))?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Io(dir.display().to_string(), e.to_string()))?;
        }
        let this = Arc::new(PolicyEngine {
            engine,
            linker,
            limits,
            cache_dir,
            fuel,
            compiled: Mutex::new(HashMap::new()),
        });
        spawn_epoch_ticker(&this.engine)?;
        Ok(this)
    }

    /// The limits every evaluation runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles, type-checks, configures and trial-runs a module. Nothing is live until the caller
    /// puts the returned module in a chain.
    pub fn load(&self, source: &str, bytes: &[u8], settings_json: &str) -> Result<Module, Error> {
        let digest = hex::encode(Sha256::digest(bytes));
        let component = self.compile(bytes, &digest)?;
        let stubbed_imports = self.check_imports(&component)?;
        let mut linker = self.linker.clone();
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| Error::Engine(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(PolicyPre::new)
            .map_err(|e| Error::WrongWorld(format!("{e:#}")))?;

        let mut module = Module {
            name: Arc::from(source),
            version: String::new(),
            phases: Phases::default(),
            call_triggers: None,
            source: source.to_owned(),
            digest,
            loaded_at: SystemTime::now(),
            settings: settings_json.to_owned(),
            stubbed_imports,
            pre,
            idle: (0..IDLE_SLOTS).map(|_| Mutex::new(Vec::new())).collect(),
            idle_count: AtomicUsize::new(0),
            stats: ModuleStats::default(),
            limits: self.limits.clone(),
            fuel: self.fuel,
        };
        // Metadata and settings: a fresh instance with the load budget.
        let mut instance = module
            .instantiate(LOAD_TIMEOUT)
            .map_err(|f| Error::Rejected(f.describe()))?;
        let meta = instance
            .bindings
            .call_metadata(&mut instance.store)
            .map_err(|e| Error::Rejected(classify(&e).describe()))?;
        validate_metadata(&meta)?;
        module.name = Arc::from(meta.name.as_str());
        instance.store.data_mut().module = module.name.clone();
        module.version = meta.version;
        module.phases = Phases {
            list: meta.phases.contains(wit::Phases::LIST),
            call: meta.phases.contains(wit::Phases::CALL),
            result: meta.phases.contains(wit::Phases::RESULT),
        };
        module.call_triggers = match &meta.call_triggers {
            Some(t) => Some(
                aho_corasick::AhoCorasick::builder()
                    .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
                    .build(t)
                    .map_err(|e| Error::Rejected(format!("metadata: call-triggers: {e}")))?,
            ),
            None => None,
        };
        // Trial evaluation of every phase the module takes part in: it must answer, in time.
        let trial = trial_call();
        let mut trial_list = trial.clone();
        trial_list.arguments = None;
        arm(&mut instance.store, LOAD_TIMEOUT);
        let r: wasmtime::Result<Vec<wit::Verdict>> = (|| {
            let mut out = Vec::new();
            if module.phases.list {
                out.push(
                    instance
                        .bindings
                        .call_decide(&mut instance.store, &trial_list)?,
                );
            }
            if module.phases.call {
                out.push(instance.bindings.call_decide(&mut instance.store, &trial)?);
            }
            if module.phases.result {
                out.push(instance.bindings.call_inspect_result(
                    &mut instance.store,
                    &trial,
                    r#"{"content":[]}"#,
                )?);
            }
            Ok(out)
        })();
        let decisions = r.map_err(|e| {
            Error::Rejected(format!(
                "trial evaluation failed: {}",
                classify(&e).describe()
            ))
        })?;
        for v in decisions {
            check_output(&v).map_err(|why| Error::Rejected(format!("trial evaluation: {why}")))?;
        }
        Ok(module)
    }

    fn compile(&self, bytes: &[u8], digest: &str) -> Result<Component, Error> {
        check_binary(bytes)?;
        if let Some(c) = lock(&self.compiled).get(digest) {
            return Ok(c.clone());
        }
        let cached = self.cache_path(digest);
        if let Some(path) = &cached {
            // Read into memory rather than mmap the file: a cache entry truncated or rewritten
            // behind our back must not be able to fault the process.
            if let Ok(artifact) = std::fs::read(path) {
                // SAFETY: `deserialize` runs the artifact's machine code, so it must come from
                // `Component::serialize`. The cache directory belongs to the gateway, the file name
                // carries the engine's compatibility hash, and wasmtime checks its own version and
                // engine-settings header; on any error we recompile from the original bytes.
                match unsafe { Component::deserialize(&self.engine, &artifact) } {
                    Ok(c) => {
                        lock(&self.compiled).insert(digest.to_owned(), c.clone());
                        return Ok(c);
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable compiled-module cache entry")
                    }
                }
            }
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| Error::Compile(format!("{e:#}")))?;
        if let Some(path) = &cached
            && let Err(e) = component
                .serialize()
                .map_err(|e| e.to_string())
                .and_then(|b| write_atomic(path, &b))
        {
            tracing::warn!(path = %path.display(), error = %e, "could not write compiled-module cache entry");
        }
        let mut compiled = lock(&self.compiled);
        if compiled.len() >= 64 {
            compiled.clear();
        }
        compiled.insert(digest.to_owned(), component.clone());
        Ok(component)
    }

    fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        Some(dir.join(format!("{digest}-{:016x}.cwasm", h.finish())))
    }

    /// Refuses any import but the host interface and the trap-stubbed WASI list; returns the
    /// stubbed ones.
    fn check_imports(&self, component: &Component) -> Result<Vec<String>, Error> {
        let ty = component.component_type();
        let mut stubbed = Vec::new();
        for (name, item) in ty.imports(&self.engine) {
            if name.starts_with(HOST_IMPORT) || name.starts_with(TYPES_IMPORT) {
                continue;
            }
            if name.starts_with("mcpgw:policy/") {
                // The error's own text names the version this gateway implements.
                return Err(Error::WrongWorld(format!(
                    "built against {name}; rebuild the module with the current policy-sdk"
                )));
            }
            let stub = STUBBED_IMPORTS.iter().any(|p| name.starts_with(p));
            if !stub || !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
                return Err(Error::ForbiddenImport(name.to_owned()));
            }
            stubbed.push(name.to_owned());
        }
        Ok(stubbed)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

fn spawn_epoch_ticker(engine: &Engine) -> Result<(), Error> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("mcpgw-policy-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(|_| ())
        .map_err(|e| Error::Engine(format!("cannot start epoch ticker: {e}")))
}

/// Refuses what is not a binary component before wasmtime sees it, with a reason a person can act on.
fn check_binary(bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(Error::NotAComponent(format!(
            "{} bytes, over the {MAX_MODULE_BYTES}-byte limit",
            bytes.len()
        )));
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        let text = bytes
            .iter()
            .take(64)
            .find(|b| !b.is_ascii_whitespace())
            .copied();
        return Err(Error::NotAComponent(if text == Some(b'(') {
            "WAT text; only compiled components are loaded".to_owned()
        } else {
            "not a WebAssembly binary".to_owned()
        }));
    }
    // Bytes 4..8: version and layer. Core modules are layer 0, components layer 1.
    if bytes[6..8] != [1, 0] {
        return Err(Error::NotAComponent(
            "a core Wasm module, not a component (build with --target wasm32-wasip2)".to_owned(),
        ));
    }
    Ok(())
}

/// Most call-phase triggers a module may declare, and the longest: far more than a rule needs,
/// and the automaton they make stays small (its kind is fixed to a contiguous NFA, never a DFA).
const MAX_TRIGGERS: usize = 64;
const MAX_TRIGGER_BYTES: usize = 64;

fn validate_metadata(meta: &wit::Metadata) -> Result<(), Error> {
    let ok_name = !meta.name.is_empty()
        && meta.name.len() <= 64
        && meta
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok_name {
        return Err(Error::Rejected(
            "metadata: name must be 1-64 of [A-Za-z0-9._-]".into(),
        ));
    }
    if meta.version.len() > 64 {
        return Err(Error::Rejected(
            "metadata: version longer than 64 bytes".into(),
        ));
    }
    if let Some(triggers) = &meta.call_triggers {
        // An empty list, or a string JSON text never holds unescaped, would switch the module's
        // call phase off without saying so.
        let ok = (1..=MAX_TRIGGERS).contains(&triggers.len())
            && triggers.iter().all(|t| {
                (1..=MAX_TRIGGER_BYTES).contains(&t.len()) && !t.chars().any(char::is_control)
            });
        if !ok {
            return Err(Error::Rejected(format!(
                "metadata: call-triggers must be 1-{MAX_TRIGGERS} strings of 1-{MAX_TRIGGER_BYTES} \
                 bytes without control characters"
            )));
        }
        if !meta.phases.contains(wit::Phases::CALL) {
            return Err(Error::Rejected(
                "metadata: call-triggers on a module without the call phase".into(),
            ));
        }
    }
    if meta.phases == wit::Phases::empty() {
        return Err(Error::Rejected(
            "metadata: the module takes part in no phase".into(),
        ));
    }
    Ok(())
}

fn trial_call() -> wit::ToolCall {
    wit::ToolCall {
        request_id: "mcpgw-trial".into(),
        principal: wit::Principal {
            workspace: "mcpgw-trial".into(),
            member: Some("mcpgw-trial".into()),
            grants: vec!["trial:*".into()],
        },
        server: "trial".into(),
        tool: "trial".into(),
        arguments: Some("{}".into()),
        facts: None,
        client: None,
        labels: Vec::new(),
    }
}

/// Most flow labels one answer may attach.
pub const MAX_LABELS_PER_ANSWER: usize = 8;

/// True when `label` is a flow label: 1-64 bytes of `[a-z0-9._:-]`.
pub fn valid_label(label: &str) -> bool {
    (1..=64).contains(&label.len())
        && label.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b':' | b'-')
        })
}

/// Checks a module's output; returns why it is malformed.
fn check_output(v: &wit::Verdict) -> Result<(), String> {
    if v.labels.len() > MAX_LABELS_PER_ANSWER {
        return Err(format!("more than {MAX_LABELS_PER_ANSWER} labels"));
    }
    if !v.labels.iter().all(|l| valid_label(l)) {
        return Err("labels must be 1-64 of [a-z0-9._:-]".into());
    }
    if let wit::Decision::Deny(denial) = &v.decision {
        let code_ok = !denial.code.is_empty()
            && denial.code.len() <= 64
            && denial
                .code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !code_ok {
            return Err("deny code must be 1-64 of [a-z0-9-]".into());
        }
        if denial.reason.len() > MAX_REASON_BYTES {
            return Err(format!("deny reason over {MAX_REASON_BYTES} bytes"));
        }
    }
    Ok(())
}

/// Why a module could not give a usable answer. Every fault denies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// It ran past its deadline (or fuel).
    Timeout,
    /// It trapped: panic, unreachable, out of memory, stack overflow, a stubbed import.
    Trap(String),
    /// It answered something the contract forbids.
    InvalidOutput(String),
    /// It refused its settings (at load: the module is rejected).
    SettingsRefused(String),
}

impl Fault {
    /// The machine code put in the denial.
    pub fn code(&self) -> &'static str {
        match self {
            Fault::Timeout => "policy-timeout",
            Fault::Trap(_) => "policy-trap",
            Fault::InvalidOutput(_) => "policy-invalid-output",
            Fault::SettingsRefused(_) => "policy-settings-refused",
        }
    }

    /// A one-line description for logs and status.
    pub fn describe(&self) -> String {
        match self {
            Fault::Timeout => "deadline exceeded".to_owned(),
            Fault::Trap(m) => format!("trapped: {m}"),
            Fault::InvalidOutput(m) => format!("malformed output: {m}"),
            Fault::SettingsRefused(m) => format!("settings refused: {m}"),
        }
    }
}

fn classify(e: &wasmtime::Error) -> Fault {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) | Some(Trap::OutOfFuel) => Fault::Timeout,
        Some(trap) => Fault::Trap(trap.to_string()),
        None => {
            let mut m = e.root_cause().to_string();
            // The trap stubs of `define_unknown_imports_as_traps` say "unknown import: `X` has not
            // been defined"; say what it means here.
            if let Some(name) = m
                .strip_prefix("unknown import: `")
                .and_then(|r| r.split('`').next())
            {
                m = format!(
                    "called {name}, which policy modules are not granted (a Rust panic does this)"
                );
            }
            truncate(&mut m, 300);
            Fault::Trap(m)
        }
    }
}

/// Decision, deny and error counters of one module, and its last error.
#[derive(Default)]
pub struct ModuleStats {
    /// Evaluations answered (any verdict, faults included).
    pub decisions: AtomicU64,
    /// Denials, faults included.
    pub denies: AtomicU64,
    /// Faults: traps, timeouts, malformed output.
    pub errors: AtomicU64,
    /// Call-phase questions not asked: the arguments held none of the module's triggers.
    pub skipped: AtomicU64,
    /// The last fault or failed reload of this module.
    pub last_error: Mutex<Option<String>>,
}

struct Instance {
    store: Store<HostState>,
    /// The generated bindings: metadata and the trial evaluation at load.
    bindings: PolicyBindings,
    exports: Exports,
}

/// The evaluation exports of an instance, type-checked against [`QuestionRef`] when the
/// instance was made, so that each call lowers its question from borrowed values.
#[derive(Clone, Copy)]
struct Exports {
    /// `decide: func(call: tool-call) -> decision`.
    decide: Func,
    /// `inspect-result: func(call: tool-call, tool-result: string) -> decision`.
    inspect_result: Func,
}

/// `principal`, lowered straight from the gateway's own values.
#[derive(ComponentType, Lower)]
#[component(record)]
struct PrincipalRef<'a> {
    workspace: &'a str,
    member: Option<&'a str>,
    grants: &'a [String],
}

/// `tool-call`, lowered from borrowed strings: a question goes into guest memory without first
/// being copied into owned host strings.
#[derive(ComponentType, Lower)]
#[component(record)]
struct QuestionRef<'a> {
    #[component(name = "request-id")]
    request_id: &'a str,
    principal: PrincipalRef<'a>,
    server: &'a str,
    tool: &'a str,
    arguments: Option<&'a str>,
    facts: Option<FactsRef<'a>>,
    client: Option<ClientRef<'a>>,
    labels: &'a [String],
}

/// `tool-facts`, lowered from the catalog's values.
#[derive(ComponentType, Lower)]
#[component(record)]
struct FactsRef<'a> {
    title: Option<&'a str>,
    description: Option<&'a str>,
    #[component(name = "read-only-hint")]
    read_only_hint: Option<bool>,
    #[component(name = "destructive-hint")]
    destructive_hint: Option<bool>,
    #[component(name = "idempotent-hint")]
    idempotent_hint: Option<bool>,
    #[component(name = "open-world-hint")]
    open_world_hint: Option<bool>,
    fingerprint: &'a str,
    definition: Option<&'a str>,
}

/// `client-info`.
#[derive(ComponentType, Lower)]
#[component(record)]
struct ClientRef<'a> {
    name: &'a str,
    version: &'a str,
}

impl<'a> From<&Question<'a>> for QuestionRef<'a> {
    fn from(q: &Question<'a>) -> Self {
        QuestionRef {
            request_id: q.request_id,
            principal: PrincipalRef {
                workspace: &q.principal.workspace,
                member: q.principal.member.as_deref(),
                grants: &q.principal.grants,
            },
            server: q.server,
            tool: q.tool,
            arguments: q.arguments,
            facts: q.facts.map(|f| FactsRef {
                title: f.title.as_deref(),
                description: f.description.as_deref(),
                read_only_hint: f.read_only_hint,
                destructive_hint: f.destructive_hint,
                idempotent_hint: f.idempotent_hint,
                open_world_hint: f.open_world_hint,
                fingerprint: &f.fingerprint,
                // The whole definition only for listing questions: the call and result phases
                // stay cheap.
                definition: q.arguments.is_none().then_some(&*f.definition),
            }),
            client: q.client.map(|c| ClientRef {
                name: &c.name,
                version: &c.version,
            }),
            labels: q.labels,
        }
    }
}

/// Idle-instance lists per module (see [`Module::idle`]).
const IDLE_SLOTS: usize = 8;

/// This thread's idle-instance slot: threads get slots in turn as they first evaluate, so the few
/// worker threads of a runtime each have their own.
fn slot() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SLOT: usize = (NEXT.fetch_add(1, Ordering::Relaxed) % IDLE_SLOTS as u64) as usize;
    }
    SLOT.with(|s| *s)
}

/// A loaded, configured module: the compiled pre-instance plus its idle warm instances.
pub struct Module {
    pub(crate) name: Arc<str>,
    pub(crate) version: String,
    pub(crate) phases: Phases,
    /// The module's call-phase prefilter (`metadata.call-triggers`).
    call_triggers: Option<aho_corasick::AhoCorasick>,
    pub(crate) source: String,
    pub(crate) digest: String,
    pub(crate) loaded_at: SystemTime,
    pub(crate) settings: String,
    stubbed_imports: Vec<String>,
    pre: PolicyPre<HostState>,
    /// Idle warm instances, in one list per slot; each thread takes from and returns to its own
    /// slot (see [`slot`]), so an instance keeps running on the core whose caches hold its memory.
    idle: Box<[Mutex<Vec<Instance>>]>,
    /// Instances in `idle`, over every slot.
    idle_count: AtomicUsize,
    pub(crate) stats: ModuleStats,
    limits: Limits,
    fuel: bool,
}

/// What one module answered, and the fuel it used when metered.
pub struct Answer {
    /// The verdict, or why there is none.
    pub result: Result<wit::Decision, Fault>,
    /// Flow labels the answer attaches to the session (checked; none on a fault).
    pub labels: Vec<String>,
    /// Instructions consumed, on a fuel-metering engine.
    pub fuel: Option<u64>,
}

impl Module {
    /// The module's name, from its metadata.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Hex SHA-256 of the component bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }
    /// The phases the module takes part in.
    pub fn phases(&self) -> Phases {
        self.phases
    }
    /// Whether the call phase must ask the module about these arguments: false only when the
    /// module declared call triggers and the text holds none of them (the module would abstain).
    pub fn wants_call(&self, arguments: Option<&str>) -> bool {
        self.call_triggers
            .as_ref()
            .is_none_or(|t| t.is_match(arguments.unwrap_or_default()))
    }

    /// WASI imports the module carries that the host satisfies with traps.
    pub fn stubbed_imports(&self) -> &[String] {
        &self.stubbed_imports
    }

    /// A configured instance; instantiating and `configure` run under a budget of `timeout`.
    fn instantiate(&self, timeout: Duration) -> Result<Instance, Fault> {
        let state = HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .instances(16)
                .tables(16)
                .memories(4)
                .table_elements(64 * 1024)
                .trap_on_grow_failure(true)
                .build(),
            module: self.name.clone(),
            log_budget: LOG_LINES_PER_CALL,
            budget: Budget::new(timeout),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut store| store.data_mut().budget.check());
        // The budget started with the state above.
        store.set_epoch_deadline(ticks(timeout));
        if self.fuel {
            store
                .set_fuel(u64::MAX / 2)
                .map_err(|e| Fault::Trap(e.to_string()))?;
        }
        let instance = self
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| classify(&e))?;
        let bindings = PolicyBindings::new(&mut store, &instance).map_err(|e| classify(&e))?;
        let exports = Exports {
            decide: *instance
                .get_typed_func::<(QuestionRef<'static>,), (wit::Verdict,)>(&mut store, "decide")
                .map_err(|e| classify(&e))?
                .func(),
            inspect_result: *instance
                .get_typed_func::<(QuestionRef<'static>, &'static str), (wit::Verdict,)>(
                    &mut store,
                    "inspect-result",
                )
                .map_err(|e| classify(&e))?
                .func(),
        };
        match bindings.call_configure(&mut store, &self.settings) {
            Ok(Ok(())) => Ok(Instance {
                store,
                bindings,
                exports,
            }),
            Ok(Err(mut why)) => {
                truncate(&mut why, 300);
                Err(Fault::SettingsRefused(why))
            }
            Err(e) => Err(classify(&e)),
        }
    }

    /// Runs `f` on an instance under the deadline; a faulted instance is dropped, a healthy warm one
    /// goes back to the idle list.
    fn evaluate(
        &self,
        f: impl FnOnce(&mut Store<HostState>, Exports) -> wasmtime::Result<wit::Verdict>,
    ) -> Answer {
        let warm = self.limits.strategy == InstanceStrategy::Warm;
        let slot = slot();
        let reused = if warm { self.take_idle(slot) } else { None };
        let mut instance = match reused {
            Some(i) => i,
            None => match self.instantiate(self.limits.timeout) {
                Ok(i) => i,
                Err(fault) => {
                    return self.count(Answer {
                        result: Err(fault),
                        labels: Vec::new(),
                        fuel: None,
                    });
                }
            },
        };
        arm(&mut instance.store, self.limits.timeout);
        instance.store.data_mut().log_budget = LOG_LINES_PER_CALL;
        let before = if self.fuel {
            instance.store.get_fuel().ok()
        } else {
            None
        };
        let result = f(&mut instance.store, instance.exports).map_err(|e| classify(&e));
        let fuel = before.and_then(|b| Some(b - instance.store.get_fuel().ok()?));
        let result =
            result.and_then(|v| check_output(&v).map(|()| v).map_err(Fault::InvalidOutput));
        if warm && result.is_ok() {
            // Past the bound (counted over every slot), the instance is dropped.
            if self.idle_count.fetch_add(1, Ordering::Relaxed) < self.limits.max_idle_instances {
                lock(&self.idle[slot]).push(instance);
            } else {
                self.idle_count.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let (result, labels) = match result {
            Ok(v) => (Ok(v.decision), v.labels),
            Err(f) => (Err(f), Vec::new()),
        };
        self.count(Answer {
            result,
            labels,
            fuel,
        })
    }

    /// An idle instance: this thread's own if it has one, else another slot's (cheaper than a
    /// new instance).
    fn take_idle(&self, slot: usize) -> Option<Instance> {
        // One lock at a time: the guard of each `pop` ends with its statement.
        let own = lock(&self.idle[slot]).pop();
        let instance = match own {
            Some(instance) => instance,
            None => {
                (1..IDLE_SLOTS).find_map(|i| lock(&self.idle[(slot + i) % IDLE_SLOTS]).pop())?
            }
        };
        self.idle_count.fetch_sub(1, Ordering::Relaxed);
        Some(instance)
    }

    fn count(&self, answer: Answer) -> Answer {
        self.stats.decisions.fetch_add(1, Ordering::Relaxed);
        match &answer.result {
            Ok(wit::Decision::Deny(_)) => {
                self.stats.denies.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(fault) => {
                self.stats.denies.fetch_add(1, Ordering::Relaxed);
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let line = fault.describe();
                tracing::warn!(module = %self.name, digest = %self.digest, error = %line, "policy module fault; denying");
                *lock(&self.stats.last_error) = Some(line);
            }
        }
        answer
    }

    /// `decide` for a listing (`arguments: None`) or a call. The module is called (a chain's
    /// listing memory is the chain's).
    pub fn decide(&self, q: &Question<'_>) -> Answer {
        self.evaluate(|store, exports| {
            // SAFETY: `decide` was type-checked against `(QuestionRef,) -> (Decision,)` by
            // `get_typed_func` when the instance was made; only the lifetime differs.
            let typed = unsafe {
                TypedFunc::<(QuestionRef<'_>,), (wit::Verdict,)>::new_unchecked(exports.decide)
            };
            typed.call(store, (QuestionRef::from(q),)).map(|(d,)| d)
        })
    }

    /// `inspect-result` on a tool result's JSON text.
    pub fn inspect_result(&self, q: &Question<'_>, result: &str) -> Answer {
        self.evaluate(|store, exports| {
            // SAFETY: as in `decide`, checked against `(QuestionRef, &str) -> (Decision,)`.
            let typed = unsafe {
                TypedFunc::<(QuestionRef<'_>, &str), (wit::Verdict,)>::new_unchecked(
                    exports.inspect_result,
                )
            };
            typed
                .call(store, (QuestionRef::from(q), result))
                .map(|(d,)| d)
        })
    }

    /// Turns an answer into a denial attributed to this module, if it is one.
    pub(crate) fn denial(&self, answer: &Result<wit::Decision, Fault>) -> Option<Denial> {
        let (code, reason, fault) = match answer {
            Ok(wit::Decision::Deny(d)) => (d.code.clone(), d.reason.clone(), false),
            Ok(_) => return None,
            Err(f) => (
                f.code().to_owned(),
                format!(
                    "policy module {} failed ({}); denied",
                    self.name,
                    f.describe()
                ),
                true,
            ),
        };
        Some(Denial {
            module: self.name.to_string(),
            digest: self.digest.clone(),
            code,
            reason,
            fault,
        })
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(cpu: Duration) {
        let start = thread_cpu_time().expect("a CPU clock");
        while thread_cpu_time().expect("a CPU clock") - start < cpu {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn a_call_waiting_for_a_core_is_not_stopped_one_that_spins_is() {
        let budget = Duration::from_millis(10);
        // The wall-clock deadline passed while the thread did nothing (as when it is preempted):
        // the call gets its CPU budget.
        let mut waiting = Budget::new(budget);
        std::thread::sleep(budget * 3);
        assert!(matches!(waiting.check(), Ok(UpdateDeadline::Continue(_))));
        std::thread::sleep(budget * 3);
        spin(budget / 2);
        assert!(matches!(waiting.check(), Ok(UpdateDeadline::Continue(_))));
        // Spending it traps, as a timeout.
        spin(budget);
        let Err(e) = waiting.check() else {
            panic!("the budget is spent")
        };
        assert!(matches!(classify(&e), Fault::Timeout));
    }

    #[test]
    fn the_wall_clock_backstop_stops_a_call_that_never_gets_a_core() {
        let mut budget = Budget::new(Duration::from_millis(1));
        budget.wall = Duration::from_millis(20);
        assert!(budget.check().is_ok());
        std::thread::sleep(Duration::from_millis(25));
        let Err(e) = budget.check() else {
            panic!("past the backstop")
        };
        assert!(matches!(classify(&e), Fault::Timeout));
    }
}
