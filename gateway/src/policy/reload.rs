//! Loading the policy directory and keeping it live.
//!
//! Every `*.wasm` in the directory, in file-name order, follows the built-in allowlist. `NAME.toml`
//! beside `NAME.wasm` holds its settings. A rescan reuses every module whose file, content digest
//! and settings are unchanged (no recompile), loads the changed ones, and keeps the last good
//! version of a file whose new content fails (one warning line naming the file and the reason).
//! The new chain replaces the old in one atomic swap; calls in flight keep the chain they loaded.

use super::{Error, Module, PolicyChain, PolicyEngine, Status, host::lock};
use arc_swap::ArcSwap;
use notify::Watcher as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How policies are loaded.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// Directory of extra modules; `None` runs the built-in allowlist alone.
    pub dir: Option<PathBuf>,
    /// Where compiled artifacts are cached by content hash; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Bounds on each evaluation.
    pub limits: super::Limits,
    /// Settings of the built-in allowlist (JSON object).
    pub allowlist_settings: serde_json::Value,
    /// Quiet period after the last file event before a rescan.
    pub debounce: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            dir: None,
            cache_dir: None,
            limits: super::Limits::default(),
            allowlist_settings: serde_json::json!({}),
            debounce: Duration::from_millis(50),
        }
    }
}

/// A file whose current content was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// File name in the policy directory.
    pub file: String,
    /// Hex SHA-256 of the refused bytes and settings.
    pub digest: String,
    /// Why it was refused.
    pub reason: String,
    /// True when an earlier good version of the file keeps serving.
    pub serving_previous: bool,
}

