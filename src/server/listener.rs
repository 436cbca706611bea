//! The HTTP listener: hyper's HTTP/1 connections with the timeouts and
//! limits a broker reachable by anyone needs (`axum::serve` has no timer).
//!
//! - **Connections**: at most `max_connections` are served at once. One
//!   more is answered `503 server_busy` with `Retry-After` as soon as its
//!   request line and headers are in (within a second or two; its body is
//!   never looked at), and closed. At most [`TURN_AWAY_AT_ONCE`] such
//!   answers are in progress; beyond that a connection is closed
//!   unanswered.
//! - **Idle**: a connection with no request in progress is closed after
//!   `idle_timeout` without a byte from the client.
//! - **Headers**: once the first byte of a request arrives (for a
//!   connection's first request: once it is accepted), its request line
//!   and headers must be complete within `header_read_timeout`, or the
//!   connection is closed. Headers are capped in size too.
//! - **Whole request**: the body must be complete within
//!   `request_timeout` of the request's first byte, or the answer is
//!   `408 request_timeout` and the connection is closed. The body is read
//!   here, before any handler runs, up to `max_body_bytes` (`413
//!   body_too_large`). So a handler never waits on a client, and a handler
//!   that started is never cancelled: it ends, writes its audit line, and
//!   answers.
//! - **TLS** (`[tls]`, `src/server/tls.rs`): the handshake must complete
//!   within `header_read_timeout` of the connection's opening; a failed
//!   one closes the connection. An over-capacity connection is answered
//!   `503` after its handshake.
//! - **Shutdown**: no new connection is accepted; connections close once
//!   their request in progress is answered, and `serve` returns when the
//!   last one has.
//!
//! The cap on exchanges and revocations in flight is the handlers'
//! (`AppState::in_flight`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::ApiError;

/// The listener's timeouts and limits (`[server]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// From a request's first byte (a new connection's: from its
    /// opening) to the end of its headers.
    pub header_read_timeout: Duration,
    /// From a request's first byte to the end of its body.
    pub request_timeout: Duration,
    /// How long a connection may stay open with no request in progress.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Exchanges and revocations handled at once.
    pub max_in_flight: usize,
    /// How long a request over `max_in_flight` waits for a place before
    /// it is answered `503 server_busy` (zero: at once). While it waits
    /// it holds its connection and its body (bounded by `max_connections`
    /// and the body cap), nothing else: a burst of jobs is served in turn
    /// instead of each job holding an exchange's buffers at once.
    pub queue_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            // Longer than common load balancers' idle timeout (60 s), so
            // that the balancer, not jobkey, closes an idle connection and
            // never sends a request on one jobkey just closed.
            idle_timeout: Duration::from_secs(75),
            max_connections: 512,
            max_in_flight: 64,
            queue_timeout: Duration::from_secs(10),
        }
    }
}

/// Over-capacity connections answered at once; more are closed unanswered.
pub(crate) const TURN_AWAY_AT_ONCE: usize = 64;

/// How long a turned-away connection may take to receive its answer.
const TURN_AWAY_TIME: Duration = Duration::from_secs(2);

/// Everything the listener needs besides the router.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub settings: ServerSettings,
    pub max_body_bytes: usize,
    /// The request line and headers, in bytes.
    pub max_header_bytes: usize,
}

/// The connection's peer address, a request extension (the audit's
/// `source`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub SocketAddr);

