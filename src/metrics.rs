//! Prometheus metrics: one process-wide registry, and one function per
//! thing measured, called where it happens.
//!
//! `GET /metrics` (`src/server/mod.rs`) renders [`render`] in the
//! OpenMetrics text format, which Prometheus scrapes.
//!
//! Architecture invariant: every label value is from a fixed set or a
//! configured name: the environment label is a configured environment's
//! name or `"unknown"`, the issuer label an issuer's configured name, the
//! others `&'static str`s from the code. No claim value, URL, path or
//! error text ever becomes a label, so the number of series is bounded
//! whatever jobs send.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The environment label of a request for an environment no policy names.
pub(crate) const UNKNOWN_ENVIRONMENT: &str = "unknown";

/// Why a request was refused before its pipeline ran
/// (`jobkey_refusals_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Over a rate limit.
    RateLimit,
    /// A token already used.
    Replay,
    /// Too many connections or requests in flight.
    Busy,
}

impl Refusal {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::RateLimit => "rate_limit",
            Refusal::Replay => "replay",
            Refusal::Busy => "busy",
        }
    }
}

/// How an exchange ended (`jobkey_exchanges_total{decision}`): `deny` is
/// the request's fault (a 4xx), `error` jobkey's or a service's (a 5xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allow,
    Deny,
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExchangeLabels {
    environment: String,
    decision: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerOutcome {
    issuer: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 1 ms to about 16 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

struct Metrics {
    registry: Registry,
    exchanges: Family<ExchangeLabels, Counter>,
    exchange_duration: Histogram,
    vault_requests: Family<KindOutcome, Counter>,
    vault_duration: HistogramFamily<KindLabel>,
    jwks_fetches: Family<IssuerOutcome, Counter>,
    audit_appends: Family<OutcomeLabel, Counter>,
    audit_duration: Histogram,
    policy_reloads: Family<OutcomeLabel, Counter>,
    policy_loaded: Gauge<f64, AtomicU64>,
    in_flight: Gauge,
    refusals: Family<ReasonLabel, Counter>,
    mask_cache_lookups: Family<ResultLabel, Counter>,
    mask_cache_bytes: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("jobkey");
        let m = Metrics {
            registry: Registry::default(),
            exchanges: Family::default(),
            exchange_duration: latency(),
            vault_requests: Family::default(),
            vault_duration: Family::new_with_constructor(latency),
            jwks_fetches: Family::default(),
            audit_appends: Family::default(),
            audit_duration: latency(),
            policy_reloads: Family::default(),
            policy_loaded: Gauge::default(),
            in_flight: Gauge::default(),
            refusals: Family::default(),
            mask_cache_lookups: Family::default(),
            mask_cache_bytes: Gauge::default(),
        };
        registry.register(
            "exchanges",
            "Exchanges answered, by configured environment (or \"unknown\"), decision and answer code",
            m.exchanges.clone(),
        );
        registry.register(
            "exchange_duration_seconds",
            "Time from an exchange's start to its answer",
            m.exchange_duration.clone(),
        );
        registry.register(
            "vault_requests",
            "Requests to Vault, by kind and outcome",
            m.vault_requests.clone(),
        );
        registry.register(
            "vault_request_duration_seconds",
            "Time a Vault request took, by kind",
            m.vault_duration.clone(),
        );
        registry.register(
            "jwks_fetches",
            "Key fetches (discovery and JWKS, or a pinned file), by configured issuer and outcome",
            m.jwks_fetches.clone(),
        );
        registry.register(
            "audit_appends",
            "Audit log appends, by outcome",
            m.audit_appends.clone(),
        );
        registry.register(
            "audit_append_duration_seconds",
            "Time an audit log append took",
            m.audit_duration.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy reloads, by outcome (a refused reload keeps the previous policies)",
            m.policy_reloads.clone(),
        );
        registry.register(
            "policy_loaded_timestamp_seconds",
            "When the serving policies were loaded (Unix time)",
            m.policy_loaded.clone(),
        );
        registry.register(
            "requests_in_flight",
            "HTTP requests being handled",
            m.in_flight.clone(),
        );
        registry.register(
            "refusals",
            "Requests refused before their handling began, by reason",
            m.refusals.clone(),
        );
        registry.register(
            "mask_cache_lookups",
            "Lookups of a KV value's mask hints in the mask cache, by result (hit, miss)",
            m.mask_cache_lookups.clone(),
        );
        registry.register(
            "mask_cache_bytes",
            "Hint text the mask cache holds, in bytes",
            m.mask_cache_bytes.clone(),
        );
        Metrics { registry, ..m }
    }
}

fn outcome(ok: bool) -> &'static str {
    if ok { "success" } else { "failure" }
}

