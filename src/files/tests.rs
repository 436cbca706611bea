use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::*;

/// Runs `f` on its own thread and fails the test if it takes more than a
/// few seconds (a FIFO or `/dev/zero` read would hang or run out of memory).
pub(crate) fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the read did not come back within 5 s")
}

pub(crate) fn mkfifo(path: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(st.success(), "mkfifo {}", path.display());
}

#[test]
fn only_regular_files_within_the_cap_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("ok.txt"), "hello").unwrap();
    std::fs::write(p("exact.txt"), "x".repeat(64)).unwrap();
    std::fs::write(p("big.txt"), "x".repeat(65)).unwrap();
    std::fs::write(p("latin1.txt"), [0xe9u8, 0x0a]).unwrap();
    mkfifo(&p("fifo"));
    std::os::unix::fs::symlink("/dev/zero", p("zero")).unwrap();
    std::os::unix::fs::symlink(p("fifo"), p("to-fifo")).unwrap();
    std::os::unix::fs::symlink(p("ok.txt"), p("to-ok")).unwrap();
    std::fs::create_dir(p("sub")).unwrap();

    // (file, Ok(text) or the error's whole message)
    let cases: Vec<(PathBuf, Result<String, String>)> = vec![
        (p("ok.txt"), Ok("hello".into())),
        (p("to-ok"), Ok("hello".into())),
        (p("exact.txt"), Ok("x".repeat(64))),
        (
            p("big.txt"),
            Err(format!(
                "{} is larger than 64 bytes",
                p("big.txt").display()
            )),
        ),
        (
            p("fifo"),
            Err(format!(
                "{} is a FIFO, not a regular file",
                p("fifo").display()
            )),
        ),
        (
            p("to-fifo"),
            Err(format!(
                "{} is a FIFO, not a regular file",
                p("to-fifo").display()
            )),
        ),
        (
            p("zero"),
            Err(format!(
                "{} is a character device, not a regular file",
                p("zero").display()
            )),
        ),
        (
            p("sub"),
            Err(format!(
                "{} is a directory, not a regular file",
                p("sub").display()
            )),
        ),
        (
            p("latin1.txt"),
            Err(format!("{} is not UTF-8 text", p("latin1.txt").display())),
        ),
    ];
    for (path, want) in cases {
        let shown = path.display().to_string();
        let got = promptly(move || read_to_string(&path, 64).map_err(|e| e.to_string()));
        assert_eq!(got, want, "{shown}");
    }
    let missing = read(&p("nope"), 64).unwrap_err();
    assert!(
        matches!(&missing, FileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    );
    assert!(
        missing
            .to_string()
            .starts_with(&format!("{}: ", p("nope").display()))
    );
}

#[test]
fn reasons_leave_the_name_to_the_caller_and_limits_read_naturally() {
    // (limit, its text)
    let cases = [
        (MIB, "1 MiB"),
        (4 * MIB, "4 MiB"),
        (256 * KIB, "256 KiB"),
        (1000, "1000 bytes"),
        (MIB + 1, "1048577 bytes"),
    ];
    for (limit, text) in cases {
        let e = FileError::TooLarge {
            path: "/etc/jobkey.toml".into(),
            size: limit + 1,
            limit,
        };
        assert_eq!(
            e.to_string(),
            format!("/etc/jobkey.toml is larger than {text}")
        );
        assert_eq!(e.reason(), format!("it is larger than {text}"));
        assert_eq!(e.into_io().to_string(), format!("it is larger than {text}"));
    }
}

#[test]
fn a_secret_is_read_into_a_buffer_sized_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, [7u8; 32]).unwrap();
    let buf = read_secret(&path, 4 * KIB).unwrap();
    assert_eq!(&buf[..], &[7u8; 32]);
    assert_eq!(buf.capacity(), 4 * 1024 + 1, "allocated once, never grown");
    let zero = dir.path().join("zero");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let e = promptly(move || read_secret(&zero, 4 * KIB).map(drop).unwrap_err());
    assert!(
        matches!(
            e,
            FileError::NotRegular {
                kind: "a character device",
                ..
            }
        ),
        "{e:?}"
    );
}