/// Serves `app` on `listener` until `shutdown` completes, then waits for
/// the open connections to finish their request in progress.
pub(super) async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = limits.settings.max_connections;
    let open = Arc::new(Semaphore::new(max));
    let turning_away = Arc::new(Semaphore::new(TURN_AWAY_AT_ONCE));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors, or a connection reset
                    // before it was accepted: wait a little, go on.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                let (app, stopping, tls) = (app.clone(), stopping.clone(), tls.clone());
                tokio::spawn(connection(stream, peer, app, limits, tls, stopping, permit));
            }
            Err(_) => match turning_away.clone().try_acquire_owned() {
                Ok(permit) => {
                    crate::metrics::refused(crate::metrics::Refusal::Busy);
                    tracing::warn!(%peer, max_connections = max, "too many connections; answering 503");
                    tokio::spawn(turn_away(stream, tls.clone(), permit));
                }
                Err(_) => {
                    crate::metrics::refused(crate::metrics::Refusal::Busy);
                    drop(stream);
                }
            },
        }
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it is closed.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = open.acquire_many(all).await;
    Ok(())
}

/// Answers `503 server_busy` once the request's headers are in (a client
/// reads no answer before it has sent its request), then closes. What
/// follows is read and thrown away after the answer, so the close does
/// not reset the connection before the client has read it. A client that
/// does not send its headers in time is closed unanswered.
async fn turn_away(stream: TcpStream, tls: Option<TlsAcceptor>, _permit: OwnedSemaphorePermit) {
    let _ = tokio::time::timeout(TURN_AWAY_TIME, async {
        match tls {
            None => answer_busy(stream).await,
            Some(tls) => answer_busy(tls.accept(stream).await?).await,
        }
    })
    .await;
}

async fn answer_busy<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> std::io::Result<()> {
    let answer = ApiError::Busy.into_http1_bytes(&super::request::request_id());
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return Ok(());
        }
        match stream.read(&mut chunk).await? {
            0 => return Ok(()),
            n => head.extend_from_slice(&chunk[..n]),
        }
    }
    stream.write_all(&answer).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 4096];
    let mut total = 0usize;
    while total < 256 * 1024 {
        match stream.read(&mut sink).await? {
            0 => break,
            n => total += n,
        }
    }
    Ok(())
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No request in progress since then.
    Idle(Instant),
    /// A request's first byte arrived then; its headers are not complete.
    Receiving(Instant),
    /// A request is being read or handled.
    Handling,
}

/// A connection's phase, shared by its reader and its requests; the
/// watchdog is woken when it changes.
struct Clock {
    phase: Mutex<Phase>,
    changed: tokio::sync::Notify,
}

