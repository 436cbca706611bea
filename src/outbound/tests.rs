//! The outbound policy: the URL table, and real loopback servers that
//! redirect, send too much, lie about their length, or are slow.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

#[test]
fn only_https_or_loopback_http_without_userinfo_is_allowed() {
    use UrlRefusal::*;
    let cases: &[(&str, Result<(), UrlRefusal>)] = &[
        ("https://token.actions.githubusercontent.com", Ok(())),
        ("https://gitlab.example.com:8443/path?q=1", Ok(())),
        ("https://10.0.0.1/jwks", Ok(())),
        ("http://127.0.0.1:8080/jwks", Ok(())),
        ("http://127.8.9.1/jwks", Ok(())),
        ("http://localhost:9000", Ok(())),
        ("http://LOCALHOST:9000", Ok(())),
        ("http://[::1]", Ok(())),
        ("http://[::1]:9000/x", Ok(())),
        ("http://10.0.0.1/jwks", Err(PlainHttp)),
        ("http://0.0.0.0:8080", Err(PlainHttp)),
        ("http://gitlab.example.com", Err(PlainHttp)),
        ("http://localhost.evil.example", Err(PlainHttp)),
        ("http://localhost.", Err(PlainHttp)),
        ("http://127.0.0.1.nip.io", Err(PlainHttp)),
        ("http://[::ffff:127.0.0.1]", Err(PlainHttp)),
        ("http://[::2]", Err(PlainHttp)),
        ("ftp://127.0.0.1/x", Err(Scheme("ftp".into()))),
        ("file:///etc/passwd", Err(Scheme("file".into()))),
        ("ws://localhost/x", Err(Scheme("ws".into()))),
        ("data:text/plain,x", Err(Scheme("data".into()))),
        ("https://user:hunter2@gitlab.example.com", Err(UserInfo)),
        ("https://user@gitlab.example.com", Err(UserInfo)),
        ("https://:hunter2@gitlab.example.com", Err(UserInfo)),
        ("http://u:hunter2@127.0.0.1:8080", Err(UserInfo)),
        // The host is evil.example; `127.0.0.1` is a user name.
        ("http://127.0.0.1@evil.example", Err(UserInfo)),
    ];
    for (u, want) in cases {
        let url = Url::parse(u).unwrap();
        assert_eq!(&check_url(&url), want, "{u}");
        assert_eq!(url_is_allowed(&url), want.is_ok(), "{u}");
        match (AllowedUrl::new(url), want) {
            (Ok(a), Ok(())) => assert_eq!(a.as_url().as_str(), Url::parse(u).unwrap().as_str()),
            (Err(OutboundError::RefusedUrl { url, reason }), Err(w)) => {
                assert_eq!(&reason, w, "{u}");
                assert!(!url.contains("hunter2"), "{u}: the password is not shown");
            }
            (got, _) => panic!("{u}: {got:?}"),
        }
    }
}

#[test]
fn refusals_say_what_is_allowed_and_never_show_a_password() {
    let e = AllowedUrl::parse("http://jobkey.example.com/x").unwrap_err();
    assert_eq!(
        e.to_string(),
        "`http://jobkey.example.com/x` is refused: plain http goes only to a loopback address (127.0.0.0/8, [::1] or localhost); it must be https"
    );
    let e = AllowedUrl::parse("https://ci:hunter2@ci.example.com/").unwrap_err();
    assert_eq!(
        e.to_string(),
        "`https://ci.example.com/` is refused: a user name or password in the URL is refused: it would be sent with every request and shown in logs"
    );
    let e = AllowedUrl::parse("ftp://127.0.0.1/x").unwrap_err();
    assert!(
        e.to_string().contains("scheme `ftp` is never fetched"),
        "{e}"
    );
    assert!(matches!(
        AllowedUrl::parse("jobkey.example.com"),
        Err(OutboundError::NotAUrl(
            url::ParseError::RelativeUrlWithoutBase
        ))
    ));
}

#[test]
fn paths_are_joined_without_doubling_the_slash() {
    // (base, path, joined)
    let cases = [
        (
            "https://b.example",
            "/v1/exchange",
            "https://b.example/v1/exchange",
        ),
        (
            "https://b.example/",
            "/v1/exchange",
            "https://b.example/v1/exchange",
        ),
        (
            "http://127.0.0.1:8400/jobkey/",
            "/v1/revoke",
            "http://127.0.0.1:8400/jobkey/v1/revoke",
        ),
        (
            "https://gitlab.example.com",
            "/.well-known/openid-configuration",
            "https://gitlab.example.com/.well-known/openid-configuration",
        ),
    ];
    for (base, path, want) in cases {
        let joined = AllowedUrl::parse(base).unwrap().join_path(path).unwrap();
        assert_eq!(joined.as_str(), want);
    }
}

