//! The HTTP listener (setting `http_listen`, off by default): read-only.
//!
//! - `/metrics`: the Prometheus text format ([`super::metrics`]);
//! - `/`: a status page for people, which loads `/status.json` and
//!   `/locks.json` and then follows `/events` (server-sent events) to
//!   update itself without reloading;
//! - `/status.json`, `/locks.json`: the same facts as `clinit status
//!   --json` and `clinit locks --json`;
//! - `/events`: the event stream as server-sent events (`data:` one JSON
//!   event per message, its sequence number as the `id:`).
//!
//! On a loopback address the listener speaks plain HTTP; on any other it
//! speaks HTTPS with the remote-administration files (`tls_ca`,
//! `tls_cert`, `tls_key`) and asks for a client certificate, as the
//! remote-administration listener does: the page and the figures are no
//! one else's business. hyper serves the HTTP/1.1 (it is in the build
//! already, under etcd-client's gRPC).

use super::conn::Shared;
use super::event_loop::Msg;
use super::policy::{LocalUser, Peer, Right};
use crate::proto::Reply;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

type Body = BoxBody<Bytes, Infallible>;

fn full(content_type: &str, status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(body.into()).boxed())
        .expect("a valid response")
}

/// The bound listener and how it speaks.
pub struct HttpListener {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl HttpListener {
    /// Bind `addr`; TLS unless it is loopback (`files` then must serve).
    pub fn bind(
        addr: std::net::SocketAddr,
        files: &crate::tls::Files,
    ) -> Result<HttpListener, String> {
        let tls = if addr.ip().is_loopback() {
            None
        } else {
            let cfg = crate::tls::server_config(files).map_err(|e| e.to_string())?;
            Some(tokio_rustls::TlsAcceptor::from(cfg))
        };
        let std = std::net::TcpListener::bind(addr).map_err(|e| format!("{addr}: {e}"))?;
        std.set_nonblocking(true)
            .map_err(|e| format!("{addr}: {e}"))?;
        let listener = TcpListener::from_std(std).map_err(|e| format!("{addr}: {e}"))?;
        Ok(HttpListener { listener, tls })
    }

    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Serve until the daemon closes; one task per connection.
pub(crate) async fn serve(l: HttpListener, shared: Arc<Shared>) {
    shared
        .metrics
        .enabled
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(lag_probe(shared.clone()));
    let mut closing = shared.closing.subscribe();
    loop {
        let (stream, _) = tokio::select! {
            r = l.listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("HTTP listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = closed(&mut closing) => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = l.tls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(req, &shared).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                None => {
                    let _ = http
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                }
                Some(acceptor) => {
                    let Ok(Ok(s)) =
                        tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let _ = http
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                }
            }
        });
    }
}

/// Until the daemon closes.
async fn closed(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await.map(|_| ());
}

/// How late a timer of the runtime wakes: the event loop's lag, probed
/// every second while the HTTP listener serves.
async fn lag_probe(shared: Arc<Shared>) {
    let mut closing = shared.closing.subscribe();
    loop {
        let due = Instant::now() + Duration::from_secs(1);
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = closed(&mut closing) => return,
        }
        shared
            .metrics
            .lag(Instant::now().saturating_duration_since(due));
    }
}

/// A job for the event loop, as a reader with the daemon's own identity.
async fn on_loop(
    shared: &Shared,
    job: super::route::LoopJob,
    handler: &'static str,
) -> Option<Reply> {
    let (tx, rx) = oneshot::channel();
    let msg = Msg::Job {
        job,
        right: Right::Read,
        describe: None,
        peer: Peer::Local(LocalUser {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            pid: None,
        }),
        who: String::new(),
        handler,
        tag: "http".into(),
        reply: tx,
    };
    shared.tx.send(msg).await.ok()?;
    rx.await.ok()
}

