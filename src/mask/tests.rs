use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use super::*;

fn run(values: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
    let v: Vec<(String, SecretString)> = values
        .iter()
        .map(|(l, s)| ((*l).to_owned(), SecretString::new((*s).to_owned())))
        .collect();
    let h = hints(v.iter().map(|(l, s)| (l.as_str(), s)));
    (
        h.mask
            .iter()
            .map(|s| s.expose_secret().to_owned())
            .collect(),
        h.warnings,
    )
}

/// A real RSA private key (PKCS#8 PEM) from the test fixtures.
fn pem_key() -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys/issuer-a.pem");
    std::fs::read_to_string(path).unwrap()
}

const JSON_DOC: &str = r#"{"client_id": "svc-deploy", "client_secret": "s3cr3t\"quoted\"\\back/slash", "scopes": ["a", "b"]}"#;
const PASSWORD: &str = r#"p@ss w0rd/+%&"<>\:é!"#;

// The forms a job prints, made here without `mask.rs`'s encoders (serde_json
// and percent_encoding), so that a wrong encoder there cannot pass its own
// test. `encoders_in_these_tests_write_the_known_forms` pins them to
// hard-coded strings.

/// A JSON string's body as `JSON.stringify` or jq write it: `"` and `\`
/// escaped, control characters as `\n`-style or `\u00XX` escapes, the rest
/// (non-ASCII too) as is.
fn json_string_body(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Every UTF-8 byte but RFC 3986's unreserved characters as `%XX`
/// (Python's `quote(v, safe="")`, .NET's `Uri.EscapeDataString`); with
/// `plus_for_space`, a space is `+` (Python's `quote_plus`, HTML forms).
fn percent_encoded(v: &str, plus_for_space: bool) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' if plus_for_space => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[test]
fn encoders_in_these_tests_write_the_known_forms() {
    // (value, JSON string body, percent-encoded, form-encoded)
    let cases = [
        (
            PASSWORD,
            r#"p@ss w0rd/+%&\"<>\\:é!"#,
            "p%40ss%20w0rd%2F%2B%25%26%22%3C%3E%5C%3A%C3%A9%21",
            "p%40ss+w0rd%2F%2B%25%26%22%3C%3E%5C%3A%C3%A9%21",
        ),
        (
            "a\r\nb\tc\u{1}",
            r"a\r\nb\tc\u0001",
            "a%0D%0Ab%09c%01",
            "a%0D%0Ab%09c%01",
        ),
        (
            "~keep-these_.~ not these",
            "~keep-these_.~ not these",
            "~keep-these_.~%20not%20these",
            "~keep-these_.~+not+these",
        ),
    ];
    for (value, json, url, form) in cases {
        assert_eq!(json_string_body(value), json, "{value:?}");
        assert_eq!(percent_encoded(value, false), url, "{value:?}");
        assert_eq!(percent_encoded(value, true), form, "{value:?}");
    }
}

#[test]
fn each_value_brings_its_lines_and_encodings() {
    let pem = "-----BEGIN KEY-----\r\nAAAABBBBCCCC\r\nDDDDEEEE\r\nFF==\r\n-----END KEY-----\r\n";
    let (m, _) = run(&[("k.pem", pem), ("k.pw", "hunter2hunter2")]);
    let has = |s: &str| m.iter().any(|x| x == s);
    // (what, expected present)
    let cases: Vec<(&str, String)> = vec![
        ("the whole value", pem.to_owned()),
        ("line 2", "AAAABBBBCCCC".into()),
        ("line 3", "DDDDEEEE".into()),
        ("single-line value", "hunter2hunter2".into()),
        (
            "json escaped",
            r"-----BEGIN KEY-----\r\nAAAABBBBCCCC\r\nDDDDEEEE\r\nFF==\r\n-----END KEY-----\r\n".into(),
        ),
        ("base64 std padded", STANDARD.encode(pem)),
        ("base64 std unpadded", STANDARD_NO_PAD.encode(pem)),
        (
            "base64 url shift 1",
            URL_SAFE_NO_PAD.encode(&pem.as_bytes()[1..]),
        ),
        ("base64 std shift 2", STANDARD.encode(&pem.as_bytes()[2..])),
        ("base64 of pw", STANDARD.encode("hunter2hunter2")),
        (
            "url-encoded",
            "-----BEGIN%20KEY-----%0D%0AAAAABBBBCCCC%0D%0ADDDDEEEE%0D%0AFF%3D%3D%0D%0A-----END%20KEY-----%0D%0A".into(),
        ),
        (
            "form-encoded",
            "-----BEGIN+KEY-----%0D%0AAAAABBBBCCCC%0D%0ADDDDEEEE%0D%0AFF%3D%3D%0D%0A-----END+KEY-----%0D%0A".into(),
        ),
    ];
    for (what, s) in &cases {
        assert!(has(s), "{what} missing: {s}");
    }
    assert!(m.iter().all(|s| s == pem || !s.contains('\r')));
    assert!(!m.iter().any(|s| s.trim().is_empty()));
    assert!(
        !m.iter()
            .any(|s| s == "-----BEGIN KEY-----" || s == "-----END KEY-----"),
        "armor is not masked"
    );
    assert!(!has("FF=="), "a 4-character line is not masked");
}

#[test]
fn base64_trailing_edge_is_trimmed_as_the_runner_does() {
    // (value, shift, engine is url-safe, expected stable form)
    let cases: &[(&str, usize, bool, &str)] = &[
        // 10 bytes: "dmFsdWUtMTIzNA==" -> trimmed "dmFsdWUtMTIzN"
        ("value-1234", 0, false, "dmFsdWUtMTIzN"),
        // 9 bytes from shift 1: a multiple of 3, no padding, nothing trimmed
        ("value-1234", 1, false, "YWx1ZS0xMjM0"),
        // 8 bytes from shift 2: one '=' -> drop it and one more character
        ("value-1234", 2, false, "bHVlLTEyMz"),
        // URL-safe differs where the standard alphabet has + and /
        ("\u{fb}\u{ff}\u{fe}-secret", 0, true, "w7vDv8O-LXNlY3Jld"),
    ];
    for (value, shift, url, expected) in cases {
        let (m, _) = run(&[("x", value)]);
        assert!(
            m.iter().any(|s| s == expected),
            "shift {shift} url {url}: {expected} missing from {m:?}"
        );
        // And the stable form really is a prefix of the encoding of the
        // value followed by anything.
        let engine = if *url { &URL_SAFE } else { &STANDARD };
        for suffix in ["", "\n", "zzzz", " "] {
            let enc = engine.encode(&format!("{value}{suffix}").as_bytes()[*shift..]);
            assert!(enc.starts_with(expected), "{value}+{suffix:?}: {enc}");
        }
    }
}

#[test]
fn short_pieces_and_armor_are_left_out_with_a_warning_that_hides_the_value() {
    // (label, value, masked?, warning fragment or "")
    let cases: &[(&str, &str, bool, &str)] = &[
        (
            "db.username",
            "deploy",
            false,
            "db.username: not masked: the value is shorter than 8",
        ),
        ("db.password", "abcdefgh", true, ""),
        ("api.key", "1234567", false, "shorter than 8"),
        ("multi.byte", "ééééééé", false, "shorter than 8"), // 14 bytes, 7 chars
        ("blank", "   ", false, ""),
    ];
    for (label, value, masked, warning) in cases {
        let (m, w) = run(&[(label, value)]);
        assert_eq!(m.iter().any(|s| s == value), *masked, "{label}");
        if warning.is_empty() {
            assert!(w.is_empty(), "{label}: {w:?}");
        } else {
            assert_eq!(w.len(), 1, "{label}: {w:?}");
            assert!(w[0].contains(warning), "{label}: {w:?}");
            assert!(!w[0].contains(value), "a warning never shows the value");
        }
        if !masked {
            assert!(
                m.is_empty(),
                "{label}: no encoding of a short value either: {m:?}"
            );
        }
    }
    let (_, w) = run(&[("tls.key", &pem_key())]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("tls.key: not masked: lines 1, 28 are PEM armor"),
        "{w:?}"
    );
}

/// Found by the `mask` fuzz target: a lone `\r` ends a line in the runner's
/// log (GitHub's reads a step's output with .NET's `ReadLine`), so each
/// half of this value is printed as a line of its own and must be a mask.
#[test]
fn a_lone_carriage_return_ends_a_line() {
    // (value, lines that must be masks, warning or "")
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "first-half-secret\rsecond-half-secret",
            &["first-half-secret", "second-half-secret"],
            "",
        ),
        (
            "line-one-secret\r\nline-two-secret\r\n",
            &["line-one-secret", "line-two-secret"],
            "",
        ),
        // `\r\r\n` is a line, then an empty one: the short line is the third.
        (
            "long-enough-1\r\r\nlong-enough-2\rshort",
            &["long-enough-1", "long-enough-2"],
            "v: not masked: line 4 is shorter than 8 characters",
        ),
    ];
    for (value, lines, warning) in cases {
        let (m, w) = run(&[("v", value)]);
        for line in *lines {
            assert!(m.iter().any(|s| s == line), "{value:?}: {line:?} in {m:?}");
        }
        if warning.is_empty() {
            assert!(w.is_empty(), "{value:?}: {w:?}");
        } else {
            assert_eq!(w, vec![warning.to_string()], "{value:?}");
        }
    }
}

