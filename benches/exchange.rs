//! `make bench`'s load generator: jobkey's exchange against OpenBao on its
//! own, in one run. `scripts/bench.sh` starts OpenBao, the dev issuer and
//! three jobkey instances, then runs this with
//! `cargo bench --locked --bench exchange` and the addresses in
//! `JOBKEY_BENCH_*` variables; on its own it has nothing to talk to.
//!
//! Five paths, alternated round by round with the same token pool and the
//! same number of closed-loop clients (each sends, waits for the answer,
//! sends again):
//! - `raw`: one KV v2 read with a static token (the backend's limit);
//! - `vault-action`: what a job does without jobkey: JWT login with its ID
//!   token, the KV read with the token it got, `auth/token/revoke-self`;
//! - `jobkey`: one `POST /v1/exchange` (verify, decide, read, audit with
//!   fsync, masks, exchange record), the audit log on the disk;
//! - `jobkey-nocache`: the same on a jobkey whose mask cache is off
//!   (`[masks] cache_ttl = "0s"`), its audit log on the same disk: what an
//!   exchange costs when every response computes its mask hints;
//! - `jobkey-shm`: the same as `jobkey` on a jobkey whose audit log is on
//!   /dev/shm, for the cost of the log's fsync.
//!
//! Then 1,000 concurrent jobs against `jobkey` (its peak RSS), and a soak
//! of 100,000 exchanges sampling its RSS every 10,000. Any answer but a 2xx
//! is an error: counted and printed, never a success.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it does nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Token lifetime asked of the dev issuer; bench/jobkey-*.toml accept 1 h.
const TOKEN_LIFETIME_S: u64 = 3600;
const ENVIRONMENT_BODY: &str = r#"{"environment":"production","credentials":["app"]}"#;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "exchange: the load generator of `make bench` (scripts/bench.sh); nothing to do here"
        );
        return;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "exchange: {e}\nRun it through `make bench` (scripts/bench.sh), which starts what it measures."
            );
            std::process::exit(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match rt.block_on(run(settings)) {
        Ok(report) => {
            print!("{report}");
        }
        Err(e) => {
            eprintln!("exchange: {e}");
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------- settings

/// One jobkey instance under test.
#[derive(Clone)]
struct Jobkey {
    url: String,
    pid: u32,
}

/// The jobkey instances under test, one per jobkey path.
#[derive(Clone)]
struct Jobkeys {
    /// Audit log on the disk, the mask cache at its default.
    disk: Jobkey,
    /// The same with the mask cache off.
    nocache: Jobkey,
    /// Audit log on /dev/shm, the mask cache at its default.
    shm: Jobkey,
}

struct Settings {
    bao: String,
    bao_pid: u32,
    /// The raw path's static token (policy bench-read); never printed.
    raw_token: String,
    kv_path: String,
    jwt_role: String,
    issuer: String,
    jobkeys: Jobkeys,
    disk_fs: String,
    shm_fs: String,
    seconds: u64,
    concurrency: usize,
    rounds: usize,
    jobs: usize,
    soak: u64,
    tokens: usize,
    clk_tck: u64,
    out: String,
    versions: String,
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

fn var_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a number")),
        _ => Ok(default),
    }
}

fn pid(name: &str) -> Result<u32, String> {
    var(name)?
        .parse()
        .map_err(|_| format!("{name} is not a process id"))
}

impl Settings {
    fn from_env() -> Result<Self, String> {
        let s = Settings {
            bao: var("JOBKEY_BENCH_BAO_ADDR")?,
            bao_pid: pid("JOBKEY_BENCH_BAO_PID")?,
            raw_token: var("JOBKEY_BENCH_RAW_TOKEN")?,
            kv_path: var_or("JOBKEY_BENCH_KV_PATH", "secret/data/bench/app".to_owned())?,
            jwt_role: var_or("JOBKEY_BENCH_JWT_ROLE", "bench".to_owned())?,
            issuer: var("JOBKEY_BENCH_ISSUER")?,
            jobkeys: Jobkeys {
                disk: Jobkey {
                    url: var("JOBKEY_BENCH_DISK_URL")?,
                    pid: pid("JOBKEY_BENCH_DISK_PID")?,
                },
                nocache: Jobkey {
                    url: var("JOBKEY_BENCH_NOCACHE_URL")?,
                    pid: pid("JOBKEY_BENCH_NOCACHE_PID")?,
                },
                shm: Jobkey {
                    url: var("JOBKEY_BENCH_SHM_URL")?,
                    pid: pid("JOBKEY_BENCH_SHM_PID")?,
                },
            },
            disk_fs: var_or("JOBKEY_BENCH_DISK_FS", "?".to_owned())?,
            shm_fs: var_or("JOBKEY_BENCH_SHM_FS", "?".to_owned())?,
            seconds: var_or("JOBKEY_BENCH_SECONDS", 8)?,
            concurrency: var_or("JOBKEY_BENCH_CONCURRENCY", 16)?,
            rounds: var_or("JOBKEY_BENCH_ROUNDS", 2)?,
            jobs: var_or("JOBKEY_BENCH_JOBS", 1000)?,
            soak: var_or("JOBKEY_BENCH_SOAK", 100_000)?,
            tokens: var_or("JOBKEY_BENCH_TOKENS", 2000)?,
            clk_tck: var_or("JOBKEY_BENCH_CLK_TCK", 100)?,
            out: var_or("JOBKEY_BENCH_OUT", ".bench/result.md".to_owned())?,
            versions: var_or("JOBKEY_BENCH_VERSIONS", String::new())?,
        };
        if s.seconds == 0 || s.concurrency == 0 || s.rounds == 0 || s.tokens == 0 {
            return Err(
                "JOBKEY_BENCH_SECONDS, _CONCURRENCY, _ROUNDS and _TOKENS must be at least 1".into(),
            );
        }
        if s.clk_tck == 0 {
            return Err("JOBKEY_BENCH_CLK_TCK must be at least 1".into());
        }
        Ok(s)
    }
}

// ------------------------------------------------------------------- /proc

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32, clk_tck: u64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields after its closing one. utime and stime are fields 14, 15.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) as f64 / clk_tck as f64,
        _ => f64::NAN,
    }
}