impl Clock {
    /// A new connection owes its first request's headers from now.
    fn new() -> Clock {
        Clock {
            phase: Mutex::new(Phase::Receiving(Instant::now())),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Phase) -> T) -> T {
        match self.phase.lock() {
            Ok(mut p) => f(&mut p),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Bytes arrived: when idle, a request has started.
    fn bytes_arrived(&self) {
        let started = self.with(|p| match p {
            Phase::Idle(_) => {
                *p = Phase::Receiving(Instant::now());
                true
            }
            _ => false,
        });
        if started {
            self.changed.notify_one();
        }
    }

    /// The headers are complete: when the request started.
    fn request_started(&self) -> Instant {
        self.with(|p| {
            let started = match *p {
                Phase::Receiving(t) => t,
                // Bytes read together with the previous request.
                Phase::Idle(_) | Phase::Handling => Instant::now(),
            };
            *p = Phase::Handling;
            started
        })
    }

    fn request_done(&self) {
        self.with(|p| *p = Phase::Idle(Instant::now()));
        self.changed.notify_one();
    }

    fn phase(&self) -> Phase {
        self.with(|p| *p)
    }
}

/// The TCP stream, telling the clock when bytes arrive.
struct Watched {
    inner: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// One connection: with TLS, its handshake first, within the header
/// timeout; then [`serve_connection`].
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    stopping: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    let clock = Arc::new(Clock::new());
    let watched = Watched {
        inner: stream,
        clock: clock.clone(),
    };
    let Some(tls) = tls else {
        let io = TokioIo::new(watched);
        return serve_connection(io, clock, peer, app, limits, stopping, permit).await;
    };
    let timeout = limits.settings.header_read_timeout;
    match tokio::time::timeout(timeout, tls.accept(watched)).await {
        Ok(Ok(stream)) => {
            let io = TokioIo::new(stream);
            serve_connection(io, clock, peer, app, limits, stopping, permit).await;
        }
        Ok(Err(error)) => {
            // rustls' errors name the protocol failure, never key material.
            tracing::info!(%peer, %error, "TLS handshake failed");
        }
        Err(_) => {
            tracing::info!(%peer, ?timeout, "the TLS handshake did not complete in time; closing the connection");
        }
    }
}

/// Serves one connection (plain or TLS): hyper serves it; a watchdog
/// closes it when idle too long or when a request's headers take too
/// long, and asks it to finish at shutdown.
async fn serve_connection<I>(
    io: TokioIo<I>,
    clock: Arc<Clock>,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Held by the connection and by each of its requests' handlers.
    let permit = Arc::new(permit);
    let service = {
        let clock = clock.clone();
        hyper::service::service_fn(move |req| {
            let held = (clock.clone(), permit.clone());
            request(req, app.clone(), held, peer, limits)
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_header_size(limits.max_header_bytes)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let s = limits.settings;
    let mut finishing = *stopping.borrow();
    if finishing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let deadline = match clock.phase() {
            Phase::Idle(since) => Some(since + s.idle_timeout),
            Phase::Receiving(since) => Some(since + s.header_read_timeout),
            Phase::Handling => None,
        };
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(error) = done {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = clock.changed.notified() => {}
            changed = stopping.changed(), if !finishing => {
                if changed.is_err() || *stopping.borrow() {
                    finishing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = sleep => {
                let now = Instant::now();
                match clock.phase() {
                    Phase::Idle(since) if now >= since + s.idle_timeout => {
                        tracing::debug!(%peer, "closing an idle connection");
                        return;
                    }
                    Phase::Receiving(since) if now >= since + s.header_read_timeout => {
                        tracing::info!(%peer, timeout = ?s.header_read_timeout, "a request's headers did not arrive in time; closing the connection");
                        return;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// One request: its body read within the deadline and the cap, then the
/// router, in a task of its own: a handler runs to its end (its audit
/// line, its revocations) even when the client goes away. The task holds
/// the connection's permit, so shutdown waits for it.
async fn request(
    req: Request<Incoming>,
    app: Router,
    (clock, permit): (Arc<Clock>, Arc<OwnedSemaphorePermit>),
    peer: SocketAddr,
    limits: Limits,
) -> Result<Response<Body>, Infallible> {
    let started = clock.request_started();
    let _counted = crate::metrics::in_flight();
    let deadline = started + limits.settings.request_timeout;
    let (mut parts, body) = req.into_parts();
    let read = tokio::time::timeout_at(
        deadline,
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await;
    let refused = |e: ApiError| {
        let mut resp = e.into_response_with(&super::request::request_id());
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        super::secure_headers(resp)
    };
    let resp = match read {
        Err(_) => {
            tracing::info!(%peer, timeout = ?limits.settings.request_timeout, "a request's body did not arrive in time");
            refused(ApiError::RequestTimeout)
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            refused(ApiError::BodyTooLarge {
                message: format!(
                    "the request body is larger than the limit of {} bytes",
                    limits.max_body_bytes
                ),
            })
        }
        Ok(Err(_)) => refused(ApiError::BadRequest {
            message: "could not read the request body".into(),
        }),
        Ok(Ok(collected)) => {
            parts.extensions.insert(Peer(peer));
            let req = Request::from_parts(parts, Body::from(collected.to_bytes()));
            let handled = tokio::spawn(async move {
                let _permit = permit;
                match app.oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            });
            match handled.await {
                Ok(resp) => resp,
                Err(error) => {
                    tracing::error!(%peer, %error, "a request handler failed");
                    refused(ApiError::Internal)
                }
            }
        }
    };
    clock.request_done();
    Ok(resp)
}
