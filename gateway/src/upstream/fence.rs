//! The fence around a stdio MCP server the gateway spawns: [`spawn`] starts one child with a
//! cleared environment, in its own session and process group, killed when the gateway dies,
//! with `no_new_privs`, resource limits, another user (when the gateway is root), Landlock
//! (filesystem, and TCP when the network is off) and optionally no network at all.
//!
//! Everything that can be decided is decided in the parent before the fork (user lookup, limits,
//! the Landlock ruleset, the environment, the command's path); the child only makes raw system
//! calls between `fork` and `exec` (no allocation, no locks: async-signal-safe) and writes the
//! outcome of each step as a fixed-size record to a close-on-exec pipe that the parent reads once
//! `spawn` has returned. Each step ends up in the [`FenceReport`] as applied, refused (with the
//! kernel's reason, also logged) or off. Only `run_as` is fatal: a child that cannot drop root
//! is never started. `docs/security.md` says what each step enforces and what it does not.

use crate::store::{EnvSpec, StdioSpec};
use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope,
};
use serde::{Deserialize, Serialize};
use std::ffi::{CStr, CString, OsString};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a child could not be spawned, or a group not signalled. Messages name the server, the
/// variable or the path, never a value read from the environment or a file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An environment variable of the spec cannot be resolved.
    #[error("server {server}: environment variable {name} ({origin}): {reason}")]
    Env {
        /// Server (`ws/name`).
        server: String,
        /// The variable's name in the child.
        name: String,
        /// Where its value comes from: `literal`, `env:VAR`, `file:PATH`.
        origin: String,
        /// Why, without the value.
        reason: String,
    },
    /// The server's home directory cannot be made or used.
    #[error("server {server}: home directory {path}: {reason}")]
    Home {
        /// Server.
        server: String,
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The `run_as` user cannot be used: unknown, or the kernel refused the switch.
    #[error("server {server}: run_as {user:?}: {reason}")]
    RunAs {
        /// Server.
        server: String,
        /// The configured user (name or uid).
        user: String,
        /// Why.
        reason: String,
    },
    /// The command cannot be found or is not executable.
    #[error("server {server}: command {command:?}: {reason}")]
    Command {
        /// Server.
        server: String,
        /// The configured command.
        command: String,
        /// Why.
        reason: String,
    },
    /// The process could not be started.
    #[error("server {server}: spawn failed: {reason}")]
    Spawn {
        /// Server.
        server: String,
        /// Why.
        reason: String,
    },
    /// A process group could not be signalled.
    #[error("process group {pid}: {reason}")]
    Signal {
        /// The group's id (its leader's pid).
        pid: u32,
        /// Why.
        reason: String,
    },
}

/// One child to start.
pub struct Launch<'a> {
    /// `workspace/name`, for logs and errors.
    pub server: &'a str,
    /// What to run and how it is fenced.
    pub spec: &'a StdioSpec,
    /// The server's own directory: its `HOME` (and working directory unless `spec.cwd` says
    /// otherwise), the only place it may write besides `fence.read_write`. Created `0700` (with
    /// `tmp/` inside, its `TMPDIR`) and owned by the `run_as` user when the gateway is root.
    pub home: PathBuf,
}

/// What the fence did for one child, step by step: what `mcpgw server status` shows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FenceReport {
    /// Every step, in the order they are taken.
    pub steps: Vec<FenceStep>,
}

impl FenceReport {
    /// The step called `name` (one of [`STEPS`]).
    pub fn step(&self, name: &str) -> Option<&FenceStep> {
        self.steps.iter().find(|s| s.step == name)
    }

    /// The steps the kernel refused.
    pub fn refused(&self) -> impl Iterator<Item = &FenceStep> {
        self.steps
            .iter()
            .filter(|s| matches!(s.state, StepState::Refused { .. }))
    }
}

/// One step of the fence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FenceStep {
    /// Which step (one of [`STEPS`]).
    pub step: String,
    /// Applied, refused or off.
    #[serde(flatten)]
    pub state: StepState,
    /// What exactly was applied (limits, paths, user), or why the step is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The outcome of one step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StepState {
    /// In force for the child.
    Applied,
    /// The kernel (or the machine) refused it; the child runs without it.
    Refused {
        /// The kernel's reason, e.g. `Operation not permitted (os error 1)`.
        reason: String,
    },
    /// Not asked for (fence disabled, network allowed, gateway not root).
    Off,
}

/// The names of the steps, in the order they are taken.
pub const STEPS: [&str; 9] = [
    ENVIRONMENT,
    PROCESS_GROUP,
    NETWORK,
    RLIMITS,
    RUN_AS,
    PARENT_DEATH_SIGNAL,
    NO_NEW_PRIVS,
    INHERITED_FDS,
    LANDLOCK,
];
/// The environment is cleared: `PATH`, `HOME`, `TMPDIR` and the spec's variables only.
pub const ENVIRONMENT: &str = "environment";
/// `setsid`: its own session and process group, no controlling terminal.
pub const PROCESS_GROUP: &str = "process_group";
/// `unshare(CLONE_NEWNET)`: an empty network namespace (`fence.no_network`).
pub const NETWORK: &str = "network";
/// `RLIMIT_DATA`, `RLIMIT_NPROC`, `RLIMIT_NOFILE`, `RLIMIT_CPU`.
pub const RLIMITS: &str = "rlimits";
/// `setgroups`/`setgid`/`setuid` to `fence.run_as` (gateway running as root).
pub const RUN_AS: &str = "run_as";
/// `PR_SET_PDEATHSIG` = `SIGKILL`.
pub const PARENT_DEATH_SIGNAL: &str = "parent_death_signal";
/// `PR_SET_NO_NEW_PRIVS`.
pub const NO_NEW_PRIVS: &str = "no_new_privs";
/// Every descriptor above stderr is closed at exec (`close_range(CLOSE_RANGE_CLOEXEC)`).
pub const INHERITED_FDS: &str = "inherited_fds";
/// The Landlock domain: filesystem, scopes, TCP when the network is off.
pub const LANDLOCK: &str = "landlock";