/// (VmRSS, VmHWM) in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

// ------------------------------------------------------------------- paths

/// The order of the variants is the order of the table's rows.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Path {
    Raw,
    VaultAction,
    Jobkey,
    JobkeyNoCache,
    JobkeyShm,
}

impl Path {
    const ALL: [Path; 5] = [
        Path::Raw,
        Path::VaultAction,
        Path::Jobkey,
        Path::JobkeyNoCache,
        Path::JobkeyShm,
    ];

    fn name(self) -> &'static str {
        match self {
            Path::Raw => "raw KV read (static token)",
            Path::VaultAction => "vault-action (JWT login + read + revoke-self)",
            Path::Jobkey => "jobkey exchange (audit on disk)",
            Path::JobkeyNoCache => "jobkey exchange (audit on disk, mask cache off)",
            Path::JobkeyShm => "jobkey exchange (audit on /dev/shm)",
        }
    }

    /// The jobkey instance this path exchanges with; `None` for OpenBao's.
    fn jobkey(self, j: &Jobkeys) -> Option<&Jobkey> {
        match self {
            Path::Raw | Path::VaultAction => None,
            Path::Jobkey => Some(&j.disk),
            Path::JobkeyNoCache => Some(&j.nocache),
            Path::JobkeyShm => Some(&j.shm),
        }
    }
}

/// What every client of a phase shares.
struct Shared {
    http: reqwest::Client,
    bao: String,
    raw_token: String,
    kv_url: String,
    jwt_role: String,
    tokens: Vec<String>,
    next_token: AtomicU64,
    jobkeys: Jobkeys,
}

impl Shared {
    fn token(&self) -> &str {
        let i = self.next_token.fetch_add(1, Ordering::Relaxed) as usize;
        &self.tokens[i % self.tokens.len()]
    }

