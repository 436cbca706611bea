//! The deployment examples in `examples/deploy/` are checked with the tools
//! that run here, offline:
//! - the systemd unit with `systemd-analyze verify` (its `ExecStart` pointed
//!   at the built binary in a temp copy), and its hardening keys;
//! - the Kubernetes manifests with `kubectl kustomize` (offline: `kubectl
//!   apply --dry-run=client` and `kubectl create --dry-run=client` both
//!   need an API server for discovery, and none runs here), then each
//!   object's kind, apiVersion and the settings the examples promise;
//! - the config in the ConfigMap with `jobkey check` against the policies
//!   in the other ConfigMap, and the systemd example's config likewise;
//! - the Containerfile's `cargo build` line against the Makefile's build
//!   flags (there is no container engine here to run it).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/deploy")
        .join(path)
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} did not run: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `key=value` lines of a unit file (comments and sections dropped).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let text = std::fs::read_to_string(deploy("systemd/jobkey.service")).unwrap();
    let settings = unit_settings(&text);
    let has = |k: &str, v: &str| settings.iter().any(|(a, b)| a == k && b == v);
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("SystemCallFilter", "@system-service"),
        ("StateDirectory", "jobkey"),
        ("ReadOnlyPaths", "/etc/jobkey"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert!(has(key, value), "the unit sets {key}={value}");
    }
    // The unit runs the config the example config is for, and hands it the
    // AppRole files under the names that config reads.
    let exec = settings
        .iter()
        .find(|(k, _)| k == "ExecStart")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(
        exec.starts_with("/usr/local/bin/jobkey serve --config /etc/jobkey/jobkey.toml"),
        "{exec}"
    );
    let config: toml::Table = std::fs::read_to_string(deploy("systemd/jobkey.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let auth = &config["vault"]["auth"];
    for (field, credential) in [
        ("role_id_file", "vault-role-id"),
        ("secret_id_file", "vault-secret-id"),
    ] {
        assert_eq!(
            auth[field].as_str(),
            Some(format!("/run/credentials/jobkey.service/{credential}").as_str())
        );
        assert!(
            settings
                .iter()
                .any(|(k, v)| k == "LoadCredential" && v.starts_with(&format!("{credential}:"))),
            "LoadCredential={credential}:…"
        );
    }
    assert!(
        config["audit"]["path"]
            .as_str()
            .unwrap()
            .starts_with("/var/lib/jobkey/"),
        "the audit log is in the StateDirectory"
    );

    // systemd-analyze checks that ExecStart's binary exists: a temp copy
    // runs the one just built.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("jobkey.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/jobkey", env!("CARGO_BIN_EXE_jobkey")),
    )
    .unwrap();
    let (ok, out, err) = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert!(ok, "systemd-analyze verify: {out}{err}");
    assert!(
        !err.contains("jobkey.service"),
        "no warning about the unit: {err}"
    );
    // And it is not a check that passes anything: a misspelt key fails.
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/jobkey", env!("CARGO_BIN_EXE_jobkey"))
            .replace("ProtectSystem=strict", "ProtectSystem=strcit"),
    )
    .unwrap();
    let (_, out, err) = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert!(
        format!("{out}{err}").contains("jobkey.service:") && err.contains("strcit"),
        "a bad value is reported: {out}{err}"
    );
}

/// The manifests as kustomize renders them (offline).
fn manifests() -> Vec<Value> {
    let (ok, out, err) = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy("kubernetes"))
        .env("KUBECONFIG", "/dev/null"));
    assert!(ok, "kubectl kustomize: {err}");
    serde_saphyr::from_multiple::<Value>(&out).unwrap()
}