/// The child's `PATH`: fixed, not the gateway's. The gateway's own `PATH` depends on how it was
/// started (a user's `~/.cargo/bin`, a writable directory, a virtualenv) and would make what a
/// server runs depend on that too; a server whose tools live elsewhere names its command by
/// absolute path, and that command's directory is put first (so `npx` finds the `node` beside it).
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The largest file an `EnvSpec::file` may be.
pub const ENV_FILE_LIMIT: u64 = 64 * 1024;

/// System paths the child may read and execute (those that exist): the programs and libraries,
/// configuration (`/etc`: the resolver, CA certificates, passwd), `/proc` (runtimes read
/// `/proc/self`), what runtimes read to size themselves, and systemd-resolved's `resolv.conf`.
pub const SYSTEM_READ: [&str; 15] = [
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/opt",
    "/nix/store",
    "/proc",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
    "/run/systemd/resolve",
    "/dev/zero",
];

/// Device files the child may read and write.
pub const SYSTEM_READ_WRITE: [&str; 4] = ["/dev/null", "/dev/full", "/dev/random", "/dev/urandom"];

/// The newest Landlock ABI requested; the crate downgrades it to what the kernel offers (best
/// effort), and the report says which ABI was in force.
const LANDLOCK_ABI: ABI = ABI::V10;

/// Resolves the spec's environment: literal values, variables of the gateway's environment, files
/// (at most [`ENV_FILE_LIMIT`] bytes, one trailing newline removed). Errors name the variable
/// and where its value comes from, never the value.
pub fn resolve_env(server: &str, spec: &StdioSpec) -> Result<Vec<(String, String)>, Error> {
    resolve_env_with(server, spec, |name| std::env::var_os(name))
}