#[test]
fn duplicates_are_dropped_and_the_list_is_longest_first() {
    let (m, _) = run(&[("a", "abcdefghij"), ("b", "abcdefghij"), ("c", "  ")]);
    let mut sorted = m.clone();
    sorted.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    assert_eq!(m, sorted);
    let mut dedup = m.clone();
    dedup.dedup();
    assert_eq!(m, dedup);
    assert_eq!(m.iter().filter(|s| *s == "abcdefghij").count(), 1);
}

/// A small simulation of GitHub's runner masker: `::add-mask::` commands
/// are read from the step's output (with `%25`, `%0D`, `%0A` unescaped), a
/// value with line breaks also registers each line (newer runners), and
/// every later log line has every registered value, longest first, replaced
/// by `***`. It derives no encodings itself, like GitLab or Buildkite: only
/// the hints protect the log.
struct SimulatedRunner {
    secrets: Vec<String>,
}

impl SimulatedRunner {
    fn new() -> Self {
        SimulatedRunner { secrets: vec![] }
    }

    /// Processes one line of step output; returns what the log shows.
    fn line(&mut self, line: &str) -> Option<String> {
        if let Some(v) = line.strip_prefix("::add-mask::") {
            let v = v
                .replace("%0D", "\r")
                .replace("%0A", "\n")
                .replace("%25", "%");
            if v.contains('\n') || v.contains('\r') {
                for l in v.split(['\r', '\n']) {
                    if !l.is_empty() {
                        self.secrets.push(l.to_owned());
                    }
                }
            }
            self.secrets.push(v);
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
            return None;
        }
        let mut out = line.to_owned();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        Some(out)
    }
}