    /// One job on `path`; `Err` describes a failure without any secret.
    async fn job(&self, path: Path) -> Result<(), String> {
        match path {
            Path::Raw => self.kv_read(&self.raw_token).await.map(drop),
            Path::VaultAction => {
                let login = self
                    .http
                    .post(format!("{}/v1/auth/jwt/login", self.bao))
                    .json(&json!({"role": self.jwt_role, "jwt": self.token()}))
                    .send()
                    .await;
                let body = expect_2xx("jwt login", login).await?;
                let v: Value = serde_json::from_slice(&body)
                    .map_err(|_| "jwt login: the answer is not JSON".to_owned())?;
                let token = v["auth"]["client_token"]
                    .as_str()
                    .ok_or("jwt login: no auth.client_token in the answer")?
                    .to_owned();
                let read = self.kv_read(&token).await;
                let revoke = self
                    .http
                    .post(format!("{}/v1/auth/token/revoke-self", self.bao))
                    .header("x-vault-token", &token)
                    .send()
                    .await;
                let revoked = expect_2xx("revoke-self", revoke).await;
                read?;
                revoked.map(drop)
            }
            Path::Jobkey => self.exchange(&self.jobkeys.disk).await.map(drop),
            Path::JobkeyNoCache => self.exchange(&self.jobkeys.nocache).await.map(drop),
            Path::JobkeyShm => self.exchange(&self.jobkeys.shm).await.map(drop),
        }
    }

    /// One `POST /v1/exchange` to `target`: the whole body of its 2xx answer.
    async fn exchange(&self, target: &Jobkey) -> Result<Vec<u8>, String> {
        let resp = self
            .http
            .post(format!("{}/v1/exchange", target.url))
            .bearer_auth(self.token())
            .header("content-type", "application/json")
            .body(ENVIRONMENT_BODY)
            .send()
            .await;
        expect_2xx("exchange", resp).await
    }

    async fn kv_read(&self, token: &str) -> Result<Vec<u8>, String> {
        let resp = self
            .http
            .get(&self.kv_url)
            .header("x-vault-token", token)
            .send()
            .await;
        expect_2xx("kv read", resp).await
    }
}

/// The whole body of a 2xx answer; otherwise an error naming the step, the
/// status and the error code of the body (jobkey's `error`, Vault's
/// `errors[0]`), which hold no secrets.
async fn expect_2xx(
    step: &str,
    resp: Result<reqwest::Response, reqwest::Error>,
) -> Result<Vec<u8>, String> {
    let resp = resp.map_err(|e| format!("{step}: {}", transport(&e)))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("{step}: reading the body: {}", transport(&e)))?;
    if status.is_success() {
        return Ok(body.to_vec());
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let code = v["error"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            v["errors"][0]
                .as_str()
                .map(|s| s.chars().take(120).collect())
        })
        .unwrap_or_default();
    Err(format!("{step}: HTTP {} {code}", status.as_u16()))
}

fn transport(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "broken body"
    } else {
        "request failed"
    }
}

// ------------------------------------------------------------------ phases

/// When a phase's clients stop.
#[derive(Clone, Copy)]
enum Until {
    Elapsed(Duration),
    /// This many jobs started in all.
    Jobs(u64),
}

#[derive(Default)]
struct Outcome {
    /// Microseconds of each successful job.
    latencies: Vec<u32>,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
}

impl Outcome {
    fn ok(&self) -> u64 {
        self.latencies.len() as u64
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn merge(&mut self, other: Outcome) {
        self.latencies.extend(other.latencies);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.elapsed += other.elapsed;
    }

    fn per_second(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `clients` closed-loop clients on `path` until `until`; `done` counts
/// finished jobs (successes and errors) for a watcher.
async fn phase(
    shared: &Arc<Shared>,
    path: Path,
    clients: usize,
    until: Until,
    done: Arc<AtomicU64>,
) -> Outcome {
    let started = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (shared, started, done) = (shared.clone(), started.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            loop {
                let go = match until {
                    Until::Elapsed(d) => t0.elapsed() < d,
                    Until::Jobs(n) => started.fetch_add(1, Ordering::Relaxed) < n,
                };
                if !go {
                    break;
                }
                let t = Instant::now();
                match shared.job(path).await {
                    Ok(()) => out
                        .latencies
                        .push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX)),
                    Err(e) => *out.errors.entry(e).or_default() += 1,
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            out
        }));
    }
    let mut total = Outcome::default();
    for t in tasks {
        match t.await {
            Ok(o) => total.merge(o),
            Err(_) => {
                *total
                    .errors
                    .entry("a client task panicked".into())
                    .or_default() += 1
            }
        }
    }
    total.elapsed = t0.elapsed();
    total
}