fn object<'a>(all: &'a [Value], kind: &str, name: &str) -> &'a Value {
    all.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_kubernetes_manifests_render_and_say_what_they_promise() {
    let all = manifests();
    let mut kinds: Vec<(String, String, String)> = all
        .iter()
        .map(|o| {
            assert_eq!(
                o["metadata"]["namespace"].as_str().unwrap_or("jobkey"),
                "jobkey"
            );
            (
                o["apiVersion"].as_str().unwrap().to_owned(),
                o["kind"].as_str().unwrap().to_owned(),
                o["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    kinds.sort();
    let expected = [
        ("apps/v1", "Deployment", "jobkey"),
        ("apps/v1", "Deployment", "jobkey-redis"),
        ("networking.k8s.io/v1", "NetworkPolicy", "jobkey-redis"),
        ("policy/v1", "PodDisruptionBudget", "jobkey"),
        ("v1", "ConfigMap", "jobkey-config"),
        ("v1", "ConfigMap", "jobkey-policies"),
        ("v1", "Namespace", "jobkey"),
        ("v1", "Secret", "jobkey-vault-approle"),
        ("v1", "Service", "jobkey"),
        ("v1", "Service", "jobkey-redis"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, k, n)| (a.to_string(), k.to_string(), n.to_string()))
        .collect();
    assert_eq!(kinds, expected);

    let dep = object(&all, "Deployment", "jobkey");
    assert_eq!(dep["spec"]["replicas"], 3);
    let pod = &dep["spec"]["template"];
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "8400");
    let spec = &pod["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_ne!(spec["securityContext"]["runAsUser"], 0);
    let c = &spec["containers"][0];
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    for r in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(c["resources"][r][what].is_string(), "resources.{r}.{what}");
        }
    }
    // Each volume comes from what the example says.
    let volumes = spec["volumes"].as_array().unwrap();
    let source = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volume {name}"))
            .clone()
    };
    assert_eq!(source("config")["configMap"]["name"], "jobkey-config");
    assert_eq!(source("policies")["configMap"]["name"], "jobkey-policies");
    assert_eq!(
        source("vault-approle")["secret"]["secretName"],
        "jobkey-vault-approle"
    );
    assert!(source("audit")["emptyDir"].is_object());

    let pdb = object(&all, "PodDisruptionBudget", "jobkey");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        dep["spec"]["selector"]["matchLabels"]
    );
    let svc = object(&all, "Service", "jobkey");
    assert_eq!(
        svc["spec"]["selector"],
        dep["spec"]["selector"]["matchLabels"]
    );
}

/// Where the Deployment mounts volume `name` in the jobkey container.
fn mount_of(all: &[Value], name: &str) -> String {
    let dep = object(all, "Deployment", "jobkey");
    dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["mountPath"].as_str())
        .unwrap_or_else(|| panic!("no mount of {name}"))
        .to_owned()
}