fn add_mask_command(v: &str) -> String {
    format!(
        "::add-mask::{}",
        v.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    )
}

#[test]
fn a_simulated_github_log_shows_none_of_the_forms() {
    let pem = pem_key();
    let values = [
        ("tls.key", pem.as_str()),
        ("app.json", JSON_DOC),
        ("db.password", PASSWORD),
    ];
    let (m, _) = run(&values);

    // What a careless job prints after registering the hints.
    let mut printed: Vec<(String, String, usize)> = Vec::new(); // (what, line, base64 chars allowed to survive)
    for (label, v) in values {
        for (i, line) in v.lines().enumerate() {
            printed.push((format!("{label} line {i}"), format!("cat: {line}"), 0));
        }
        printed.push((
            format!("{label} json"),
            format!("{{\"secret\": \"{}\"}}", json_string_body(v)),
            0,
        ));
        printed.push((
            format!("{label} url"),
            format!("GET https://x.example/?p={}&q=1", percent_encoded(v, false)),
            0,
        ));
        printed.push((
            format!("{label} form"),
            format!("POST body: user=x&p={}&q=1", percent_encoded(v, true)),
            0,
        ));
        for prefix in ["", "u", "us", "usr:"] {
            for suffix in ["", "\n", "!?"] {
                for (name, engine) in [
                    ("std", &STANDARD),
                    ("url", &URL_SAFE),
                    ("raw", &STANDARD_NO_PAD),
                ] {
                    let enc = engine.encode(format!("{prefix}{v}{suffix}"));
                    // What may survive: the characters that encode the prefix
                    // and the first bytes of the value up to the next 3-byte
                    // boundary, and the last group (the value's last bytes
                    // mixed with the suffix) plus the suffix's own groups.
                    let lead = (prefix.len() + (3 - prefix.len() % 3) % 3) / 3 * 4;
                    let tail = 4 + suffix.len().div_ceil(3) * 4;
                    printed.push((
                        format!("{label} base64 {name} prefix {prefix:?} suffix {suffix:?}"),
                        format!("auth: {enc}"),
                        lead + tail,
                    ));
                }
            }
        }
    }

    let mut runner = SimulatedRunner::new();
    let mut log = Vec::new();
    for cmd in m.iter().map(|s| add_mask_command(s)) {
        assert!(
            !cmd.contains('\n') && !cmd.contains('\r'),
            "one command per line"
        );
        assert_eq!(runner.line(&cmd), None);
    }
    for (what, line, allowed) in &printed {
        log.push((what, runner.line(line).unwrap(), *allowed));
    }

    for (what, shown, allowed) in &log {
        // The value, each secret line, the JSON-escaped, URL- and
        // form-encoded forms.
        for (label, v) in values {
            let mut forbidden = vec![
                json_string_body(v),
                percent_encoded(v, false),
                percent_encoded(v, true),
            ];
            forbidden.push(v.to_owned());
            for line in v
                .lines()
                .filter(|l| !is_pem_armor(l) && l.chars().count() >= MIN_MASK_CHARS)
            {
                forbidden.push(line.to_owned());
            }
            for f in &forbidden {
                assert!(
                    !shown.contains(f.as_str()),
                    "{label}: {what} shows a secret form: {shown}"
                );
            }
        }
        // Base64 at any offset: at most the prefix's characters and the
        // unstable edge survive (a handful), never the body.
        if what.contains("base64") {
            let visible = shown
                .trim_start_matches("auth: ")
                .replace("***", "")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "+/-_".contains(*c))
                .count();
            assert!(
                visible <= *allowed,
                "{what}: {visible} characters survive (at most {allowed}): {shown}"
            );
        }
    }
    // The armor lines are all that is left of the key printed line by line.
    let key_lines: Vec<&String> = log
        .iter()
        .filter(|(w, _, _)| w.starts_with("tls.key line"))
        .map(|(_, s, _)| s)
        .collect();
    for s in key_lines {
        assert!(s == "cat: ***" || s.starts_with("cat: -----"), "{s}");
    }
}

