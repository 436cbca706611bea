//! What the real binary writes to a log file: plain text (no ANSI colour
//! codes when stderr is not a terminal) and no per-request errors from the
//! Vault client library, only jobkey's own line.

use jobkey::Shape;
use serde_json::Map;

use crate::support::{Options, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_file_is_plain_text_without_vault_library_noise() {
    let mut stack = Stack::start_with(Options {
        subprocess: true,
        default_log_filter: true,
        ..Options::default()
    })
    .await;
    let token = stack.github.mint(Shape::Github, "jobkey", &Map::new());
    stack.bao.stop();
    let (status, resp) = stack.exchange_status(&token, "production").await;
    assert_eq!(status, 503, "{resp}");
    assert_eq!(resp["error"], "vault_unavailable");
    let log = std::fs::read_to_string(&stack.log_path).unwrap();
    assert!(
        log.contains("issuing a credential failed"),
        "jobkey logged the failure itself:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI escape codes in a log file:\n{log}"
    );
    for noisy in ["rustify", "vaultrs"] {
        assert!(
            !log.contains(noisy),
            "no `{noisy}` lines by default:\n{log}"
        );
    }
}