/// Nearest-rank percentile of sorted microseconds.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u32) -> String {
    format!("{:.2} ms", f64::from(us) / 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn micros(seconds: f64, jobs: u64) -> String {
    if jobs == 0 || seconds.is_nan() {
        "–".into()
    } else {
        format!("{:.0} µs", seconds * 1e6 / jobs as f64)
    }
}

/// One path's totals over its rounds.
#[derive(Default)]
struct PathTotals {
    outcome: Outcome,
    jobkey_cpu: f64,
    bao_cpu: f64,
    rss: u64,
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

// --------------------------------------------------------------------- run

async fn mint_tokens(
    http: &reqwest::Client,
    issuer: &str,
    n: usize,
) -> Result<Vec<String>, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970")?
        .as_secs();
    let tag = now % 100_000;
    let mut set = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicU64::new(0));
    for _ in 0..8 {
        let (http, url, next) = (http.clone(), format!("{issuer}/mint"), next.clone());
        set.spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    return Ok::<_, String>(got);
                }
                // A distinct run (and jti) per token, so that neither a
                // per-identity cache nor single-use is what is measured.
                let claims = json!({
                    "run_id": format!("{}", 7_000_000_000u64 + i),
                    "jti": format!("bench-{tag}-{i}"),
                    "iat": now, "nbf": now, "exp": now + TOKEN_LIFETIME_S,
                });
                let resp = http
                    .post(&url)
                    .json(&json!({"shape": "github", "audience": "jobkey", "claims": claims}))
                    .send()
                    .await;
                let body = expect_2xx("mint", resp).await?;
                let v: Value = serde_json::from_slice(&body).map_err(|_| "mint: not JSON")?;
                got.push(v["token"].as_str().ok_or("mint: no token")?.to_owned());
            }
        });
    }
    let mut tokens = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        tokens.extend(r.map_err(|_| "a mint task panicked")??);
    }
    Ok(tokens)
}

/// One job on each path before anything is measured, with a check that the
/// answer holds the secret: a misconfiguration fails here, readably.
async fn preflight(shared: &Shared) -> Result<(), String> {
    let raw = shared
        .http
        .get(&shared.kv_url)
        .header("x-vault-token", &shared.raw_token)
        .send()
        .await;
    let v: Value =
        serde_json::from_slice(&expect_2xx("raw kv read", raw).await?).unwrap_or(Value::Null);
    let fields = v["data"]["data"].as_object().map(|m| m.len()).unwrap_or(0);
    if fields != 3 {
        return Err(format!(
            "raw kv read: expected 3 fields in {}, found {fields}",
            shared.kv_url
        ));
    }
    shared
        .job(Path::VaultAction)
        .await
        .map_err(|e| format!("vault-action path: {e}"))?;
    for path in Path::ALL {
        let Some(target) = path.jobkey(&shared.jobkeys) else {
            continue;
        };
        let body = shared
            .exchange(target)
            .await
            .map_err(|e| format!("{}: {e}", path.name()))?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let values = v["credentials"]["app"]["values"]
            .as_object()
            .map(|m| m.len())
            .unwrap_or(0);
        let masks = v["mask"].as_array().map(Vec::len).unwrap_or(0);
        if values != 3 || masks == 0 {
            return Err(format!(
                "{}: expected the 3 values of `app` and mask strings, got {values} values and {masks} masks",
                path.name()
            ));
        }
    }
    Ok(())
}