/// Runs `script` with `sh -c`, `$F` set to `file`; its stdout, split into
/// the lines a log shows.
fn printed(script: &str, file: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .env("F", file)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    assert!(!text.trim().is_empty(), "{script} printed nothing");
    text.lines().map(str::to_owned).collect()
}

/// What a runner that registered `masks` shows of `line`.
fn shown(masks: &[String], line: &str) -> String {
    let mut runner = SimulatedRunner::new();
    for m in masks {
        runner.line(&add_mask_command(m));
    }
    runner.line(line).unwrap()
}

/// Every line is hidden whole, or is PEM armor that a warning about
/// `armor_label` lists.
fn assert_covered(what: &str, lines: &[String], m: &[String], w: &[String], armor_label: &str) {
    for line in lines {
        let s = shown(m, line);
        if line.trim().is_empty() || s.split("***").all(|rest| rest.trim().is_empty()) {
            continue;
        }
        assert!(
            is_pem_armor(line)
                && w.iter()
                    .any(|w| w.starts_with(&format!("{armor_label}: ")) && w.contains("PEM armor")),
            "{what}: a printed line is not masked (shows {} characters); warnings: {w:?}",
            s.len()
        );
    }
}

fn cluster() -> crate::policy::KubeCluster {
    crate::policy::KubeCluster {
        name: "prod".into(),
        server: "https://k8s.internal:6443".into(),
        certificate_authority: std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/keys/issuer-a.pub.pem"),
        )
        .unwrap(),
        namespace: Some("apps".into()),
    }
}