/// The built-in allowlist plus the policy directory, live.
pub struct PolicySet {
    engine: Arc<PolicyEngine>,
    config: PolicyConfig,
    builtin: Arc<Module>,
    chain: ArcSwap<PolicyChain>,
    reload_lock: Mutex<()>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl PolicySet {
    /// Builds the engine, loads the built-in allowlist (a failure here is fatal) and the directory
    /// (a bad file there is logged and skipped).
    pub fn load(config: PolicyConfig) -> Result<Arc<Self>, Error> {
        let engine = PolicyEngine::new(config.limits.clone(), config.cache_dir.clone())?;
        Self::with_engine(engine, config)
    }

    /// As [`PolicySet::load`], on an existing engine.
    pub fn with_engine(
        engine: Arc<PolicyEngine>,
        config: PolicyConfig,
    ) -> Result<Arc<Self>, Error> {
        let settings = config.allowlist_settings.to_string();
        let builtin =
            Arc::new(engine.load(super::BUILTIN_SOURCE, super::BUILTIN_ALLOWLIST, &settings)?);
        let set = Arc::new(PolicySet {
            chain: ArcSwap::from_pointee(PolicyChain::new(vec![builtin.clone()], Vec::new())),
            engine,
            config,
            builtin,
            reload_lock: Mutex::new(()),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        });
        set.reload();
        Ok(set)
    }

    /// The live chain. Hold the `Arc` for the whole request: a reload never changes it under you.
    pub fn chain(&self) -> Arc<PolicyChain> {
        self.chain.load_full()
    }

    /// Live modules and rejected files.
    pub fn status(&self) -> Status {
        self.chain.load().status()
    }

    /// Rescans done that changed the chain, and file loads that failed.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.reload_failures.load(Ordering::Relaxed),
        )
    }

    /// Rescans the directory and swaps in the resulting chain if anything changed.
    /// Returns true when the chain changed.
    pub fn reload(&self) -> bool {
        let _serial = lock(&self.reload_lock);
        let Some(dir) = &self.config.dir else {
            return false;
        };
        let started = Instant::now();
        let old = self.chain.load_full();
        let files = match list_modules(dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read policy directory; keeping the current chain");
                return false;
            }
        };
        let mut modules = vec![self.builtin.clone()];
        let mut rejected = Vec::new();
        for file in files {
            let name = file_name(&file);
            let previous = old.modules().iter().find(|m| m.source == name).cloned();
            let input = match read_module(&file) {
                Ok(input) => input,
                Err(e) => {
                    // Vanished between listing and reading (a rename in progress): the next event rescans.
                    tracing::debug!(file = %name, error = %e, "skipping unreadable policy file");
                    modules.extend(previous);
                    continue;
                }
            };
            if let Some(m) = previous
                .as_ref()
                .filter(|m| m.digest == input.digest && m.settings == input.settings)
            {
                modules.push(m.clone());
                continue;
            }
            let key = input.key();
            if let Some(r) = old
                .rejected()
                .iter()
                .find(|r| r.file == name && r.digest == key)
            {
                rejected.push(r.clone());
                modules.extend(previous);
                continue;
            }
            match self.engine.load(&name, &input.bytes, &input.settings) {
                Ok(m) => {
                    tracing::info!(file = %name, module = %m.name(), digest = %m.digest(), "policy module live");
                    modules.push(Arc::new(m));
                }
                Err(e) => {
                    self.reload_failures.fetch_add(1, Ordering::Relaxed);
                    let reason = e.to_string();
                    tracing::warn!(file = %name, reason = %reason, kept_previous = previous.is_some(), "policy module rejected");
                    if let Some(p) = &previous {
                        *lock(&p.stats.last_error) = Some(format!("reload rejected: {reason}"));
                    }
                    rejected.push(Rejected {
                        file: name,
                        digest: key,
                        reason,
                        serving_previous: previous.is_some(),
                    });
                    modules.extend(previous);
                }
            }
        }
        let same = modules.len() == old.modules().len()
            && modules
                .iter()
                .zip(old.modules())
                .all(|(a, b)| Arc::ptr_eq(a, b))
            && rejected == old.rejected();
        if same {
            return false;
        }
        for gone in old
            .modules()
            .iter()
            .filter(|m| !modules.iter().any(|n| Arc::ptr_eq(n, m)))
        {
            tracing::info!(file = %gone.source, module = %gone.name(), "policy module retired");
        }
        self.chain
            .store(Arc::new(PolicyChain::new(modules, rejected)));
        self.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "policy chain swapped"
        );
        true
    }

    /// Watches the policy directory and rescans it after each burst of changes. Needs a tokio
    /// runtime; watching stops when the handle is dropped.
    pub fn watch(self: &Arc<Self>) -> Result<WatchHandle, Error> {
        let Some(dir) = self.config.dir.clone() else {
            return Err(Error::Watch(
                "-".into(),
                "no policy directory configured".into(),
            ));
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(ev) => {
                        !matches!(ev.kind, notify::EventKind::Access(_))
                            && ev.paths.iter().any(|p| {
                                matches!(
                                    p.extension().and_then(|e| e.to_str()),
                                    Some("wasm" | "toml")
                                )
                            })
                    }
                    Err(_) => true,
                };
                if relevant {
                    // A full channel means a rescan is already pending; it will see this change too.
                    let _ = tx.try_send(());
                }
            })
            .map_err(|e| Error::Watch(dir.display().to_string(), e.to_string()))?;
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| Error::Watch(dir.display().to_string(), e.to_string()))?;
        let set = Arc::clone(self);
        let debounce = self.config.debounce;
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Wait for a quiet period so that a write in progress settles before we read.
                loop {
                    match tokio::time::timeout(debounce, rx.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                let set = set.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || set.reload()).await {
                    tracing::error!(error = %e, "policy reload task failed");
                }
            }
        });
        Ok(WatchHandle {
            _watcher: watcher,
            task,
        })
    }
}

/// Keeps the directory watch alive; dropping it stops watching.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct ModuleInput {
    bytes: Vec<u8>,
    digest: String,
    settings: String,
}

impl ModuleInput {
    /// Identity of a load attempt: module bytes and settings together.
    fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.digest.as_bytes());
        h.update(self.settings.as_bytes());
        hex::encode(h.finalize())
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `*.wasm` files in `dir`, hidden files excluded, sorted by name.
fn list_modules(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = file_name(p);
            !name.starts_with('.') && name.ends_with(".wasm") && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_module(path: &Path) -> Result<ModuleInput, Error> {
    let io = |e: std::io::Error| Error::Io(path.display().to_string(), e.to_string());
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > super::host::MAX_MODULE_BYTES as u64 {
        return Err(Error::NotAComponent(format!(
            "{len} bytes, over the size limit"
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let settings = read_settings(&path.with_extension("toml"))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    Ok(ModuleInput {
        bytes,
        digest,
        settings,
    })
}

/// The settings beside a module, as JSON text: `{}` when there is no file.
pub fn read_settings(path: &Path) -> Result<String, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => settings_from_toml(&text)
            .map_err(|e| Error::Settings(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok("{}".to_owned()),
        Err(e) => Err(Error::Io(path.display().to_string(), e.to_string())),
    }
}

/// TOML settings text as the JSON the module receives.
pub fn settings_from_toml(text: &str) -> Result<String, String> {
    let value: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    serde_json::to_string(&value).map_err(|e| e.to_string())
}