fn machine(s: &Settings) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // Other work on the machine shows in every figure: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut m = format!(
        "- date: {}\n- machine: {nproc} CPUs, {cpu}, Linux {}; load average before the run {}\n",
        humantime::format_rfc3339_seconds(SystemTime::now()),
        kernel.trim(),
        load.join(" ")
    );
    if !s.versions.is_empty() {
        let _ = writeln!(m, "- {}", s.versions);
    }
    let _ = writeln!(
        m,
        "- {} closed-loop clients, {} s per path and round, {} rounds alternating raw, vault-action, jobkey, jobkey-nocache, jobkey-shm; {} tokens minted once, used in turn by the vault-action and jobkey paths",
        s.concurrency, s.seconds, s.rounds, s.tokens
    );
    let _ = writeln!(
        m,
        "- audit log: jobkey and jobkey-nocache (mask cache off) on {}, jobkey-shm on {}; OpenBao in dev mode (in-memory storage, no audit device); the load generator shares the CPUs",
        s.disk_fs, s.shm_fs
    );
    m
}

async fn run(s: Settings) -> Result<String, String> {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    eprintln!("minting {} tokens at {} ...", s.tokens, s.issuer);
    let tokens = mint_tokens(&http, &s.issuer, s.tokens).await?;
    let shared = Arc::new(Shared {
        http,
        bao: s.bao.clone(),
        raw_token: s.raw_token.clone(),
        kv_url: format!("{}/v1/{}", s.bao, s.kv_path),
        jwt_role: s.jwt_role.clone(),
        tokens,
        next_token: AtomicU64::new(0),
        jobkeys: s.jobkeys.clone(),
    });
    preflight(&shared).await?;

    let mut report = String::new();
    let _ = writeln!(report, "## jobkey vs OpenBao (make bench)\n");
    report.push_str(&machine(&s));

    let mut totals: BTreeMap<Path, PathTotals> = BTreeMap::new();
    let mut rounds_table =
        String::from("| round | path | jobs/s | p50 | p99 | errors |\n|---|---|---|---|---|---|\n");
    for round in 1..=s.rounds {
        for path in Path::ALL {
            eprintln!("round {round}/{}: {} ...", s.rounds, path.name());
            let jk = path.jobkey(&s.jobkeys).map(|j| j.pid);
            let (jk0, bao0) = (
                jk.map(|p| cpu_seconds(p, s.clk_tck)),
                cpu_seconds(s.bao_pid, s.clk_tck),
            );
            let mut out = phase(
                &shared,
                path,
                s.concurrency,
                Until::Elapsed(Duration::from_secs(s.seconds)),
                Arc::new(AtomicU64::new(0)),
            )
            .await;
            let bao_cpu = cpu_seconds(s.bao_pid, s.clk_tck) - bao0;
            let jk_cpu = match (jk, jk0) {
                (Some(p), Some(c0)) => cpu_seconds(p, s.clk_tck) - c0,
                _ => 0.0,
            };
            out.latencies.sort_unstable();
            let _ = writeln!(
                rounds_table,
                "| {round} | {} | {:.0} | {} | {} | {} |",
                path.name(),
                out.per_second(),
                ms(percentile(&out.latencies, 50.0)),
                ms(percentile(&out.latencies, 99.0)),
                out.error_count()
            );
            let t = totals.entry(path).or_default();
            t.outcome.merge(out);
            t.bao_cpu += bao_cpu;
            t.jobkey_cpu += jk_cpu;
            if let Some(p) = jk {
                t.rss = memory(p).0;
            }
        }
    }

    let _ = writeln!(
        report,
        "\n| path | jobs/s | p50 | p99 | jobkey CPU/exchange | OpenBao CPU/job | jobkey RSS | errors |\n|---|---|---|---|---|---|---|---|"
    );
    for t in totals.values_mut() {
        t.outcome.latencies.sort_unstable();
    }
    for (path, t) in &totals {
        let o = &t.outcome;
        let is_jk = path.jobkey(&s.jobkeys).is_some();
        let _ = writeln!(
            report,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            path.name(),
            o.per_second(),
            ms(percentile(&o.latencies, 50.0)),
            ms(percentile(&o.latencies, 99.0)),
            if is_jk {
                micros(t.jobkey_cpu, o.ok())
            } else {
                "–".into()
            },
            micros(t.bao_cpu, o.ok()),
            if is_jk { mib(t.rss) } else { "–".into() },
            o.error_count()
        );
    }
    let _ = writeln!(report, "\nPer round:\n\n{rounds_table}");

    let raw = &totals[&Path::Raw];
    let va = &totals[&Path::VaultAction];
    let jk = &totals[&Path::Jobkey];
    let nocache = &totals[&Path::JobkeyNoCache];
    let shm = &totals[&Path::JobkeyShm];
    let p99 = |t: &PathTotals| f64::from(percentile(&t.outcome.latencies, 99.0));
    let mut targets = String::new();
    let tput = jk.outcome.per_second() / raw.outcome.per_second().max(1e-9);
    let _ = writeln!(
        targets,
        "- {} exchange throughput / raw read throughput = {tput:.2} (target ≥ 0.80)",
        verdict(tput >= 0.8)
    );
    let lat = p99(jk) / p99(raw).max(1.0);
    let _ = writeln!(
        targets,
        "- {} exchange p99 / raw read p99 = {lat:.2} (target ≤ 1.25)",
        verdict(lat <= 1.25)
    );
    let cpu_per = |t: &PathTotals| t.jobkey_cpu * 1e6 / (t.outcome.ok().max(1)) as f64;
    let cpu = cpu_per(jk);
    let _ = writeln!(
        targets,
        "- {} jobkey CPU per exchange = {cpu:.0} µs (target ≤ 130 µs)",
        verdict(cpu <= 130.0)
    );
    let cpu_nocache = cpu_per(nocache);
    let _ = writeln!(
        targets,
        "- {} jobkey CPU per exchange, mask cache off = {cpu_nocache:.0} µs (target ≤ 130 µs)",
        verdict(cpu_nocache <= 130.0)
    );
    let audit = jk.outcome.per_second() / shm.outcome.per_second().max(1e-9);
    let _ = writeln!(
        targets,
        "- {} audit log on disk / on RAM disk, exchange throughput = {audit:.2} (target ≥ 0.90)",
        verdict(audit >= 0.9)
    );
    let _ = writeln!(
        targets,
        "- (info) exchange / vault-action: throughput {:.2}, p99 {:.2}",
        jk.outcome.per_second() / va.outcome.per_second().max(1e-9),
        p99(jk) / p99(va).max(1.0)
    );
    let _ = writeln!(
        targets,
        "- (info) mask cache on / off (audit on disk): throughput {:.2}, CPU per exchange {:.2}",
        jk.outcome.per_second() / nocache.outcome.per_second().max(1e-9),
        cpu / cpu_nocache.max(1e-9)
    );
    let mut errors_seen = false;
    let mut errors = String::new();
    for (path, t) in &totals {
        for (e, n) in &t.outcome.errors {
            errors_seen = true;
            let _ = writeln!(errors, "- {}: {n} × {e}", path.name());
        }
    }

    let mut extra = String::new();
    if s.soak > 0 {
        eprintln!(
            "soak: {} exchanges against jobkey, RSS every 10,000 ...",
            s.soak
        );
        let (mut out, samples, _) = sampled(
            &shared,
            &s,
            s.concurrency,
            Until::Jobs(s.soak),
            Some(10_000),
        )
        .await;
        out.latencies.sort_unstable();
        let _ = writeln!(
            extra,
            "\nSoak: {} exchanges at {} clients in {:.0} s ({:.0} jobs/s, p99 {}, {} errors); jobkey RSS before it and after each 10,000 (it runs before the concurrent-jobs phase, whose peak would hide growth):\n",
            s.soak,
            s.concurrency,
            out.elapsed.as_secs_f64(),
            out.per_second(),
            ms(percentile(&out.latencies, 99.0)),
            out.error_count()
        );
        let _ = writeln!(extra, "| exchanges | RSS |\n|---|---|");
        for (n, rss) in &samples {
            let _ = writeln!(extra, "| {n} | {} |", mib(*rss));
        }
        // Flat after the first 10,000 (the first connections, caches and
        // allocator arenas are warm-up, not growth).
        let baseline = samples.iter().find(|x| x.0 >= 10_000).or(samples.first());
        if let (Some(first), Some(last)) = (baseline, samples.last()) {
            let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
            let growth = last.1 as f64 / first.1.max(1) as f64 - 1.0;
            let _ = writeln!(
                targets,
                "- {} jobkey RSS over {} exchanges: {} at {} → {} at {} (max {}), {:+.0}% (target: flat, within +10%)",
                verdict(growth <= 0.10),
                s.soak,
                mib(first.1),
                first.0,
                mib(last.1),
                last.0,
                mib(max),
                growth * 100.0
            );
        }
        for (e, n) in &out.errors {
            errors_seen = true;
            let _ = writeln!(errors, "- soak: {n} × {e}");
        }
    }
    if s.jobs > 0 {
        eprintln!(
            "{} concurrent jobs against jobkey for {} s ...",
            s.jobs, s.seconds
        );
        let (mut out, _, peak) = sampled(
            &shared,
            &s,
            s.jobs,
            Until::Elapsed(Duration::from_secs(s.seconds)),
            None,
        )
        .await;
        out.latencies.sort_unstable();
        let hwm = memory(s.jobkeys.disk.pid).1;
        let _ = writeln!(
            extra,
            "\n{} concurrent jobs (jobkey, audit on disk, {} s): {:.0} jobs/s, p50 {}, p99 {}, {} errors; jobkey RSS peak {} sampled every 50 ms (VmHWM since start {})",
            s.jobs,
            s.seconds,
            out.per_second(),
            ms(percentile(&out.latencies, 50.0)),
            ms(percentile(&out.latencies, 99.0)),
            out.error_count(),
            mib(peak),
            mib(hwm)
        );
        let _ = writeln!(
            targets,
            "- {} jobkey RSS with {} concurrent jobs = {} (target < 64 MB = 61.0 MiB)",
            verdict(peak < 64_000_000),
            s.jobs,
            mib(peak)
        );
        for (e, n) in &out.errors {
            errors_seen = true;
            let _ = writeln!(errors, "- {} concurrent jobs: {n} × {e}", s.jobs);
        }
    }
    report.push_str(&extra);
    let _ = writeln!(
        report,
        "\nAgainst the targets (printed, not enforced):\n\n{targets}"
    );
    if errors_seen {
        let _ = writeln!(report, "Errors (not counted as jobs):\n\n{errors}");
    } else {
        let _ = writeln!(
            report,
            "No errors: every job on every path was answered 2xx."
        );
    }
    std::fs::write(&s.out, &report).map_err(|e| format!("writing {}: {e}", s.out))?;
    Ok(report)
}