/// [`resolve_env`] with the gateway environment read through `lookup`.
fn resolve_env_with(
    server: &str,
    spec: &StdioSpec,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<Vec<(String, String)>, Error> {
    spec.env
        .iter()
        .map(|e| {
            let fail = |reason: String| Error::Env {
                server: server.to_owned(),
                name: e.name.clone(),
                origin: e.source(),
                reason,
            };
            let value = match e {
                EnvSpec { value: Some(v), .. } => v.clone(),
                EnvSpec {
                    from: Some(var), ..
                } => lookup(var)
                    .ok_or_else(|| fail("not set in the gateway's environment".into()))?
                    .into_string()
                    .map_err(|_| fail("not valid UTF-8".into()))?,
                EnvSpec { file: Some(p), .. } => read_env_file(p).map_err(fail)?,
                _ => return Err(fail("no value, variable or file given".into())),
            };
            if value.contains('\0') {
                return Err(fail("holds a NUL byte".into()));
            }
            Ok((e.name.clone(), value))
        })
        .collect()
}

/// A file's contents as a value; the reason on failure never quotes the contents.
fn read_env_file(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(ENV_FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > ENV_FILE_LIMIT {
        return Err(format!("larger than {ENV_FILE_LIMIT} bytes"));
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    String::from_utf8(bytes).map_err(|_| "not valid UTF-8".to_owned())
}

/// Signals for [`kill_group`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// `SIGTERM`: ask to stop.
    Terminate,
    /// `SIGKILL`.
    Kill,
}

/// Sends `signal` to the process group led by `pid` (a child from [`spawn`], whose
/// `process_group` step was applied). `Ok(false)` when no such group is left. Refuses pids 0 and
/// 1, which `killpg` would read as the gateway's own group and init's.
pub fn kill_group(pid: u32, signal: Signal) -> Result<bool, Error> {
    let pgrp = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| Error::Signal {
            pid,
            reason: "not a child's process group".into(),
        })?;
    let sig = match signal {
        Signal::Terminate => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    // SAFETY: killpg has no memory arguments.
    if unsafe { libc::killpg(pgrp, sig) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Ok(false),
        _ => Err(Error::Signal {
            pid,
            reason: err.to_string(),
        }),
    }
}

/// Starts the child fenced as its spec says, with stdin, stdout and stderr piped and killed when
/// the handle is dropped. Returns once the child has `exec`ed (or failed to), with the report of
/// every step.
///
/// Call it from a thread that lives as long as the child: an async task on a runtime worker, not
/// `spawn_blocking` nor a short-lived thread. The kernel sends the parent-death signal when the
/// *thread* that forked exits, and the child would be killed with it.
pub fn spawn(launch: &Launch) -> Result<(tokio::process::Child, FenceReport), Error> {
    let server = launch.server;
    let spec = launch.spec;
    let fence = &spec.fence;
    let on = fence.enabled;
    let root = unsafe { libc::geteuid() } == 0;
    let spawn_error = |reason: String| Error::Spawn {
        server: server.to_owned(),
        reason,
    };

    // Who the child runs as, decided before anything is created for it.
    let user = if on && root {
        Some(lookup_user(&fence.run_as).map_err(|reason| Error::RunAs {
            server: server.to_owned(),
            user: fence.run_as.clone(),
            reason,
        })?)
    } else {
        None
    };

    if user.as_ref().is_some_and(|u| u.uid == 0) {
        tracing::warn!(server, run_as = %fence.run_as, "stdio server runs as root, as configured");
    }
    let home = prepare_home(server, &launch.home, user.as_ref())?;
    let tmp = home.join("tmp");
    let cwd = spec.cwd.clone().unwrap_or_else(|| home.clone());
    let program = resolve_command(server, &spec.command, &cwd)?;
    let vars = resolve_env(server, spec)?;
    let path = child_path(&program);

    let mut steps = Vec::with_capacity(STEPS.len());
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    steps.push(step(
        ENVIRONMENT,
        StepState::Applied,
        Some(if names.is_empty() {
            "PATH, HOME, TMPDIR only".to_owned()
        } else {
            format!("PATH, HOME, TMPDIR and {}", names.join(", "))
        }),
    ));

    // The plan the child carries out, and the parent's side of every step.
    let (report_read, report_write) = pipe().map_err(|e| spawn_error(format!("pipe: {e}")))?;
    let rlimits = plan_rlimits(spec);
    let landlock = if on {
        Some(build_landlock(spec, &home, &cwd, &program))
    } else {
        None
    };
    let plan = ChildPlan {
        report_fd: report_write.as_raw_fd(),
        setsid: on,
        netns: on && fence.no_network,
        rlimits: if on {
            rlimits.each_ref().map(|r| r.value)
        } else {
            [None; 4]
        },
        run_as: user.as_ref().map(|u| (u.uid, u.gid)),
        parent: std::process::id() as libc::pid_t,
        pdeathsig: on,
        no_new_privs: on,
        cloexec_fds: on,
        landlock_fd: landlock
            .as_ref()
            .and_then(|l| l.fd.as_ref().map(|fd| fd.as_raw_fd())),
    };

    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&spec.args)
        .env_clear()
        .env("PATH", &path)
        .env("HOME", &home)
        .env("TMPDIR", &tmp)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .current_dir(&cwd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure only makes raw system calls on plain data prepared above (no
    // allocation, no locks), which is what is allowed between fork and exec.
    unsafe {
        cmd.pre_exec(move || plan.apply());
    }
    let spawned = cmd.spawn();
    // The child has exec'ed or failed: its records are all in the pipe.
    drop(report_write);
    let records = read_records(report_read);

    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            if let Some(errno) = records.get(&Step::RunAs).copied().filter(|e| *e != 0) {
                return Err(Error::RunAs {
                    server: server.to_owned(),
                    user: fence.run_as.clone(),
                    reason: errno_text(errno),
                });
            }
            return Err(spawn_error(format!("{}: {e}", program.display())));
        }
    };

    let from_child = |s: Step| match records.get(&s) {
        Some(0) => StepState::Applied,
        Some(errno) => StepState::Refused {
            reason: errno_text(*errno),
        },
        None => StepState::Refused {
            reason: "no word from the child".into(),
        },
    };
    let off = |why: &str| (StepState::Off, Some(why.to_owned()));
    let disabled = "fence disabled";

    let (state, detail) = if on {
        (from_child(Step::ProcessGroup), None)
    } else {
        off(disabled)
    };
    steps.push(step(PROCESS_GROUP, state, detail));

    let (state, detail) = match (on, fence.no_network) {
        (false, _) => off(disabled),
        (true, false) => off("network allowed (fence.no_network = false)"),
        (true, true) => match from_child(Step::Network) {
            StepState::Applied => (
                StepState::Applied,
                Some("own network namespace: loopback only, down".into()),
            ),
            refused => (
                refused,
                Some(
                    "the gateway's network: Landlock denies TCP if its ABI allows (see landlock)"
                        .into(),
                ),
            ),
        },
    };
    steps.push(step(NETWORK, state, detail));

    let (state, detail) = if on {
        let mut refused = Vec::new();
        for r in &rlimits {
            if let Some(e) = records.get(&r.step).filter(|e| **e != 0) {
                refused.push(format!("{}: {}", r.name, errno_text(*e)));
            }
        }
        let detail = rlimits
            .iter()
            .map(|r| r.detail.clone())
            .collect::<Vec<_>>()
            .join(", ");
        if refused.is_empty() {
            (StepState::Applied, Some(detail))
        } else {
            (
                StepState::Refused {
                    reason: refused.join("; "),
                },
                Some(detail),
            )
        }
    } else {
        off(disabled)
    };
    steps.push(step(RLIMITS, state, detail));

    let (state, detail) = match (&user, on) {
        (Some(u), _) => (
            from_child(Step::RunAs),
            Some(format!(
                "uid {} gid {} ({}), no supplementary groups{}",
                u.uid,
                u.gid,
                u.label,
                if u.uid == 0 {
                    "; root: file modes do not bind it, nor Landlock's process checks"
                } else {
                    ""
                }
            )),
        ),
        (None, false) => off(disabled),
        (None, true) => off(&format!(
            "the gateway is not root: the child keeps its uid {}",
            unsafe { libc::geteuid() }
        )),
    };
    steps.push(step(RUN_AS, state, detail));

    for (name, s, what) in [
        (PARENT_DEATH_SIGNAL, Step::ParentDeath, "SIGKILL"),
        (NO_NEW_PRIVS, Step::NoNewPrivs, "set"),
        (
            INHERITED_FDS,
            Step::Fds,
            "descriptors above stderr closed at exec",
        ),
    ] {
        let (state, detail) = if on {
            (from_child(s), Some(what.to_owned()))
        } else {
            off(disabled)
        };
        steps.push(step(name, state, detail));
    }

    let (state, detail) = match &landlock {
        None => off(disabled),
        Some(l) => match (&l.refused, l.fd.is_some()) {
            (Some(reason), _) => (
                StepState::Refused {
                    reason: reason.clone(),
                },
                Some(l.detail.clone()),
            ),
            (None, true) => (from_child(Step::Landlock), Some(l.detail.clone())),
            (None, false) => (
                StepState::Refused {
                    reason: "no ruleset".into(),
                },
                Some(l.detail.clone()),
            ),
        },
    };
    steps.push(step(LANDLOCK, state, detail));

    let report = FenceReport { steps };
    for s in report.refused() {
        if let StepState::Refused { reason } = &s.state {
            tracing::warn!(server, step = %s.step, reason = %reason, "fence step refused by the kernel; the server runs without it");
        }
    }
    tracing::debug!(server, pid = child.id(), "fenced server spawned");
    Ok((child, report))
}

fn step(name: &str, state: StepState, detail: Option<String>) -> FenceStep {
    FenceStep {
        step: name.to_owned(),
        state,
        detail,
    }
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

/// A `run_as` user, resolved before the fork.
#[derive(Clone, Debug, PartialEq, Eq)]
struct User {
    uid: libc::uid_t,
    gid: libc::gid_t,
    /// The name, or `uid N` for an id without a passwd entry.
    label: String,
}

/// `run_as` as a passwd name, or a numeric uid (gid: the passwd entry's if there is one, else
/// the same number).
fn lookup_user(run_as: &str) -> Result<User, String> {
    if let Ok(uid) = run_as.parse::<libc::uid_t>() {
        return Ok(match getpw(PwKey::Uid(uid))? {
            Some(u) => u,
            None => User {
                uid,
                gid: uid,
                label: format!("uid {uid}"),
            },
        });
    }
    let name = CString::new(run_as).map_err(|_| "holds a NUL byte".to_owned())?;
    getpw(PwKey::Name(&name))?.ok_or_else(|| "no such user on this machine".to_owned())
}

enum PwKey<'a> {
    Name(&'a CStr),
    Uid(libc::uid_t),
}

/// `getpwnam_r` / `getpwuid_r`, growing the buffer on `ERANGE`.
fn getpw(key: PwKey) -> Result<Option<User>, String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: an all-zero passwd is a valid value (null pointers, zero ids).
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, buf for buf.len() bytes.
        let rc = unsafe {
            match &key {
                PwKey::Name(n) => {
                    libc::getpwnam_r(n.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out)
                }
                PwKey::Uid(u) => {
                    libc::getpwuid_r(*u, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out)
                }
            }
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(format!("user lookup failed: {}", errno_text(rc)));
        }
        if out.is_null() {
            return Ok(None);
        }
        // SAFETY: on success pw_name points at a NUL-terminated string inside buf.
        let name = unsafe { CStr::from_ptr(pw.pw_name) }
            .to_string_lossy()
            .into_owned();
        return Ok(Some(User {
            uid: pw.pw_uid,
            gid: pw.pw_gid,
            label: name,
        }));
    }
}

