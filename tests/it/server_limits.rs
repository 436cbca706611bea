//! The listener's timeouts and limits against slow and flooding clients:
//! a header or a body trickled byte by byte is cut off, an idle keep-alive
//! connection is closed, connections over the cap and exchanges over the
//! in-flight cap get `503 server_busy` with `Retry-After` while a valid
//! exchange still gets an answer, and shutdown waits for the request in
//! progress.

use std::time::{Duration, Instant};

use jobkey::Shape;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::broker_support::{Broker, post};
use crate::support::Stack;

/// Reads until the server closes the connection (or `limit` passes):
/// what was read, and when the connection ended (`None`: still open).
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, Option<Instant>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(Instant::now()),
                );
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes `bytes` one per `every`, until done or the peer refuses them.
fn trickle(mut w: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>, every: Duration) {
    tokio::spawn(async move {
        for b in bytes {
            if w.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_trickled_byte_by_byte_is_cut_off() {
    let stack = Stack::start().await;
    let broker = Broker::start(&stack, "slow-header", |cfg| {
        cfg.server.header_read_timeout = Duration::from_secs(2);
    })
    .await;
    // A connection that sends nothing at all is not kept either.
    let mut silent = TcpStream::connect(broker.addr).await.unwrap();
    let silent_since = Instant::now();
    let s = TcpStream::connect(broker.addr).await.unwrap();
    let (mut r, w) = s.into_split();
    let header = b"GET /healthz HTTP/1.1\r\nHost: jobkey\r\nX-Slow: 0123456789\r\n\r\n".to_vec();
    let started = Instant::now();
    trickle(w, header, Duration::from_secs(1));
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(8), r.read(&mut buf)).await {
            Err(_) => panic!("still open after {:?}", started.elapsed()),
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    };
    assert!(
        ended >= Duration::from_millis(1800) && ended < Duration::from_millis(3500),
        "cut off at the 2 s header timeout, not {ended:?}"
    );
    assert!(
        got.is_empty(),
        "no answer: {}",
        String::from_utf8_lossy(&got)
    );
    let (got, closed) = read_until_closed(&mut silent, Duration::from_secs(3)).await;
    let closed = closed.expect("the silent connection is closed");
    assert!(
        got.is_empty() && closed - silent_since < Duration::from_millis(3500),
        "closed unanswered at the header timeout: {got}"
    );
    // Others are still served.
    let (status, _) = get(&broker.url, "/healthz").await;
    assert_eq!(status, 200);
}

async fn get(url: &str, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{url}{path}")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_byte_by_byte_gets_408_request_timeout() {
    let stack = Stack::start().await;
    let broker = Broker::start(&stack, "slow-body", |cfg| {
        cfg.server.request_timeout = Duration::from_secs(3);
    })
    .await;
    let gh = stack.github.mint(Shape::Github, "jobkey", &Map::new());
    let body =
        json!({"environment": "production", "credentials": ["deploy-db"], "ttl": "1m"}).to_string();
    let mut s = TcpStream::connect(broker.addr).await.unwrap();
    let head = format!(
        "POST /v1/exchange HTTP/1.1\r\nHost: jobkey\r\nAuthorization: Bearer {gh}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let started = Instant::now();
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut r, w) = s.into_split();
    trickle(w, body.into_bytes(), Duration::from_secs(1));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(8), r.read(&mut buf)).await {
            Err(_) => panic!(
                "no answer after {:?}: {}",
                started.elapsed(),
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(text.contains("\"error\":\"request_timeout\""), "{text}");
    assert!(
        elapsed >= Duration::from_millis(2800) && elapsed < Duration::from_millis(4500),
        "answered at the 3 s request timeout, not {elapsed:?}"
    );
    assert_eq!(
        jobkey::verify_file(&broker.audit_path).unwrap().lines,
        0,
        "nothing ran: no audit line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let stack = Stack::start().await;
    let broker = Broker::start(&stack, "idle", |cfg| {
        cfg.server.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let mut s = TcpStream::connect(broker.addr).await.unwrap();
    let req = b"GET /healthz HTTP/1.1\r\nHost: jobkey\r\n\r\n";
    // Kept alive: two requests on the connection, a second apart.
    for _ in 0..2 {
        s.write_all(req).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 "));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let idle_since = Instant::now() - Duration::from_secs(1);
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(6)).await;
    let closed = closed.unwrap_or_else(|| panic!("still open after {:?}", idle_since.elapsed()));
    let idle = closed - idle_since;
    assert!(
        idle >= Duration::from_millis(1800) && idle < Duration::from_millis(3500),
        "closed at the 2 s idle timeout, not {idle:?}"
    );
    assert!(got.is_empty(), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_503_and_half_open_ones_are_cut() {
    let stack = Stack::start().await;
    let broker = Broker::start(&stack, "conns", |cfg| {
        cfg.server.max_connections = 4;
        cfg.server.header_read_timeout = Duration::from_secs(5);
    })
    .await;
    // Five half-sent requests: four take every place; the fifth is over
    // the cap and, its headers never complete, closed unanswered.
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(broker.addr).await.unwrap();
        s.write_all(b"POST /v1/exchange HTTP/1.1\r\nHost: jobkey\r\n")
            .await
            .unwrap();
        held.push(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let mut fifth = held.pop().unwrap();
    let (answer, closed) = read_until_closed(&mut fifth, Duration::from_secs(3)).await;
    assert!(
        closed.is_some() && answer.is_empty(),
        "closed unanswered: {answer}"
    );
    // A whole request over the cap is answered at once, and closed.
    let mut sixth = TcpStream::connect(broker.addr).await.unwrap();
    sixth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: jobkey\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut sixth, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "answered and closed: {answer}");
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
    assert!(answer.contains("\"error\":\"server_busy\""), "{answer}");

    // A valid exchange meanwhile gets an answer: 503 and when to retry.
    let gh = stack.github.mint(Shape::Github, "jobkey", &Map::new());
    let body = json!({"environment": "production"}).to_string();
    let (status, retry, resp) = tokio::time::timeout(
        Duration::from_secs(2),
        post(&broker.url, "/v1/exchange", &gh, &body),
    )
    .await
    .expect("an answer, not a hang");
    assert_eq!(
        (status, retry.as_deref(), resp["error"].as_str()),
        (503, Some("1"), Some("server_busy")),
        "{resp}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(4500),
        "before the half-open ones were cut"
    );

    // The header timeout cuts the four half-open connections, and the
    // valid exchange goes through.
    for s in &mut held {
        let (got, closed) = read_until_closed(s, Duration::from_secs(7)).await;
        assert!(
            closed.is_some() && got.is_empty(),
            "cut without an answer: {got}"
        );
    }
    let (status, _, resp) = post(&broker.url, "/v1/exchange", &gh, &body).await;
    assert_eq!(status, 200, "{resp}");
}

/// A loopback "issuer" that accepts connections and never answers: a
/// token naming it keeps its exchange in flight until jobkey's fetch
/// timeout.
async fn hanging_issuer() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            open.push(s);
        }
    });
    (url, task)
}

/// A broker that also trusts the hanging issuer, whose key fetches time
/// out after 2 s, and a token of that issuer.
async fn broker_with_a_hanging_issuer(
    stack: &Stack,
    name: &str,
    edit: impl FnOnce(&mut jobkey::Config),
) -> (Broker, String, tokio::task::JoinHandle<()>) {
    let (slow_url, task) = hanging_issuer().await;
    let broker = Broker::start_with_tables(
        stack,
        name,
        &format!("[issuers.slow]\nissuer = \"{slow_url}\"\n"),
        |cfg| {
            cfg.fetch.timeout = Duration::from_secs(2);
            cfg.fetch.min_refetch_interval = Duration::from_millis(500);
            edit(cfg);
        },
    )
    .await;
    // The start-up fetch failed; wait out the refetch interval so the
    // next token of the issuer fetches (and waits) again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let claims = stack.claims_for(&slow_url, "jobkey");
    let token = stack.github.signing_key().mint(&Value::Object(claims));
    (broker, token, task)
}

/// The two exchanges of [`take_both_places`] end: their issuer never
/// answered.
async fn places_come_free(slow: Vec<tokio::task::JoinHandle<(u16, Option<String>, Value)>>) {
    for s in slow {
        let (status, _, resp) = s.await.unwrap();
        assert_eq!(
            (status, resp["error"].as_str()),
            (503, Some("issuer_unavailable")),
            "{resp}"
        );
    }
}

/// Two exchanges with the hanging issuer's token, started and given time
/// to take both places of a `max_in_flight = 2` broker.
async fn take_both_places(
    url: &str,
    slow_token: &str,
    body: &str,
) -> Vec<tokio::task::JoinHandle<(u16, Option<String>, Value)>> {
    let mut slow = Vec::new();
    for _ in 0..2 {
        let (url, token, body) = (url.to_owned(), slow_token.to_owned(), body.to_owned());
        slow.push(tokio::spawn(async move {
            post(&url, "/v1/exchange", &token, &body).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    slow
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_over_the_in_flight_cap_get_503_with_retry_after() {
    let stack = Stack::start().await;
    let (broker, slow_token, _issuer) = broker_with_a_hanging_issuer(&stack, "in-flight", |cfg| {
        cfg.server.max_in_flight = 2;
        cfg.server.queue_timeout = Duration::from_millis(200);
    })
    .await;
    let body = json!({"environment": "production"}).to_string();
    let slow = take_both_places(&broker.url, &slow_token, &body).await;
    // Both places are taken: a valid exchange waits queue_timeout, then is shed.
    let gh = stack.github.mint(Shape::Github, "jobkey", &Map::new());
    let started = Instant::now();
    let (status, retry, resp) = post(&broker.url, "/v1/exchange", &gh, &body).await;
    assert_eq!(
        (status, retry.as_deref(), resp["error"].as_str()),
        (503, Some("1"), Some("server_busy")),
        "{resp}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(resp.get("credentials").is_none());
    // Revocations share the cap.
    let (status, _, resp) = post(
        &broker.url,
        "/v1/revoke",
        &gh,
        &json!({"request_id": "0123456789abcdef01234567"}).to_string(),
    )
    .await;
    assert_eq!((status, resp["error"].as_str()), (503, Some("server_busy")));
    places_come_free(slow).await;
    // Places free again: the valid exchange goes through.
    let (status, _, resp) = post(&broker.url, "/v1/exchange", &gh, &body).await;
    assert_eq!(status, 200, "{resp}");
}

/// A burst over `max_in_flight` waits its turn (up to `queue_timeout`)
/// instead of being shed: the request queued behind two hanging ones is
/// served once they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_over_the_in_flight_cap_waits_for_a_place() {
    let stack = Stack::start().await;
    let (broker, slow_token, _issuer) = broker_with_a_hanging_issuer(&stack, "queued", |cfg| {
        cfg.server.max_in_flight = 2;
        cfg.server.queue_timeout = Duration::from_secs(20);
    })
    .await;
    let body = json!({"environment": "production"}).to_string();
    let slow = take_both_places(&broker.url, &slow_token, &body).await;
    let gh = stack.github.mint(Shape::Github, "jobkey", &Map::new());
    let queued = {
        let (url, body) = (broker.url.clone(), body.clone());
        tokio::spawn(async move { post(&url, "/v1/exchange", &gh, &body).await })
    };
    places_come_free(slow).await;
    let (status, _, resp) = queued.await.unwrap();
    assert_eq!(status, 200, "served after waiting for a place: {resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_request_in_progress() {
    let stack = Stack::start().await;
    let (mut broker, slow_token, _issuer) =
        broker_with_a_hanging_issuer(&stack, "shutdown", |_| {}).await;
    let body = json!({"environment": "production"}).to_string();
    let (url, token) = (broker.url.clone(), slow_token.clone());
    let slow = tokio::spawn(async move {
        let answer = post(&url, "/v1/exchange", &token, &body).await;
        (answer, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let done = broker.begin_stop();
    let ((status, _, resp), answered) = slow.await.unwrap();
    assert_eq!(
        (status, resp["error"].as_str()),
        (503, Some("issuer_unavailable")),
        "the request in progress is answered: {resp}"
    );
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("serve returns once the request is answered")
        .unwrap();
    let returned = Instant::now();
    assert!(answered <= returned, "answered before serve returned");
    // Its refusal is in the audit log, on disk, then the signed checkpoint
    // written at shutdown.
    let r = jobkey::verify_file(&broker.audit_path).unwrap();
    assert_eq!(r.lines, 2);
    assert!(
        TcpStream::connect(broker.addr).await.is_err(),
        "no new connection after shutdown"
    );
}