/// A kubeconfig jobkey composed, read back the way jobs do: `kubectl
/// config view --raw -o jsonpath=…` prints the bare `client-key-data`
/// value, `base64 -d` of it prints the PEM key line by line, `yq` the same
/// from YAML; a service-account kubeconfig's `token`. Every line printed is
/// masked, or is PEM armor listed in the warnings.
#[test]
fn a_composed_kubeconfig_read_with_kubectl_and_base64_is_masked_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretString::new(pem_key());
    let sa_token = SecretString::new(format!(
        "eyJhbGciOiJSUzI1NiIsImtpZCI6InNhIn0.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(r#"{"sub":"system:serviceaccount:apps:deployer"}"#)
    ));
    let cert = cluster().certificate_authority;
    let with_cert = crate::issue::kubeconfig::with_client_certificate(&cluster(), &cert, &key);
    let with_token = crate::issue::kubeconfig::with_token(&cluster(), &sa_token);
    // (kubeconfig, what a job runs on it, the label whose warning lists armor)
    let user = "{.users[0].user";
    let cases: Vec<(&SecretString, String, &str)> = vec![
        (
            &with_cert,
            format!(
                r#"kubectl config view --kubeconfig "$F" --raw -o jsonpath='{user}.client-key-data}}'"#
            ),
            "",
        ),
        (
            &with_cert,
            format!(
                r#"kubectl config view --kubeconfig "$F" --raw -o jsonpath='{user}.client-key-data}}' | base64 -d"#
            ),
            "kube.kubeconfig users[0].user.client-key-data, base64-decoded",
        ),
        (
            &with_cert,
            r#"yq -r '.users[0].user["client-key-data"]' "$F" | base64 -d"#.into(),
            "kube.kubeconfig users[0].user.client-key-data, base64-decoded",
        ),
        (
            &with_cert,
            r#"yq -r '.users[0].user["client-key-data"]' "$F""#.into(),
            "",
        ),
        (
            &with_token,
            format!(r#"kubectl config view --kubeconfig "$F" --raw -o jsonpath='{user}.token}}'"#),
            "",
        ),
        (
            &with_token,
            r#"yq -r '.users[0].user.token' "$F""#.into(),
            "",
        ),
    ];
    for (kc, script, armor_label) in cases {
        let file = dir.path().join("kubeconfig");
        std::fs::write(&file, kc.expose_secret()).unwrap();
        let (m, w) = run(&[("kube.kubeconfig", kc.expose_secret())]);
        let lines = printed(&script, &file);
        assert_covered(&script, &lines, &m, &w, armor_label);
    }
    // The certificate and the cluster's CA are public: not masked.
    let (m, _) = run(&[("kube.kubeconfig", with_cert.expose_secret())]);
    let cert_b64 = STANDARD.encode(cert.as_bytes());
    assert!(!m.contains(&cert_b64), "the certificate is public");
}