/// Creates the home (and `tmp/` in it) `0700`, owned by the child's user; refuses a symlink (a
/// chown through it would hand over whatever it points at) and a home the user could not reach.
fn prepare_home(server: &str, home: &Path, user: Option<&User>) -> Result<PathBuf, Error> {
    let fail = |path: &Path, reason: String| Error::Home {
        server: server.to_owned(),
        path: path.to_owned(),
        reason,
    };
    if !home.is_absolute() {
        return Err(fail(home, "must be an absolute path".into()));
    }
    std::fs::create_dir_all(home).map_err(|e| fail(home, e.to_string()))?;
    let tmp = home.join("tmp");
    match std::fs::create_dir(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(&tmp, e.to_string())),
    }
    for dir in [home, tmp.as_path()] {
        let meta = std::fs::symlink_metadata(dir).map_err(|e| fail(dir, e.to_string()))?;
        if !meta.file_type().is_dir() {
            return Err(fail(dir, "is not a directory (a symlink?)".into()));
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(dir, e.to_string()))?;
        if let Some(u) = user {
            std::os::unix::fs::lchown(dir, Some(u.uid), Some(u.gid))
                .map_err(|e| fail(dir, e.to_string()))?;
        }
    }
    let home = home.canonicalize().map_err(|e| fail(home, e.to_string()))?;
    if let Some(u) = user {
        // Every directory above the home must let the user through (it has no other groups).
        for dir in home.ancestors().skip(1) {
            let meta = std::fs::metadata(dir).map_err(|e| fail(dir, e.to_string()))?;
            let mode = meta.mode();
            let through = if u.uid == 0 {
                true
            } else if meta.uid() == u.uid {
                mode & 0o100 != 0
            } else if meta.gid() == u.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !through {
                return Err(fail(
                    &home,
                    format!(
                        "{} cannot pass through {} (mode {:o}): make it searchable (o+x) or put the home elsewhere",
                        u.label,
                        dir.display(),
                        mode & 0o7777
                    ),
                ));
            }
        }
    }
    Ok(home)
}

