//! The job's HTTP listener: `/metrics` (the registry as OpenMetrics text),
//! `/health` (the process is alive), `/ready` (recovered, caught up with
//! the input, sink accepting writes), and the live page: `/` (HTML that
//! polls `/api/status` every second and draws it), its assets under
//! `/assets/`, all compiled into the binary (no CDN, works offline).
//!
//! It is axum on a one-thread tokio runtime of its own (thread
//! `metrics-http`): the job's threads never wait for a scraper, and a slow
//! or stuck client costs the listener a task, not the job.
//!
//! # Layout
//!
//! * [`router`] is the one place routes are declared.
//! * Handlers take [`Shared`] through axum's `State`: the job's live status
//!   behind an `Arc`, cloned per request, never copied.
//! * [`serve`] binds before it returns, so the caller learns at once whether
//!   the address is free, then serves until the [`Listener`] is dropped.
//! * [`start`] is what the job calls with its configured address: a port
//!   already taken is a WARN line and the job goes on without the listener
//!   (metrics are for operators; no record depends on them).
//!
//! # Adding a route
//!
//! Write a handler that takes `State<Shared>` (add to `Shared` what it needs
//! to read, as an `Arc`) and add one `.route(..)` line to [`router`]. Keep
//! handlers read-only: the listener may be reachable by anyone who can reach
//! the address.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::Metrics;

/// The content type of `/metrics`: what `prometheus-client` encodes.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain";

/// What every handler may read: the job's live status.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
}

/// Every route of the listener.
pub fn router(shared: Shared) -> Router {
    let mut router = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/", get(|| async { asset(&PAGE) }))
        .route("/api/status", get(status));
    for a in &ASSETS {
        router = router.route(a.path, get(move || async move { asset(a) }));
    }
    router.fallback(not_found).with_state(shared)
}

/// A file of the live page, compiled in.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

static PAGE: Asset = Asset {
    path: "/",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("page/index.html"),
};

/// The page's script and style, and uPlot (MIT, vendored in
/// `page/vendor/uplot/`, see its README) for the charts.
static ASSETS: [Asset; 4] = [
    Asset {
        path: "/assets/page.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/page.js"),
    },
    Asset {
        path: "/assets/page.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("page/page.css"),
    },
    Asset {
        path: "/assets/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/vendor/uplot/uPlot.iife.min.js"),
    },
    Asset {
        path: "/assets/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("page/vendor/uplot/uPlot.min.css"),
    },
];

/// The page loads nothing from elsewhere, and nothing may frame it.
const CSP: &str = "default-src 'self'; frame-ancestors 'none'";

fn asset(a: &Asset) -> Response {
    (
        [
            (CONTENT_TYPE, a.content_type),
            (CONTENT_SECURITY_POLICY, CSP),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The binary is the version: a new one may serve other files
            // under the same names.
            (CACHE_CONTROL, "no-cache"),
        ],
        a.body,
    )
        .into_response()
}

async fn status(State(shared): State<Shared>) -> Response {
    let doc = super::status::status(&shared.metrics);
    match serde_json::to_vec(&doc) {
        Ok(body) => (
            [
                (CONTENT_TYPE, "application/json"),
                (CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(CONTENT_TYPE, TEXT)],
            format!("cannot encode the status: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(shared): State<Shared>) -> Response {
    ([(CONTENT_TYPE, OPENMETRICS)], shared.metrics.render()).into_response()
}

async fn health() -> Response {
    ([(CONTENT_TYPE, TEXT)], "ok\n").into_response()
}

async fn ready(State(shared): State<Shared>) -> Response {
    if shared.metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, [(CONTENT_TYPE, TEXT)], "ready\n").into_response()
    } else {
        let why = shared.metrics.not_ready.load(Ordering::Relaxed);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(CONTENT_TYPE, TEXT)],
            crate::telemetry::NotReady::explain(why),
        )
            .into_response()
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(CONTENT_TYPE, TEXT)],
        "try / (the live page), /api/status, /metrics, /health or /ready\n",
    )
        .into_response()
}

/// A running listener; dropping it stops it (connections in flight finish).
pub struct Listener {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Listener {
    /// The bound address (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `addr` and serves [`router`] from the `metrics-http` thread.
pub fn serve(addr: &str, shared: Shared) -> std::io::Result<Listener> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        warn!(error = %e, "the metrics listener could not start; the job goes on without it");
                        return;
                    }
                };
                let served = axum::serve(listener, router(shared))
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
                if let Err(e) = served {
                    warn!(error = %e, "the metrics listener stopped; the job goes on without it");
                }
            });
        })?;
    info!(address = %local, page = %format!("http://{local}/"), "serving /metrics, /health and /ready, and the live page");
    Ok(Listener {
        addr: local,
        stop: Some(stop),
    })
}