/// A phase against the disk jobkey while its RSS is sampled: every 50 ms
/// (the peak is returned), and with `every`, once each time that many more
/// jobs have finished (the samples are returned).
async fn sampled(
    shared: &Arc<Shared>,
    s: &Settings,
    clients: usize,
    until: Until,
    every: Option<u64>,
) -> (Outcome, Vec<(u64, u64)>, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let pid = s.jobkeys.disk.pid;
    let start: Vec<(u64, u64)> = every.map(|_| (0, memory(pid).0)).into_iter().collect();
    let watcher = {
        let (done, finished) = (done.clone(), finished.clone());
        tokio::spawn(async move {
            let every = every.unwrap_or(u64::MAX);
            let (mut peak, mut samples, mut mark) = (0u64, start, every);
            while !finished.load(Ordering::Relaxed) {
                let rss = memory(pid).0;
                peak = peak.max(rss);
                let n = done.load(Ordering::Relaxed);
                if n >= mark {
                    samples.push((n, rss));
                    mark = (n / every + 1).saturating_mul(every);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (peak, samples)
        })
    };
    let out = phase(shared, Path::Jobkey, clients, until, done.clone()).await;
    finished.store(true, Ordering::Relaxed);
    let (peak, mut samples) = watcher.await.unwrap_or_default();
    if let Some(e) = every {
        let n = done.load(Ordering::Relaxed);
        if samples.last().is_none_or(|l| l.0 / e < n / e) {
            samples.push((n, memory(pid).0));
        }
    }
    (out, samples, peak)
}