/// The absolute path of the command: as given if it holds a `/` (relative to the working
/// directory), else looked up on [`DEFAULT_PATH`], the child's `PATH`.
fn resolve_command(server: &str, command: &str, cwd: &Path) -> Result<PathBuf, Error> {
    let fail = |reason: String| Error::Command {
        server: server.to_owned(),
        command: command.to_owned(),
        reason,
    };
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let p = cwd.join(command);
        return if executable(&p) {
            Ok(p)
        } else {
            Err(fail("not an executable file".into()))
        };
    }
    DEFAULT_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(command))
        .find(|p| executable(p))
        .ok_or_else(|| {
            fail(format!(
                "not found on the servers' PATH ({DEFAULT_PATH}); give its absolute path"
            ))
        })
}

/// [`DEFAULT_PATH`], with the command's own directory first when it is not on it.
fn child_path(program: &Path) -> String {
    match program.parent().and_then(Path::to_str) {
        Some(dir) if !DEFAULT_PATH.split(':').any(|d| d == dir) && !dir.contains(':') => {
            format!("{dir}:{DEFAULT_PATH}")
        }
        _ => DEFAULT_PATH.to_owned(),
    }
}

/// One resource limit: its child-side step and value, and what the report says of it.
#[derive(Clone)]
struct RlimitPlan {
    step: Step,
    name: &'static str,
    value: Option<libc::rlim_t>,
    detail: String,
}

/// The four limits, each capped at the gateway's own hard limit (which the child cannot raise).
fn plan_rlimits(spec: &StdioSpec) -> [RlimitPlan; 4] {
    let f = &spec.fence;
    let mb = f.memory_mb.saturating_mul(1024 * 1024);
    let plan = |step: Step, name: &'static str, want: u64, unit: &str, shown: u64| {
        let hard = current_hard_limit(step);
        let value = (want as libc::rlim_t).min(hard);
        let detail = if value < want as libc::rlim_t {
            format!("{name} {value} (the gateway's hard limit, below {shown}{unit})")
        } else {
            format!("{name} {shown}{unit}")
        };
        RlimitPlan {
            step,
            name,
            value: Some(value),
            detail,
        }
    };
    [
        plan(Step::RlimitData, "RLIMIT_DATA", mb, " MiB", f.memory_mb),
        plan(
            Step::RlimitNproc,
            "RLIMIT_NPROC",
            f.max_processes,
            "",
            f.max_processes,
        ),
        plan(
            Step::RlimitNofile,
            "RLIMIT_NOFILE",
            f.max_open_files,
            "",
            f.max_open_files,
        ),
        plan(
            Step::RlimitCpu,
            "RLIMIT_CPU",
            f.cpu_seconds,
            " s",
            f.cpu_seconds,
        ),
    ]
}

fn current_hard_limit(step: Step) -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if step.getrlimit(&mut lim) == 0 {
        lim.rlim_max
    } else {
        libc::RLIM_INFINITY
    }
}

/// The Landlock ruleset, built in the parent; the child only calls `landlock_restrict_self`.
struct LandlockPlan {
    fd: Option<OwnedFd>,
    refused: Option<String>,
    detail: String,
}

/// The kernel's Landlock ABI version, or why there is none.
pub fn landlock_abi() -> Result<i32, String> {
    // SAFETY: the version query takes no memory arguments.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if v >= 1 {
        return Ok(v as i32);
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) => "Landlock is built in but not enabled at boot (lsm=)".into(),
        Some(libc::ENOSYS) => "this kernel has no Landlock".into(),
        _ => err.to_string(),
    })
}