fn client(timeout: Duration, max_body_bytes: usize) -> HttpClient {
    HttpClient::new(ClientSettings {
        connect_timeout: timeout,
        timeout,
        max_body_bytes,
        ca_file: None,
    })
    .unwrap()
}

/// What a raw loopback server writes on each connection, after reading the
/// request head: `pieces`, with `pause` before each one after the first;
/// then it closes the connection.
#[derive(Clone)]
struct Reply {
    pieces: Vec<Vec<u8>>,
    pause: Duration,
}

impl Reply {
    fn at_once(s: impl Into<Vec<u8>>) -> Self {
        Reply {
            pieces: vec![s.into()],
            pause: Duration::ZERO,
        }
    }
}

/// A loopback server answering every request with `reply`; returns its URL
/// and the number of requests it has read.
async fn raw_server(reply: Reply) -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = l.accept().await {
            let reply = reply.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                for (i, piece) in reply.pieces.iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(reply.pause).await;
                    }
                    if conn.write_all(piece).await.is_err() {
                        return;
                    }
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    (url, requests)
}

fn with_length(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut r =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for c in body.chunks(chunk) {
        r.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        r.extend_from_slice(c);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

/// Neither `Content-Length` nor chunked: the body ends when the server
/// closes the connection.
fn until_close(body: &[u8]) -> Vec<u8> {
    let mut r = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    r.extend_from_slice(body);
    r
}

async fn get(c: &HttpClient, url: &str) -> Result<Response, OutboundError> {
    c.send(Request::get(&AllowedUrl::parse(url).unwrap())).await
}

#[tokio::test]
async fn bodies_past_the_cap_are_refused_however_their_length_is_told() {
    const CAP: usize = 1000;
    let exact = vec![b'a'; CAP];
    let over = vec![b'b'; CAP + 1];
    // (what, reply, Ok(body length) or Err(too large))
    let cases: Vec<(&str, Vec<u8>, Result<usize, ()>)> = vec![
        ("cap, with length", with_length(&exact), Ok(CAP)),
        ("cap, chunked", chunked(&exact, 100), Ok(CAP)),
        ("cap, until close", until_close(&exact), Ok(CAP)),
        ("over, with length", with_length(&over), Err(())),
        ("over, chunked", chunked(&over, 100), Err(())),
        ("over, one big chunk", chunked(&over, CAP + 1), Err(())),
        ("over, until close", until_close(&over), Err(())),
        (
            "a length above the cap, and no body at all",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n".to_vec(),
            Err(()),
        ),
        (
            // The declared length frames the body: the rest is not read.
            "a length of 5 followed by far more",
            [
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".as_slice(),
                &vec![b'c'; 100 * CAP],
            ]
            .concat(),
            Ok(5),
        ),
    ];
    let c = client(Duration::from_secs(5), CAP);
    for (what, reply, want) in cases {
        let (url, _) = raw_server(Reply::at_once(reply)).await;
        match (get(&c, &url).await, want) {
            (Ok(r), Ok(len)) => assert_eq!(r.body.expose().len(), len, "{what}"),
            (Err(OutboundError::TooLarge { limit, url: u }), Err(())) => {
                assert_eq!(limit, CAP, "{what}");
                assert_eq!(u, format!("{url}/"), "{what}");
            }
            (got, _) => panic!("{what}: {got:?}"),
        }
    }
}

#[tokio::test]
async fn a_body_shorter_than_its_length_is_a_transport_error() {
    let (url, _) = raw_server(Reply::at_once(
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    ))
    .await;
    let e = get(&client(Duration::from_secs(5), 1000), &url)
        .await
        .unwrap_err();
    assert!(matches!(e, OutboundError::Transport { .. }), "{e:?}");
}

#[tokio::test]
async fn redirects_are_refused_and_not_followed() {
    for status in [301u16, 302, 303, 307, 308] {
        let (url, requests) = raw_server(Reply::at_once(format!(
            "HTTP/1.1 {status} Moved\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
        )))
        .await;
        let e = get(&client(Duration::from_secs(5), 1000), &url)
            .await
            .unwrap_err();
        match &e {
            OutboundError::Redirect { url: u, status: s } => {
                assert_eq!(*s, status);
                assert_eq!(u, &format!("{url}/"));
            }
            other => panic!("{status}: {other:?}"),
        }
        assert!(
            e.to_string().contains("redirects are never followed"),
            "{e}"
        );
        assert_eq!(requests.load(Ordering::SeqCst), 1, "{status}: one request");
    }
}

#[tokio::test]
async fn slow_servers_time_out() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n".to_vec();
    // (what, reply)
    let cases = [
        (
            "no headers in time",
            Reply {
                pieces: vec![Vec::new(), head.clone()],
                pause: Duration::from_secs(10),
            },
        ),
        (
            "a body one byte at a time",
            Reply {
                pieces: vec![
                    head.clone(),
                    b"a".to_vec(),
                    b"b".to_vec(),
                    b"c".to_vec(),
                    b"d".to_vec(),
                ],
                pause: Duration::from_millis(400),
            },
        ),
    ];
    let c = client(Duration::from_millis(600), 1000);
    for (what, reply) in cases {
        let (url, _) = raw_server(reply).await;
        let started = Instant::now();
        let e = get(&c, &url).await.unwrap_err();
        assert!(
            matches!(e, OutboundError::Timeout { total, .. } if total == Duration::from_millis(600)),
            "{what}: {e:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{what} took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn connection_and_tls_failures_are_connect_errors() {
    // A port nobody listens on.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    // A server that does not speak TLS, asked over https: it answers the
    // ClientHello with plain HTTP.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let not_tls = format!("https://{}", plain.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = plain.accept().await {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let _ = conn.write_all(&with_length(b"hi")).await;
            let _ = conn.shutdown().await;
        }
    });
    let c = client(Duration::from_secs(5), 1000);
    for url in [closed, not_tls] {
        let e = get(&c, &url).await.unwrap_err();
        assert!(matches!(e, OutboundError::Connect { .. }), "{url}: {e:?}");
    }
}