/// Starts the listener on `addr` (`None`: turned off). A failure to bind,
/// a port already taken above all, is a WARN and no listener: the job runs
/// on without it.
pub fn start(addr: Option<&str>, metrics: Arc<Metrics>) -> Option<Listener> {
    let Some(addr) = addr else {
        info!("metrics listener off (metrics_addr: off)");
        return None;
    };
    match serve(addr, Shared { metrics }) {
        Ok(listener) => Some(listener),
        Err(e) => {
            let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                "the port is already taken, by another job or exporter"
            } else {
                "the address cannot be bound"
            };
            warn!(
                metrics_addr = addr,
                error = %e,
                "cannot serve /metrics, /health, /ready and the live page: {why}; the job goes on without them. \
                 Choose another address with --metrics-addr or metrics_addr (127.0.0.1:0 takes any free port), \
                 or turn the listener off with `off`"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.lines().next().unwrap().to_string();
        let content_type = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        (status, content_type, body.to_string())
    }

    #[test]
    fn routes_answer_with_their_status_and_content_type() {
        let metrics = Arc::new(Metrics::new());
        metrics.events_read.inc_by(7);
        let listener = start(Some("127.0.0.1:0"), metrics.clone()).unwrap();
        let addr = listener.local_addr();

        let (status, content_type, body) = get(addr, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(content_type, OPENMETRICS);
        assert!(body.contains("streamforge_events_read_total 7"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");

        assert_eq!(
            get(addr, "/health"),
            ("HTTP/1.1 200 OK".into(), TEXT.into(), "ok\n".into())
        );
        assert_eq!(
            get(addr, "/ready"),
            (
                "HTTP/1.1 503 Service Unavailable".into(),
                TEXT.into(),
                "not ready: starting (recovering state, or reading the input for the first time)\n"
                    .into()
            )
        );
        metrics.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(addr, "/ready").0, "HTTP/1.1 200 OK");
        let (status, _, body) = get(addr, "/nope");
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        assert!(body.contains("/metrics"), "{body}");
    }

    #[test]
    fn the_page_its_assets_and_its_status_are_served_from_the_binary() {
        let metrics = Arc::new(Metrics::new());
        metrics.live.acked(&[crate::window::WindowRow {
            users: None,
            window_start: 60,
            window_end: 120,
            order_cnt: 2,
            gmv_cents: 1005,
            user_cnt: 1,
            version: 1,
            updated_at: 0,
            group: None,
        }]);
        let listener = start(Some("127.0.0.1:0"), metrics).unwrap();
        let addr = listener.local_addr();

        let (status, content_type, body) = get(addr, "/");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(content_type, "text/html; charset=utf-8");
        // Everything the page loads is served here, by relative paths.
        for path in [
            "assets/page.js",
            "assets/page.css",
            "assets/uPlot.iife.min.js",
        ] {
            assert!(
                body.contains(&format!("\"{path}\"")),
                "{path} not in the page"
            );
            let (status, _, asset) = get(addr, &format!("/{path}"));
            assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
            assert!(!asset.is_empty());
        }
        assert!(!body.contains("http://") && !body.contains("https://"));
        assert!(body.contains("assets/uPlot.min.css"));
        let (_, content_type, uplot) = get(addr, "/assets/uPlot.iife.min.js");
        assert_eq!(content_type, "text/javascript; charset=utf-8");
        assert!(uplot.starts_with("/*! https://github.com/leeoniya/uPlot (v1.6.32) */"));

        let (status, content_type, body) = get(addr, "/api/status");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(content_type, "application/json");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["windows"][0]["gmv_total"], "10.05");
        assert_eq!(doc["groupings"], serde_json::json!([]));
    }

    #[test]
    fn the_listener_is_read_only() {
        let metrics = Arc::new(Metrics::new());
        let listener = start(Some("127.0.0.1:0"), metrics).unwrap();
        let addr = listener.local_addr();
        let paths = ["/", "/api/status", "/metrics", "/health", "/ready"]
            .into_iter()
            .chain(ASSETS.iter().map(|a| a.path));
        for path in paths {
            for method in ["POST", "PUT", "PATCH", "DELETE"] {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                write!(
                    s,
                    "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                )
                .unwrap();
                let mut text = String::new();
                s.read_to_string(&mut text).unwrap();
                assert!(
                    text.starts_with("HTTP/1.1 405 Method Not Allowed"),
                    "{method} {path}: {text}"
                );
            }
        }
    }

    #[test]
    fn a_port_already_taken_is_no_listener_and_no_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        assert!(start(Some(&addr), Arc::new(Metrics::new())).is_none());
        assert!(start(None, Arc::new(Metrics::new())).is_none());
    }

    #[test]
    fn dropping_the_listener_frees_its_port() {
        let listener = start(Some("127.0.0.1:0"), Arc::new(Metrics::new())).unwrap();
        let addr = listener.local_addr();
        drop(listener);
        // The runtime thread closes the socket once it sees the signal.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpListener::bind(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{addr} still bound 10 s after the listener was dropped"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