fn build_landlock(spec: &StdioSpec, home: &Path, cwd: &Path, program: &Path) -> LandlockPlan {
    let f = &spec.fence;
    let abi = match landlock_abi() {
        Ok(v) => v,
        Err(reason) => {
            return LandlockPlan {
                fd: None,
                refused: Some(reason),
                detail: "the child runs without a filesystem fence".into(),
            };
        }
    };
    let read = AccessFs::from_read(LANDLOCK_ABI);
    let all = AccessFs::from_all(LANDLOCK_ABI);
    let file_only = AccessFs::from_file(LANDLOCK_ABI);

    let mut read_paths: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
    // The command's directory, and its real one when it is a symlink (`/usr/bin/npx` points
    // into `/usr/lib/node_modules`).
    let real = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_owned());
    for p in [program, real.as_path()] {
        if let Some(dir) = p.parent() {
            read_paths.push(dir.to_owned());
        }
    }
    read_paths.push(cwd.to_owned());
    let mut write_paths: Vec<PathBuf> = SYSTEM_READ_WRITE.iter().map(PathBuf::from).collect();
    write_paths.push(home.to_owned());

    let mut missing = Vec::new();
    let mut rules: Vec<PathBeneath<PathFd>> = Vec::new();
    let mut add = |p: &Path, access: BitFlags<AccessFs>, configured: bool| match PathFd::new(p) {
        Ok(fd) => {
            let access = if std::fs::metadata(p).is_ok_and(|m| !m.is_dir()) {
                access & file_only
            } else {
                access
            };
            rules.push(PathBeneath::new(fd, access));
        }
        Err(_) if configured => missing.push(p.display().to_string()),
        Err(_) => {}
    };
    for p in &read_paths {
        add(p, read, false);
    }
    for p in &f.read_only {
        add(p, read, true);
    }
    for p in &write_paths {
        add(p, all, false);
    }
    for p in &f.read_write {
        add(p, all, true);
    }

    let mut detail = format!(
        "ABI {abi}; read+execute: system dirs, the command's dir, the working dir{}; read-write: HOME, /dev/null, /dev/full, /dev/random, /dev/urandom{}",
        if f.read_only.is_empty() {
            String::new()
        } else {
            format!(", {} read_only path(s)", f.read_only.len())
        },
        if f.read_write.is_empty() {
            String::new()
        } else {
            format!(", {} read_write path(s)", f.read_write.len())
        },
    );
    if abi >= 6 {
        detail.push_str("; signals and abstract unix sockets scoped to the sandbox");
    }
    if f.no_network {
        detail.push_str(if abi >= 4 {
            "; TCP bind and connect denied"
        } else {
            "; TCP not fenced (needs ABI 4)"
        });
    }
    if abi < 9 {
        detail.push_str("; unix socket paths not fenced (needs ABI 9)");
    }
    if !missing.is_empty() {
        detail.push_str(&format!("; missing, not granted: {}", missing.join(", ")));
    }

    let built = (|| -> Result<Option<OwnedFd>, landlock::RulesetError> {
        let mut ruleset = Ruleset::default().handle_access(all)?;
        if f.no_network {
            ruleset = ruleset.handle_access(AccessNet::from_all(LANDLOCK_ABI))?;
        }
        ruleset = ruleset.scope(Scope::from_all(LANDLOCK_ABI))?;
        let created = ruleset
            .create()?
            .add_rules(rules.into_iter().map(Ok::<_, landlock::RulesetError>))?;
        Ok(created.into())
    })();
    match built {
        Ok(fd) => LandlockPlan {
            fd,
            refused: None,
            detail,
        },
        Err(e) => LandlockPlan {
            fd: None,
            refused: Some(e.to_string()),
            detail,
        },
    }
}

/// A close-on-exec, non-blocking pipe: (read end, write end).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened and are owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The steps the child takes, as they travel in its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
enum Step {
    ProcessGroup = 1,
    Network,
    RlimitData,
    RlimitNproc,
    RlimitNofile,
    RlimitCpu,
    RunAs,
    ParentDeath,
    NoNewPrivs,
    Fds,
    Landlock,
}

impl Step {
    const ALL: [Step; 11] = [
        Step::ProcessGroup,
        Step::Network,
        Step::RlimitData,
        Step::RlimitNproc,
        Step::RlimitNofile,
        Step::RlimitCpu,
        Step::RunAs,
        Step::ParentDeath,
        Step::NoNewPrivs,
        Step::Fds,
        Step::Landlock,
    ];

    fn from_u8(b: u8) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u8 == b)
    }

    /// `getrlimit` of an rlimit step's resource (RLIMIT_DATA for the other steps, never asked).
    /// A match per call rather than a resource value: its type differs between libcs.
    fn getrlimit(self, lim: &mut libc::rlimit) -> libc::c_int {
        // SAFETY: lim is valid to write to.
        unsafe {
            match self {
                Step::RlimitNproc => libc::getrlimit(libc::RLIMIT_NPROC, lim),
                Step::RlimitNofile => libc::getrlimit(libc::RLIMIT_NOFILE, lim),
                Step::RlimitCpu => libc::getrlimit(libc::RLIMIT_CPU, lim),
                _ => libc::getrlimit(libc::RLIMIT_DATA, lim),
            }
        }
    }

    /// `setrlimit`, as [`Step::getrlimit`]; async-signal-safe.
    fn setrlimit(self, lim: &libc::rlimit) -> libc::c_int {
        // SAFETY: lim is a valid rlimit.
        unsafe {
            match self {
                Step::RlimitNproc => libc::setrlimit(libc::RLIMIT_NPROC, lim),
                Step::RlimitNofile => libc::setrlimit(libc::RLIMIT_NOFILE, lim),
                Step::RlimitCpu => libc::setrlimit(libc::RLIMIT_CPU, lim),
                _ => libc::setrlimit(libc::RLIMIT_DATA, lim),
            }
        }
    }
}

/// One record: the step, then its errno (0: applied), native endian.
const RECORD: usize = 8;

/// The child's records, by step (errno, 0 for applied). Reads what is in the pipe without
/// waiting for its end: another thread's fork may hold a copy of the write end until that child
/// execs.
fn read_records(read_end: OwnedFd) -> std::collections::BTreeMap<Step, i32> {
    let mut bytes = Vec::new();
    let mut file = std::fs::File::from(read_end);
    let mut buf = [0u8; 256];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    decode_records(&bytes)
}

fn decode_records(bytes: &[u8]) -> std::collections::BTreeMap<Step, i32> {
    bytes
        .chunks_exact(RECORD)
        .filter_map(|r| {
            let step = Step::from_u8(r[0])?;
            let errno = i32::from_ne_bytes([r[4], r[5], r[6], r[7]]);
            Some((step, errno))
        })
        .collect()
}