#[tokio::test]
async fn statuses_come_back_with_their_body_and_success_refuses_them() {
    let (url, _) = raw_server(Reply::at_once(
        "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
    ))
    .await;
    let r = get(&client(Duration::from_secs(5), 1000), &url)
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.body.expose(), b"not found");
    let e = r.success().unwrap_err();
    assert!(
        matches!(&e, OutboundError::Status { status: 404, .. }),
        "{e:?}"
    );
    assert!(!e.to_string().contains("not found"), "no body in the error");
}

#[tokio::test]
async fn the_authorization_header_is_sent_and_never_shown() {
    use axum::http::HeaderMap;
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/echo",
        post(|h: HeaderMap, body: String| async move {
            let auth = h.get("authorization").and_then(|v| v.to_str().ok());
            let ct = h.get("content-type").and_then(|v| v.to_str().ok());
            let accept = h.get("accept").and_then(|v| v.to_str().ok());
            format!("{auth:?} {ct:?} {accept:?} {body}")
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let url = AllowedUrl::parse(&format!("{base}/echo")).unwrap();
    let c = client(Duration::from_secs(5), 1000);
    let token = SecretString::new("tok-3f9a".into());
    let r = c
        .send(
            Request::post_json(&url, b"{}".to_vec())
                .authorization("Bearer", &token)
                .accept_json(),
        )
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(r.success().unwrap().expose()),
        r#"Some("Bearer tok-3f9a") Some("application/json") Some("application/json") {}"#
    );
    let bad = SecretString::new("tok\nInjected: header".into());
    let e = c
        .send(Request::get(&url).authorization("Bearer", &bad))
        .await
        .unwrap_err();
    assert!(
        matches!(e, OutboundError::InvalidHeader("Authorization")),
        "{e:?}"
    );
    assert!(!e.to_string().contains("tok"), "{e}");
}

#[test]
fn unusable_ca_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    // (file, reason)
    let cases = [
        (dir.path().join("missing.pem"), "No such file"),
        (empty, "no certificate in the file"),
    ];
    for (path, reason) in cases {
        let e = HttpClient::new(ClientSettings {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_body_bytes: 1,
            ca_file: Some(path.clone()),
        })
        .err()
        .unwrap();
        match e {
            OutboundError::CaFile { path: p, reason: r } => {
                assert_eq!(p, path.display().to_string());
                assert!(r.contains(reason), "{r}");
            }
            other => panic!("{}: {other:?}", path.display()),
        }
    }
}

#[test]
fn a_growing_body_never_exceeds_its_cap_and_shows_only_its_length() {
    let mut b = Body(Vec::new());
    for _ in 0..10 {
        b.append(&[7u8; 100], 1000);
        assert!(b.0.capacity() <= 1000, "{}", b.0.capacity());
    }
    assert_eq!(b.expose(), &[7u8; 1000][..]);
    assert_eq!(format!("{b:?}"), "Body(1000 bytes)");
}