async fn route(req: Request<hyper::body::Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return full(
            "text/plain",
            StatusCode::METHOD_NOT_ALLOWED,
            "read-only: GET only\n",
        );
    }
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let r = match path.as_str() {
        "/metrics" => metrics(shared).await,
        "/" | "/index.html" => full("text/html; charset=utf-8", StatusCode::OK, PAGE),
        "/status.json" => status_json(shared).await,
        "/locks.json" => {
            let all = shared.locks().status(None);
            full(
                "application/json",
                StatusCode::OK,
                serde_json::to_vec(&all).unwrap_or_default(),
            )
        }
        "/events" => events(shared, &req),
        _ => full(
            "text/plain",
            StatusCode::NOT_FOUND,
            format!("no page {path}: /, /metrics, /status.json, /locks.json, /events\n"),
        ),
    };
    shared.metrics.request("http", started.elapsed());
    r
}

async fn metrics(shared: &Arc<Shared>) -> Response<Body> {
    let (locks, handovers) = {
        let l = shared.locks();
        (l.status(None), l.handovers())
    };
    let records = record_usage(shared).await;
    let started = shared.events.started();
    let text = on_loop(
        shared,
        Box::new(move |d, _| {
            let uptime = (crate::events::wall_now() - started).max(0.0);
            Some(Reply::Message {
                text: super::metrics::render(
                    &d.sup,
                    &locks,
                    &handovers,
                    &records,
                    &d.shared.metrics,
                    super::metrics::ProcessStats::read(),
                    uptime,
                ),
            })
        }),
        "http::metrics",
    )
    .await;
    match text {
        Some(Reply::Message { text }) => full(
            "text/plain; version=0.0.4; charset=utf-8",
            StatusCode::OK,
            text,
        ),
        _ => full(
            "text/plain",
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is exiting\n",
        ),
    }
}

/// Records and bytes per container, from the record store.
async fn record_usage(shared: &Arc<Shared>) -> Vec<(String, u64, u64)> {
    let pending = shared.records().call(crate::store::RecordCall::Usage);
    let outcome = match pending {
        crate::store::Pending::Ready(r) => r,
        crate::store::Pending::Later(rx) => match rx.await {
            Ok(r) => r,
            Err(_) => return Vec::new(),
        },
    };
    match outcome {
        Ok(crate::store::RecordOutcome::Usage(u)) => u,
        _ => Vec::new(),
    }
}

async fn status_json(shared: &Arc<Shared>) -> Response<Body> {
    let r = on_loop(
        shared,
        Box::new(|d, _| {
            let (groups, _) = super::view::status_page(
                &d.sup,
                None,
                true,
                Default::default(),
                usize::MAX,
                crate::supervisor::Now::real(),
            );
            Some(Reply::Status { groups, more: None })
        }),
        "http::status",
    )
    .await;
    match r {
        Some(Reply::Status { groups, .. }) => full(
            "application/json",
            StatusCode::OK,
            serde_json::to_vec(&groups).unwrap_or_default(),
        ),
        _ => full(
            "text/plain",
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is exiting\n",
        ),
    }
}

/// Server-sent events: the last 50 kept (or those after `Last-Event-ID`),
/// then every new one, until the client goes or the daemon closes.
fn events(shared: &Arc<Shared>, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    let since = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut wake = shared.events.subscribe();
        let mut closing = shared.closing.subscribe();
        let mut cursor = match since {
            Some(s) => s,
            None => shared.events.lock().last().saturating_sub(50),
        };
        loop {
            let mut out = String::new();
            let moved = {
                let log = shared.events.lock();
                let r = log.scan(
                    cursor,
                    500,
                    |_| true,
                    |e| {
                        out.push_str(&format!("id: {}\ndata: {}\n\n", e.seq, e.json()));
                    },
                );
                match r {
                    Ok(to) => to,
                    // Fell behind the ring: go on from the oldest kept.
                    Err(first) => first.saturating_sub(1),
                }
            };
            let behind = moved != cursor;
            cursor = moved;
            if !out.is_empty() && tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
                return;
            }
            if behind {
                continue;
            }
            tokio::select! {
                r = wake.changed() => if r.is_err() { return },
                _ = closed(&mut closing) => return,
                _ = tx.closed() => return,
                // A comment now and then: a proxy does not close an idle
                // stream, and a client that went away is noticed.
                _ = tokio::time::sleep(Duration::from_secs(15)) => {
                    if tx.send(Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n")))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-store")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("a valid response")
}

/// The status page: plain HTML and a little JavaScript, no outside files.
const PAGE: &str = include_str!("page.html");