/// What the child does between fork and exec: plain data only.
#[derive(Clone, Copy)]
struct ChildPlan {
    report_fd: RawFd,
    setsid: bool,
    netns: bool,
    rlimits: [Option<libc::rlim_t>; 4],
    run_as: Option<(libc::uid_t, libc::gid_t)>,
    parent: libc::pid_t,
    pdeathsig: bool,
    no_new_privs: bool,
    cloexec_fds: bool,
    landlock_fd: Option<RawFd>,
}

/// The errno of the last failed call.
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl ChildPlan {
    /// Writes one record. A failed write loses the record (the parent reports "no word").
    fn record(&self, step: Step, errno: i32) {
        let mut r = [0u8; RECORD];
        r[0] = step as u8;
        r[4..8].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: r is valid for RECORD bytes.
        unsafe { libc::write(self.report_fd, r.as_ptr().cast(), RECORD) };
    }

    /// Records the outcome of a call that returns 0 on success.
    fn check(&self, step: Step, rc: libc::c_long) -> i32 {
        let e = if rc == 0 { 0 } else { errno() };
        self.record(step, e);
        e
    }

    /// Runs in the child after fork, before exec: raw system calls only. Order matters: the
    /// namespace needs root (before setuid); the parent-death signal is cleared by a change of
    /// credentials (after setuid); Landlock needs no_new_privs once root is gone.
    fn apply(&self) -> std::io::Result<()> {
        // SAFETY (whole body): system calls on plain values and stack buffers.
        unsafe {
            if self.setsid {
                let rc = if libc::setsid() < 0 { -1 } else { 0 };
                self.check(Step::ProcessGroup, rc);
            }
            if self.netns {
                self.check(
                    Step::Network,
                    libc::unshare(libc::CLONE_NEWNET) as libc::c_long,
                );
            }
            let steps = [
                Step::RlimitData,
                Step::RlimitNproc,
                Step::RlimitNofile,
                Step::RlimitCpu,
            ];
            for (step, value) in steps.into_iter().zip(self.rlimits) {
                if let Some(v) = value {
                    let lim = libc::rlimit {
                        rlim_cur: v,
                        rlim_max: v,
                    };
                    self.check(step, step.setrlimit(&lim) as libc::c_long);
                }
            }
            if let Some((uid, gid)) = self.run_as {
                let ok = libc::setgroups(0, std::ptr::null()) == 0
                    && libc::setgid(gid) == 0
                    && libc::setuid(uid) == 0;
                let e = if !ok {
                    errno()
                } else if libc::getuid() != uid
                    || libc::geteuid() != uid
                    || libc::getgid() != gid
                    || libc::getegid() != gid
                {
                    libc::EPERM
                } else {
                    0
                };
                self.record(Step::RunAs, e);
                if e != 0 {
                    // Never exec as root when asked not to.
                    return Err(std::io::Error::from_raw_os_error(e));
                }
            }
            if self.pdeathsig {
                let e = self.check(
                    Step::ParentDeath,
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) as _,
                );
                // The gateway died before the signal was armed: nobody will read this child.
                if e == 0 && libc::getppid() != self.parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
            if self.no_new_privs {
                self.check(
                    Step::NoNewPrivs,
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) as _,
                );
            }
            if self.cloexec_fds {
                self.check(
                    Step::Fds,
                    libc::syscall(
                        libc::SYS_close_range,
                        3 as libc::c_uint,
                        libc::c_uint::MAX,
                        libc::CLOSE_RANGE_CLOEXEC,
                    ),
                );
            }
            if let Some(fd) = self.landlock_fd {
                self.check(
                    Step::Landlock,
                    libc::syscall(libc::SYS_landlock_restrict_self, fd, 0 as libc::c_uint),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Fence;
    use std::collections::HashMap;
    use std::os::unix::ffi::OsStringExt;

    fn spec(env: Vec<EnvSpec>) -> StdioSpec {
        StdioSpec {
            command: "/bin/sh".into(),
            args: vec![],
            env,
            cwd: None,
            fence: Fence::default(),
        }
    }

    fn env(name: &str, value: Option<&str>, from: Option<&str>, file: Option<&Path>) -> EnvSpec {
        EnvSpec {
            name: name.into(),
            value: value.map(Into::into),
            from: from.map(Into::into),
            file: file.map(Into::into),
        }
    }

    fn gateway_env(vars: &[(&str, &[u8])]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, Vec<u8>> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        move |name| map.get(name).cloned().map(OsString::from_vec)
    }

    #[test]
    fn env_resolves_literals_gateway_variables_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret-from-file\r\n").unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "two\nlines\n\n").unwrap();
        let s = spec(vec![
            env("LIT", Some("v"), None, None),
            env("FROM", None, Some("GW_VAR"), None),
            env("FILE", None, None, Some(&token)),
            env("PLAIN", None, None, Some(&plain)),
        ]);
        let got =
            resolve_env_with("ws/s", &s, gateway_env(&[("GW_VAR", b"from-gateway")])).unwrap();
        assert_eq!(
            got,
            vec![
                ("LIT".to_owned(), "v".to_owned()),
                ("FROM".to_owned(), "from-gateway".to_owned()),
                ("FILE".to_owned(), "s3cret-from-file".to_owned()),
                // Only one trailing newline goes.
                ("PLAIN".to_owned(), "two\nlines\n".to_owned()),
            ]
        );
        // The real environment: PATH is set wherever tests run.
        let s = spec(vec![env("P", None, Some("PATH"), None)]);
        let got = resolve_env("ws/s", &s).unwrap();
        assert_eq!(got[0].1, std::env::var("PATH").unwrap());
    }

    #[test]
    fn env_errors_name_the_variable_and_source_never_a_value() {
        let s = spec(vec![
            env("LIT", Some("literal-secret"), None, None),
            env("TOKEN", None, Some("GH_TOKEN"), None),
        ]);
        let err = resolve_env_with("ws/s", &s, gateway_env(&[("OTHER", b"other-secret")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "server ws/s: environment variable TOKEN (env:GH_TOKEN): not set in the gateway's environment"
        );

        // A gateway variable that is not UTF-8: named, its bytes not shown.
        let s = spec(vec![env("TOKEN", None, Some("GH_TOKEN"), None)]);
        let err = resolve_env_with("ws/s", &s, gateway_env(&[("GH_TOKEN", b"bad\xffsecret")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TOKEN (env:GH_TOKEN): not valid UTF-8"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        let mut contents = b"secret-start".to_vec();
        contents.resize(ENV_FILE_LIMIT as usize + 1, b'x');
        std::fs::write(&big, &contents).unwrap();
        let nul = dir.path().join("nul");
        std::fs::write(&nul, b"secret\0value").unwrap();
        let missing = dir.path().join("missing");
        for (file, why) in [
            (&big, "larger than 65536 bytes"),
            (&nul, "holds a NUL byte"),
            (&missing, "No such file or directory"),
        ] {
            let s = spec(vec![env("KEY", None, None, Some(file))]);
            let err = resolve_env("ws/s", &s).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "server ws/s: environment variable KEY (file:{})",
                    file.display()
                )),
                "{err}"
            );
            assert!(err.contains(why), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }

        // Exactly the limit is fine.
        std::fs::write(&big, vec![b'y'; ENV_FILE_LIMIT as usize]).unwrap();
        let s = spec(vec![env("KEY", None, None, Some(&big))]);
        assert_eq!(
            resolve_env("ws/s", &s).unwrap()[0].1.len(),
            ENV_FILE_LIMIT as usize
        );
    }

    #[test]
    fn commands_resolve_on_the_fixed_path_and_lend_it_their_directory() {
        let cwd = Path::new("/");
        let first = DEFAULT_PATH
            .split(':')
            .map(|d| Path::new(d).join("sh"))
            .find(|p| p.exists())
            .unwrap();
        assert_eq!(resolve_command("ws/s", "sh", cwd).unwrap(), first);
        assert_eq!(
            resolve_command("ws/s", "../bin/sh", Path::new("/usr")).unwrap(),
            Path::new("/usr/../bin/sh")
        );
        let err = resolve_command("ws/s", "mcpgw-no-such-command", cwd)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found on the servers' PATH"), "{err}");
        assert!(resolve_command("ws/s", "/etc/passwd", cwd).is_err());
        assert_eq!(child_path(Path::new("/usr/bin/sh")), DEFAULT_PATH);
        assert_eq!(
            child_path(Path::new("/opt/node/bin/npx")),
            format!("/opt/node/bin:{DEFAULT_PATH}")
        );
    }

    #[test]
    fn unknown_users_are_refused_and_numeric_ids_accepted() {
        assert!(lookup_user("mcpgw-no-such-user").is_err());
        let root = lookup_user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let by_id = lookup_user("0").unwrap();
        assert_eq!(by_id.label, "root");
        let unnamed = lookup_user("4000123").unwrap();
        assert_eq!((unnamed.uid, unnamed.gid), (4000123, 4000123));
    }

    #[test]
    fn child_records_decode_and_ignore_garbage() {
        let mut bytes = Vec::new();
        for (step, errno) in [
            (Step::RunAs as u8, 0i32),
            (Step::Landlock as u8, 1),
            (99, 5),
        ] {
            bytes.push(step);
            bytes.extend_from_slice(&[0, 0, 0]);
            bytes.extend_from_slice(&errno.to_ne_bytes());
        }
        bytes.push(7); // a torn record
        let r = decode_records(&bytes);
        assert_eq!(r.len(), 2);
        assert_eq!(r[&Step::RunAs], 0);
        assert_eq!(r[&Step::Landlock], 1);
    }

    #[test]
    fn reports_serialize_flat() {
        let r = FenceReport {
            steps: vec![
                step(LANDLOCK, StepState::Applied, Some("ABI 7".into())),
                step(
                    NETWORK,
                    StepState::Refused {
                        reason: "Operation not permitted (os error 1)".into(),
                    },
                    None,
                ),
                step(RUN_AS, StepState::Off, None),
            ],
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"steps": [
                {"step": "landlock", "state": "applied", "detail": "ABI 7"},
                {"step": "network", "state": "refused", "reason": "Operation not permitted (os error 1)"},
                {"step": "run_as", "state": "off"},
            ]})
        );
        assert_eq!(serde_json::from_value::<FenceReport>(json).unwrap(), r);
    }

    #[test]
    fn kill_group_refuses_our_own_group_and_init() {
        assert!(kill_group(0, Signal::Terminate).is_err());
        assert!(kill_group(1, Signal::Terminate).is_err());
        assert!(kill_group(u32::MAX, Signal::Terminate).is_err());
    }
}
