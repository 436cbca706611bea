//! `jobkey policy replay`'s throughput over 1,000,000 synthetic audit
//! records: `cargo bench --bench replay`.
//!
//! The records are generated into a temp file here (never committed): 90%
//! allowed GitHub exchanges over 200 repositories, 10% policy denials,
//! one environment of 200 allow rules. The proposed policy set moves one
//! repository to another ref, so some decisions change. Prints records
//! per second. `JOBKEY_REPLAY_RECORDS` sets the count (under `cargo test`,
//! which runs it without `--bench`, the default is 10,000).

use std::io::Write;
use std::time::Instant;

use jobkey::LogSet;
use jobkey::{PolicyIssuer, PolicySet};

const REPOS: usize = 200;

fn policy(changed: bool) -> String {
    let mut s = String::from(
        "max_ttl: 15m\ncredentials:\n  db:\n    kv: {mount: secret, path: prod/db}\n    ttl: 10m\nrules:\n",
    );
    for r in 0..REPOS {
        let git_ref = if changed && r == 7 {
            "refs/heads/release"
        } else {
            "refs/heads/main"
        };
        s.push_str(&format!(
            "  - name: deploy-{r}\n    issuer: github\n    claims:\n      repository_id: \"{id}\"\n      repository: acme/app-{r}\n      ref: {git_ref}\n      event_name: [push, workflow_dispatch]\n    grant: [db]\n    ttl: 5m\n",
            id = 100_000 + r
        ));
    }
    s
}

fn main() {
    // `cargo test --all-targets` runs this too, without `--bench`: there,
    // 10,000 records check that it works without writing 766 MiB.
    let default = if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        10_000
    };
    let n: usize = std::env::var("JOBKEY_REPLAY_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
    for i in 0..n {
        let r = i % REPOS;
        let (ms, s, m) = (i % 1000, (i / 1000) % 60, (i / 60_000) % 60);
        let time = format!("2025-06-01T10:{m:02}:{s:02}.{ms:03}Z");
        let identity = format!(
            r#"{{"issuer":"github","verified":true,"repository":"acme/app-{r}","repository_id":"{id}","ref":"refs/heads/{git_ref}","event_name":"push","sub":"repo:acme/app-{r}:ref:refs/heads/main","run_id":"{i}","workflow_ref":"acme/app-{r}/.github/workflows/deploy.yml@refs/heads/main"}}"#,
            id = 100_000 + r,
            git_ref = if i % 10 == 9 { "dev" } else { "main" },
        );
        let line = if i % 10 == 9 {
            format!(
                r#"{{"action":"exchange","code":"no_rule_matched","decision":"deny","environment":"production","hash":"{i:064x}","identity":{identity},"prev":"{i:064x}","reason":{{"kind":"no_rule_matched","failures":[]}},"request_id":"req-{i}","requested":[],"seq":{i},"source":"10.0.0.1","stage":"policy","time":"{time}"}}"#
            )
        } else {
            format!(
                r#"{{"action":"exchange","credentials":[{{"fingerprints":{{"password":"hmac-sha256:{i:064x}"}},"kind":"kv","name":"db","rule":"deploy-{r}","ttl_s":300,"wrapped":false}}],"decision":"allow","environment":"production","hash":"{i:064x}","identity":{identity},"prev":"{i:064x}","request_id":"req-{i}","requested":[],"revocable":0,"seq":{i},"source":"10.0.0.1","time":"{time}"}}"#
            )
        };
        writeln!(f, "{line}").unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let bytes = std::fs::metadata(&log).unwrap().len();
    let issuers = [PolicyIssuer::named("github")];
    let set =
        PolicySet::from_sources(&[("production.yaml".to_owned(), policy(true))], &issuers).unwrap();
    let logs = LogSet::new(&[log]).unwrap();
    let mut records = logs.records().unwrap();
    let start = Instant::now();
    let report = jobkey::replay_policies(&set, &mut records, None, |_| {}).unwrap();
    let took = start.elapsed();
    assert_eq!(report.replayed as usize, n);
    assert!(!report.changes.is_empty());
    println!(
        "policy replay: {n} records ({} MiB) in {:.2} s = {:.0} records/s; {} decisions would change",
        bytes / (1024 * 1024),
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        report.changes.len()
    );
}