#[test]
fn the_configmap_config_passes_jobkey_check_with_the_configmap_policies() {
    let all = manifests();
    let config_text = object(&all, "ConfigMap", "jobkey-config")["data"]["jobkey.toml"]
        .as_str()
        .unwrap()
        .to_owned();
    let config: toml::Table = config_text.parse().unwrap();
    // The paths the config names are where the Deployment mounts them.
    let policy_dir = config["policy_dir"].as_str().unwrap();
    assert_eq!(policy_dir, mount_of(&all, "policies"));
    let secrets = mount_of(&all, "vault-approle");
    let auth = &config["vault"]["auth"];
    assert_eq!(auth["method"].as_str(), Some("approle"));
    for (field, key) in [("role_id_file", "role-id"), ("secret_id_file", "secret-id")] {
        assert_eq!(
            auth[field].as_str(),
            Some(format!("{secrets}/{key}").as_str())
        );
        assert!(
            object(&all, "Secret", "jobkey-vault-approle")["stringData"][key].is_string(),
            "the Secret has {key}"
        );
    }
    let audit = config["audit"]["path"].as_str().unwrap();
    assert!(audit.starts_with(&format!("{}/", mount_of(&all, "audit"))));
    assert!(config["state"]["redis_url"].as_str().is_some());

    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let data = object(&all, "ConfigMap", "jobkey-policies")["data"]
        .as_object()
        .unwrap();
    assert!(!data.is_empty());
    for (name, text) in data {
        std::fs::write(policies.join(name), text.as_str().unwrap()).unwrap();
    }
    let config_path = dir.path().join("jobkey.toml");
    let check = |text: &str| {
        std::fs::write(&config_path, text).unwrap();
        crate::support::jobkey_cli(&["check", "--config", config_path.to_str().unwrap()])
    };
    let local = config_text.replace(policy_dir, policies.to_str().unwrap());
    let (code, out, err) = check(&local);
    assert_eq!(code, 0, "jobkey check: {out}{err}");
    assert!(
        out.contains("2 environment(s) (production, staging)"),
        "{out}"
    );
    // The policies lint clean as well.
    let (code, out, err) = crate::support::jobkey_cli(&[
        "policy",
        "lint",
        "--config",
        config_path.to_str().unwrap(),
        "--deny-warnings",
    ]);
    assert_eq!(code, 0, "jobkey policy lint: {out}{err}");

    // The systemd example's config, against the same policies.
    let systemd = std::fs::read_to_string(deploy("systemd/jobkey.toml")).unwrap();
    let (code, out, err) =
        check(&systemd.replace("/etc/jobkey/policies", policies.to_str().unwrap()));
    assert_eq!(code, 0, "jobkey check (systemd example): {out}{err}");

    // And `check` is not a formality here: a key this version does not
    // know (one the comments mention) is refused.
    let (code, _, err) = check(&format!("{local}\n[metrics]\nlisten = \"0.0.0.0:9400\"\n"));
    assert_ne!(code, 0);
    assert!(err.contains("metrics"), "{err}");
}

/// The flags of a `cargo build` command line, without the `cargo build`.
fn build_flags(line: &str) -> Vec<String> {
    let rest = &line[line.find("cargo build").expect("a cargo build line") + "cargo build".len()..];
    rest.split_whitespace()
        .take_while(|w| w.starts_with("--"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_containerfile_builds_like_the_makefile_and_runs_as_non_root() {
    let text = std::fs::read_to_string(deploy("Containerfile")).unwrap();
    let makefile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Makefile")).unwrap();
    let make_build = makefile
        .lines()
        .skip_while(|l| !l.starts_with("build:"))
        .find(|l| l.contains("build "))
        .expect("the Makefile's build target");
    let make_flags = build_flags(&make_build.replace("$(CARGO)", "cargo"));
    assert!(
        make_flags.contains(&"--locked".to_owned()),
        "{make_flags:?}"
    );

    let builds: Vec<&str> = text.lines().filter(|l| l.contains("cargo build")).collect();
    assert_eq!(builds.len(), 1, "one build command: {builds:?}");
    let mut flags = build_flags(builds[0]);
    flags.sort();
    let mut expected = make_flags.clone();
    expected.push("--release".to_owned());
    expected.sort();
    assert_eq!(flags, expected, "the Makefile's flags plus --release");
    assert!(
        text.contains("target/release/jobkey"),
        "copies the release binary"
    );

    // Multi-stage, the builder at least the crate's rust-version, the last
    // stage a non-root user.
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    let cargo_toml: toml::Table =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
    let msrv = cargo_toml["package"]["rust-version"].as_str().unwrap();
    assert!(
        stages[0].contains(&format!("rust:{msrv}")),
        "builder is rust:{msrv}: {}",
        stages[0]
    );
    let last = &text[text.rfind("\nFROM ").unwrap()..];
    assert!(
        last.contains("--from=build"),
        "the runtime copies the build"
    );
    let user = last
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap().trim();
    assert!(
        uid != "0" && uid != "root" && uid.parse::<u32>().is_ok(),
        "non-root numeric user: {user}"
    );
    assert!(!last.contains("cargo"), "no toolchain in the runtime");
}
