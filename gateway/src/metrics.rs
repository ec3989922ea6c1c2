//! Prometheus metrics, served as text on the admin listener (`GET /metrics`, admin token).
//!
//! Counters on the request path are plain atomics (or one short lock for the request table);
//! everything else (policy modules and reloads, the audit queue, tool calls by decision and
//! status) is read from its owner at scrape time. The exposition is written here rather than
//! through a client library: a dozen families with fixed shapes do not need a registry.

use crate::audit::{Audit, DECISIONS, STATUSES};
use crate::policy::PolicySet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the upstream latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Endpoints whose requests are counted.
const ENDPOINTS: [&str; 5] = ["mcp", "mcp_server", "metadata", "other", "admin"];
/// HTTP statuses are 100..=599.
const STATUS_BASE: u16 = 100;
const STATUS_SPAN: usize = 500;

/// The gateway's own counters.
#[derive(Debug)]
pub struct Metrics {
    /// Requests by endpoint (index into [`ENDPOINTS`]) and status (less [`STATUS_BASE`]):
    /// one atomic each, so counting takes no lock.
    requests: Vec<AtomicU64>,
    /// Time from sending a request upstream to its response headers.
    pub upstream_latency: Histogram,
    /// `tools/call`s over a rate limit: refused, and let through as would-deny (enforcement off).
    pub rate_limited: [AtomicU64; 2],
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: (0..ENDPOINTS.len() * STATUS_SPAN)
                .map(|_| AtomicU64::new(0))
                .collect(),
            upstream_latency: Histogram::default(),
            rate_limited: Default::default(),
        }
    }
}

impl Metrics {
    /// Counts one HTTP request answered on `endpoint` (one of mcp, mcp_server, metadata, other,
    /// admin) with `status`.
    pub fn request(&self, endpoint: &'static str, status: u16) {
        let e = ENDPOINTS.iter().position(|n| *n == endpoint).unwrap_or(3);
        let s = usize::from(status.saturating_sub(STATUS_BASE)).min(STATUS_SPAN - 1);
        self.requests[e * STATUS_SPAN + s].fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, audit: &Audit, policies: &PolicySet) -> String {
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "mcpgw_http_requests_total",
            "counter",
            "HTTP requests answered, by endpoint (mcp, mcp_server, metadata, admin) and status.",
        );
        for (i, n) in self.requests.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let endpoint = ENDPOINTS[i / STATUS_SPAN];
            let status = STATUS_BASE as usize + i % STATUS_SPAN;
            let _ = writeln!(
                out,
                "mcpgw_http_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        family(
            &mut out,
            "mcpgw_tool_calls_total",
            "counter",
            "tools/call requests, by policy decision and how they ended (audited calls).",
        );
        for (d, decision) in DECISIONS.iter().enumerate() {
            for (s, status) in STATUSES.iter().enumerate() {
                let n = audit.stats().call_count(d, s);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "mcpgw_tool_calls_total{{decision=\"{}\",status=\"{}\"}} {n}",
                        decision.as_str(),
                        status.as_str()
                    );
                }
            }
        }
        family(
            &mut out,
            "mcpgw_rate_limited_total",
            "counter",
            "tools/call requests over a rate limit, by decision (deny; would-deny with enforcement off).",
        );
        for (i, decision) in ["deny", "would-deny"].iter().enumerate() {
            let n = self.rate_limited[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "mcpgw_rate_limited_total{{decision=\"{decision}\"}} {n}"
            );
        }
        family(
            &mut out,
            "mcpgw_upstream_latency_seconds",
            "histogram",
            "Time from sending a request upstream to its response headers.",
        );
        self.upstream_latency
            .render(&mut out, "mcpgw_upstream_latency_seconds");

        let status = policies.status();
        family(
            &mut out,
            "mcpgw_policy_modules_live",
            "gauge",
            "Policy modules in the live chain.",
        );
        let _ = writeln!(out, "mcpgw_policy_modules_live {}", status.modules.len());
        family(
            &mut out,
            "mcpgw_policy_decisions_total",
            "counter",
            "Module evaluations by module and outcome (pass = allow or abstain); reset when a module is reloaded.",
        );
        for m in &status.modules {
            let name = label(&m.name);
            let deny = m.denies.saturating_sub(m.errors);
            let pass = m.decisions.saturating_sub(m.denies);
            for (outcome, n) in [("pass", pass), ("deny", deny), ("error", m.errors)] {
                let _ = writeln!(
                    out,
                    "mcpgw_policy_decisions_total{{module=\"{name}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        family(
            &mut out,
            "mcpgw_policy_calls_skipped_total",
            "counter",
            "Call-phase questions a module was not asked: the arguments held none of its call triggers; reset when a module is reloaded.",
        );
        for m in &status.modules {
            let _ = writeln!(
                out,
                "mcpgw_policy_calls_skipped_total{{module=\"{}\"}} {}",
                label(&m.name),
                m.skipped
            );
        }
        let chain = policies.chain();
        family(
            &mut out,
            "mcpgw_policy_listing_cache_hits_total",
            "counter",
            "Listing questions answered from the live chain's memory instead of by its modules; reset on reload.",
        );
        let _ = writeln!(
            out,
            "mcpgw_policy_listing_cache_hits_total {}",
            chain.listing_cache().hits()
        );
        let (reloads, failures) = policies.reload_counts();
        family(
            &mut out,
            "mcpgw_policy_reloads_total",
            "counter",
            "Policy directory rescans that changed the chain.",
        );
        let _ = writeln!(out, "mcpgw_policy_reloads_total {reloads}");
        family(
            &mut out,
            "mcpgw_policy_reload_failures_total",
            "counter",
            "Policy files refused at load (the previous version, if any, kept serving).",
        );
        let _ = writeln!(out, "mcpgw_policy_reload_failures_total {failures}");

        let stats = audit.stats();
        for (name, kind, help, value) in [
            (
                "mcpgw_audit_queue_depth",
                "gauge",
                "Audit records waiting for the writer, places held by calls in flight included.",
                audit.queue_depth() as u64,
            ),
            (
                "mcpgw_audit_records_written_total",
                "counter",
                "Audit records committed to the store.",
                stats.written.load(Ordering::Relaxed),
            ),
            (
                "mcpgw_audit_records_dropped_total",
                "counter",
                "Audit records dropped on a full queue (when_full = drop, and failed authentications).",
                stats.dropped.load(Ordering::Relaxed),
            ),
            (
                "mcpgw_audit_calls_refused_total",
                "counter",
                "Calls refused because the audit queue was full.",
                stats.refused.load(Ordering::Relaxed),
            ),
            (
                "mcpgw_audit_write_errors_total",
                "counter",
                "Failed audit batch writes (each is retried).",
                stats.write_errors.load(Ordering::Relaxed),
            ),
        ] {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x");
        assert!(out.contains("x_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }
}