/// The secrets inside other composite credentials, read the way a job
/// does: each printed piece is masked; what is not secret is not.
#[test]
fn secrets_inside_composite_values_get_their_own_masks() {
    let key_pem = pem_key();
    let service_account = serde_json::json!({
        "type": "service_account",
        "project_id": "acme-prod-4242",
        "private_key_id": "0f3c5e2a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e",
        "private_key": key_pem,
        "client_email": "deployer@acme-prod-4242.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
        "nested": {"credentials": {"user": "svc-nested", "pass": "nested-pass-123"}},
        "env": [{"name": "DB_PASSWORD", "value": "env-pair-secret-1"}, {"name": "REGION", "value": "eu-west-1-region"}],
    })
    .to_string();
    // (label, value, printed pieces that must be hidden, pieces that must stay)
    let cases: Vec<(&str, String, Vec<String>, Vec<&str>)> = vec![
        (
            "db.url",
            "postgres://deploy:p%40ss%2Fw0rd%21x@db.internal:5432/app?sslmode=require".into(),
            vec![
                "p%40ss%2Fw0rd%21x".into(),
                "p@ss/w0rd!x".into(),
            ],
            vec!["db.internal:5432", "sslmode=require", "deploy"],
        ),
        (
            "db.url",
            "amqp://svc:unencoded@pass-word@mq.internal/vhost".into(),
            vec!["unencoded@pass-word".into()],
            vec!["mq.internal"],
        ),
        (
            "db.dsn",
            r#"host=db.internal user=deploy password='s3cr3t pa\'ss' dbname=app"#.into(),
            vec!["s3cr3t pa'ss".into()],
            vec!["db.internal", "dbname=app"],
        ),
        (
            "db.jdbc",
            "jdbc:postgresql://db.internal/app?user=deploy&password=hunter2%2Bhunter+2&ssl=true"
                .into(),
            vec![
                "hunter2%2Bhunter+2".into(),
                "hunter2+hunter+2".into(),
                "hunter2+hunter 2".into(),
            ],
            vec!["db.internal", "ssl=true"],
        ),
        (
            "app.env",
            "DB_PASSWORD=\"correct horse battery\"\nAPI_URL=https://api.internal/v1\nexport API_TOKEN=tok_live_0123456789\n".into(),
            vec!["correct horse battery".into(), "tok_live_0123456789".into()],
            vec!["https://api.internal/v1"],
        ),
        (
            "gcp.key",
            service_account,
            key_pem
                .lines()
                .filter(|l| !is_pem_armor(l))
                .map(str::to_owned)
                .chain([
                    // Everything under a secret field is secret.
                    "nested-pass-123".to_owned(),
                    "svc-nested".into(),
                    "env-pair-secret-1".into(),
                ])
                .collect(),
            vec![
                "https://oauth2.googleapis.com/token",
                "service_account",
                "acme-prod-4242",
                "0f3c5e2a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e",
                "eu-west-1-region",
            ],
        ),
    ];
    for (label, value, hidden, kept) in &cases {
        let (m, w) = run(&[(label, value)]);
        for piece in hidden {
            let s = shown(&m, &format!("log: {piece} :end"));
            assert_eq!(s, "log: *** :end", "{label}: a secret piece is not masked");
        }
        for piece in kept {
            assert!(
                shown(&m, piece) == *piece,
                "{label}: {piece:?} is not secret but is masked"
            );
        }
        assert!(
            w.iter()
                .all(|w| !hidden.iter().any(|h| w.contains(h.as_str()))),
            "{label}: a warning shows a secret: {w:?}"
        );
    }
}

/// Which field names hold a secret: the words say so, unless the last
/// word says the field describes one (`private_key_id`, `token_uri`) or
/// the name says `public`.
#[test]
fn field_names_that_hold_secrets() {
    // (field name, secret?)
    let cases = [
        ("password", true),
        ("client-key-data", true),
        ("client-certificate-data", false),
        ("certificate-authority-data", false),
        ("token", true),
        ("id-token", true),
        ("refresh-token", true),
        ("client_secret", true),
        ("clientSecret", true),
        ("APIKey", true),
        ("api_key", true),
        ("DB_PASSWORD", true),
        ("connectionString", true),
        ("private_key", true),
        ("privateKey", true),
        ("private_key_id", false),
        ("token_uri", false),
        ("token_type", false),
        ("public_key", false),
        ("publicKey", false),
        ("password_file", false),
        ("monkey", false),
        ("username", false),
        ("client_email", false),
        ("sslmode", false),
        ("name", false),
        ("", false),
    ];
    for (name, secret) in cases {
        assert_eq!(composite::is_secret_name(name), secret, "{name:?}");
    }
}