/// An exchange ended. `environment` must be a configured environment's
/// name or [`UNKNOWN_ENVIRONMENT`]; `code` is the answer's code (`"ok"`
/// when allowed).
pub(crate) fn exchange(environment: &str, decision: Outcome, code: &'static str, took: Duration) {
    let m = &*METRICS;
    m.exchanges
        .get_or_create(&ExchangeLabels {
            environment: environment.to_owned(),
            decision: decision.as_str(),
            code,
        })
        .inc();
    m.exchange_duration.observe(took.as_secs_f64());
}

/// A Vault request of `kind` (a fixed name: `"kv_read"`, `"revoke"`, …)
/// ended.
pub(crate) fn vault_request(kind: &'static str, ok: bool, took: Duration) {
    let m = &*METRICS;
    m.vault_requests
        .get_or_create(&KindOutcome {
            kind,
            outcome: outcome(ok),
        })
        .inc();
    m.vault_duration
        .get_or_create(&KindLabel { kind })
        .observe(took.as_secs_f64());
}

/// A key fetch for the issuer configured as `issuer` ended.
pub(crate) fn jwks_fetch(issuer: &str, ok: bool) {
    METRICS
        .jwks_fetches
        .get_or_create(&IssuerOutcome {
            issuer: issuer.to_owned(),
            outcome: outcome(ok),
        })
        .inc();
}

/// An audit append ended.
pub(crate) fn audit_append(ok: bool, took: Duration) {
    let m = &*METRICS;
    m.audit_appends
        .get_or_create(&OutcomeLabel {
            outcome: outcome(ok),
        })
        .inc();
    m.audit_duration.observe(took.as_secs_f64());
}

/// A policy reload ended; when `ok`, the new set was loaded `at`.
pub(crate) fn policy_reload(ok: bool, at: SystemTime) {
    METRICS
        .policy_reloads
        .get_or_create(&OutcomeLabel {
            outcome: outcome(ok),
        })
        .inc();
    if ok {
        policy_loaded(at);
    }
}

/// The serving policy set was loaded at `at` (start-up, or a reload).
pub(crate) fn policy_loaded(at: SystemTime) {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    METRICS.policy_loaded.set(secs);
}

/// A request was refused before its handling began.
pub(crate) fn refused(reason: Refusal) {
    METRICS
        .refusals
        .get_or_create(&ReasonLabel {
            reason: reason.as_str(),
        })
        .inc();
}

/// A KV value's mask hints were looked up in the mask cache.
pub(crate) fn mask_cache_lookup(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    METRICS
        .mask_cache_lookups
        .get_or_create(&ResultLabel { result })
        .inc();
}

/// The mask cache now holds `bytes` of hint text.
pub(crate) fn mask_cache_bytes(bytes: usize) {
    METRICS
        .mask_cache_bytes
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

/// Counts a request in flight until dropped.
#[derive(Debug)]
#[must_use = "the request is counted until this is dropped"]
pub(crate) struct InFlight(());

/// A request began; it is counted in `jobkey_requests_in_flight` until the
/// returned guard is dropped.
pub(crate) fn in_flight() -> InFlight {
    METRICS.in_flight.inc();
    InFlight(())
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.in_flight.dec();
    }
}

/// Every series, in the OpenMetrics text format.
pub(crate) fn render() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &METRICS.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_named_as_documented() {
        exchange("production", Outcome::Allow, "ok", Duration::from_millis(3));
        vault_request("kv_read", true, Duration::from_millis(1));
        jwks_fetch("github", false);
        audit_append(true, Duration::from_millis(1));
        policy_reload(true, SystemTime::now());
        refused(Refusal::Busy);
        mask_cache_lookup(true);
        mask_cache_bytes(4096);
        let _g = in_flight();
        let text = render();
        for line in [
            "jobkey_exchanges_total{environment=\"production\",decision=\"allow\",code=\"ok\"}",
            "jobkey_exchange_duration_seconds_bucket{",
            "jobkey_vault_requests_total{kind=\"kv_read\",outcome=\"success\"}",
            "jobkey_vault_request_duration_seconds_count{kind=\"kv_read\"}",
            "jobkey_jwks_fetches_total{issuer=\"github\",outcome=\"failure\"}",
            "jobkey_audit_appends_total{outcome=\"success\"}",
            "jobkey_audit_append_duration_seconds_count",
            "jobkey_policy_reloads_total{outcome=\"success\"}",
            "jobkey_policy_loaded_timestamp_seconds ",
            "jobkey_requests_in_flight ",
            "jobkey_refusals_total{reason=\"busy\"}",
            "jobkey_mask_cache_lookups_total{result=\"hit\"}",
            "jobkey_mask_cache_bytes ",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn refusal_reasons_are_fixed_words() {
        let all = [Refusal::RateLimit, Refusal::Replay, Refusal::Busy];
        let words: Vec<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(words, ["rate_limit", "replay", "busy"]);
    }
}