/// A value broken by a lone `\r` (no `\n`): a log reader that breaks lines
/// at a bare CR shows each half; each half is masked.
#[test]
fn lines_split_at_a_lone_cr_and_at_crlf() {
    // (value, lines that must each be a mask)
    let cases: &[(&str, &[&str])] = &[
        (
            "first-half-secret\rsecond-half-secret",
            &["first-half-secret", "second-half-secret"],
        ),
        (
            "line-one-secret\r\nline-two-secret\nline-three-secret\r",
            &["line-one-secret", "line-two-secret", "line-three-secret"],
        ),
        (
            "alpha-secret-1\r\rbeta-secret-2",
            &["alpha-secret-1", "beta-secret-2"],
        ),
    ];
    for (value, lines) in cases {
        let (m, _) = run(&[("x", value)]);
        for line in *lines {
            assert!(m.iter().any(|s| s == line), "{value:?}: {line:?} missing");
        }
        assert!(
            m.iter().all(|s| s == value || !s.contains('\r')),
            "{value:?}: a line keeps a CR"
        );
    }
    // Line numbers in warnings count CR, LF and CRLF breaks alike.
    let (_, w) = run(&[(
        "k",
        "-----BEGIN KEY-----\rAAAABBBBCCCC\r\nshort\n-----END KEY-----",
    )]);
    assert_eq!(
        w,
        vec![
            "k: not masked: lines 1, 4 are PEM armor (public, the same in every key); line 3 is shorter than 8 characters"
        ]
    );
}

/// Regression: a password printed with JavaScript's `encodeURIComponent`
/// (which leaves `!'()*` as they are) was not masked, nor one in the JSON
/// of Python's `json.dumps` (`\u00e9`), Go's `encoding/json` (`\u003c`) or
/// PHP's `json_encode` (`\/`). Python and Node print the forms here; Go's
/// and PHP's are written out by hand.
#[test]
fn forms_printed_by_common_encoders_are_masked() {
    let value = "p@ss w0rd/<é>&'(x)*!\u{1F511}";
    let (masks, _) = run(&[("db.password", value)]);
    let mut printed: Vec<(String, String)> = Vec::new();
    let run_tool = |program: &str, args: &[&str]| -> String {
        let out = std::process::Command::new(program)
            .args(args)
            .env("V", value)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(out.status.success(), "{program}: {:?}", out);
        String::from_utf8(out.stdout).unwrap()
    };
    for (what, program, script) in [
        (
            "python json.dumps",
            "python3",
            "import json,os; print(json.dumps(os.environ['V'])[1:-1])",
        ),
        (
            "python quote",
            "python3",
            "import os,urllib.parse as u; print(u.quote(os.environ['V'], safe=''))",
        ),
        (
            "python quote_plus",
            "python3",
            "import os,urllib.parse as u; print(u.quote_plus(os.environ['V'], safe=''))",
        ),
        (
            "node encodeURIComponent",
            "node",
            "console.log(encodeURIComponent(process.env.V))",
        ),
        (
            "node JSON.stringify",
            "node",
            "console.log(JSON.stringify(process.env.V).slice(1, -1))",
        ),
    ] {
        let flag = if program == "node" { "-e" } else { "-c" };
        printed.push((
            what.to_owned(),
            run_tool(program, &[flag, script]).trim_end().to_owned(),
        ));
    }
    // Go's encoding/json and PHP's json_encode, by hand.
    printed.push((
        "go encoding/json".into(),
        "p@ss w0rd/\\u003cé\\u003e\\u0026'(x)*!\u{1F511}".into(),
    ));
    printed.push((
        "php json_encode".into(),
        "p@ss w0rd\\/<\\u00e9>&'(x)*!\\ud83d\\udd11".into(),
    ));
    // The independent encoders print what the test expects them to.
    assert_eq!(
        printed[0].1, "p@ss w0rd/<\\u00e9>&'(x)*!\\ud83d\\udd11",
        "python json.dumps"
    );
    assert_eq!(
        printed[3].1, "p%40ss%20w0rd%2F%3C%C3%A9%3E%26'(x)*!%F0%9F%94%91",
        "encodeURIComponent"
    );
    for (what, form) in &printed {
        assert!(
            masks.iter().any(|m| m == form),
            "{what} prints `{form}`, which no mask covers"
        );
    }
}
