//! A fault proxy for ClickHouse's HTTP interface, on loopback, for tests.
//!
//! The job's ClickHouse `url` points at the proxy. In [`Mode::Forward`] the
//! proxy pipes every connection to the real server untouched; a test then
//! switches it, mid-run, to answer HTTP 500s, to hold each connection longer
//! than the sink's timeout before forwarding it (a slow server: the request
//! still reaches ClickHouse, late, as it would), or to refuse connections.
//!
//! A switch takes effect at the next request: it waits until each piped
//! connection is between requests (the server answered last, and nothing
//! moved for a moment), then closes it, so that the client's pooled
//! keep-alive connections cannot bypass the new mode and no request in
//! flight is cut. The counters say what the proxy did, so a test can check
//! that its fault was actually met.
//!
//! Plain `std::net` with a thread per connection: a job makes a handful of
//! requests a second.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the proxy does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pipe it to the server.
    Forward,
    /// Read one request and answer `500 Internal Server Error` with a
    /// ClickHouse-style body of a server-side error that passes.
    Fail500,
    /// Hold it this long, then pipe it to the server anyway.
    Slow(Duration),
    /// Close the listening socket: connections are refused.
    Refuse,
}

/// What the proxy did so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub failed_500: u64,
    pub delayed: u64,
    /// Accept-loop passes without a listener, in [`Mode::Refuse`].
    pub refusing_passes: u64,
}

/// The body of an injected 500: the shape of a ClickHouse error that may pass.
pub const BODY_500: &str = concat!(
    "Code: 241. DB::Exception: Memory limit (total) exceeded: ",
    "injected by the test's fault proxy. (MEMORY_LIMIT_EXCEEDED)\n"
);

/// One piped connection: both sockets, and which way bytes moved last.
struct Link {
    number: u64,
    client: TcpStream,
    server: TcpStream,
    /// Transfer sequence numbers (0 = never), to order the two directions.
    last_up: AtomicU64,
    last_down: AtomicU64,
    /// When bytes last moved either way (or the link opened), ms since the
    /// proxy started.
    last_moved_ms: AtomicU64,
}

impl Link {
    /// Between two requests: the server spoke last (or the client never
    /// spoke) and nothing moved for a moment.
    fn idle(&self, now_ms: u64) -> bool {
        let up = self.last_up.load(Ordering::SeqCst);
        let down = self.last_down.load(Ordering::SeqCst);
        let quiet = now_ms.saturating_sub(self.last_moved_ms.load(Ordering::SeqCst)) >= 20;
        quiet && (down > up || up == 0)
    }

    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

struct Shared {
    mode: Mutex<Mode>,
    started: Instant,
    /// Every piped connection, to close them on a mode switch.
    live: Mutex<Vec<Arc<Link>>>,
    stop: AtomicBool,
    /// Connections piped so far (also their numbers in `live`).
    forwarded: AtomicU64,
    /// Numbers the transfers of every link, in order.
    transfers: AtomicU64,
    failed_500: AtomicU64,
    delayed: AtomicU64,
    refusing_passes: AtomicU64,
}

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port, forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fault proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Forward),
            started: Instant::now(),
            live: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
            transfers: AtomicU64::new(1),
            failed_500: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            refusing_passes: AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || accept_loop(listener, addr, upstream, s))
            .unwrap();
        FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// The URL to give the job instead of ClickHouse's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches mode; returns once every piped connection has finished its
    /// request in flight and is closed (at most 10 s: then it is cut).
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now_ms = self.shared.now_ms();
            let mut live = self.shared.live.lock().unwrap();
            live.retain(|link| {
                let done = link.idle(now_ms) || Instant::now() >= deadline;
                if done {
                    link.close();
                }
                !done
            });
            if live.is_empty() {
                return;
            }
            drop(live);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn counts(&self) -> Counts {
        let s = &self.shared;
        Counts {
            failed_500: s.failed_500.load(Ordering::Relaxed),
            delayed: s.delayed.load(Ordering::Relaxed),
            refusing_passes: s.refusing_passes.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for link in self.shared.live.lock().unwrap().drain(..) {
            link.close();
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, addr: SocketAddr, upstream: SocketAddr, shared: Arc<Shared>) {
    listener.set_nonblocking(true).unwrap();
    let mut listener = Some(listener);
    while !shared.stop.load(Ordering::Relaxed) {
        let mode = *shared.mode.lock().unwrap();
        if mode == Mode::Refuse {
            // No listening socket: the kernel refuses connections.
            listener = None;
            shared.refusing_passes.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        if listener.is_none() {
            // std sets SO_REUSEADDR on Unix, so the port can be taken again.
            match TcpListener::bind(addr) {
                Ok(l) => {
                    l.set_nonblocking(true).unwrap();
                    listener = Some(l);
                }
                Err(e) => panic!("the fault proxy cannot listen on {addr} again: {e}"),
            }
        }
        match listener.as_ref().unwrap().accept() {
            Ok((client, _)) => {
                client.set_nonblocking(false).unwrap();
                let s = shared.clone();
                std::thread::spawn(move || handle(client, upstream, mode, s));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn handle(client: TcpStream, upstream: SocketAddr, mode: Mode, shared: Arc<Shared>) {
    match mode {
        Mode::Forward => forward(client, upstream, &shared),
        Mode::Fail500 => {
            let _ = answer_500(client);
            shared.failed_500.fetch_add(1, Ordering::Relaxed);
        }
        Mode::Slow(delay) => {
            shared.delayed.fetch_add(1, Ordering::Relaxed);
            let until = Instant::now() + delay;
            while Instant::now() < until && !shared.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            // The request waited in the socket: it reaches the server late,
            // after the client gave up, as with a really slow server.
            forward(client, upstream, &shared);
        }
        Mode::Refuse => {}
    }
}

fn forward(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(client_r), Ok(server_r), Ok(client_w), Ok(server_w)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    let link = Arc::new(Link {
        number: shared.forwarded.fetch_add(1, Ordering::Relaxed),
        client,
        server,
        last_up: AtomicU64::new(0),
        last_down: AtomicU64::new(0),
        last_moved_ms: AtomicU64::new(shared.now_ms()),
    });
    shared.live.lock().unwrap().push(link.clone());
    let (l, s) = (link.clone(), shared.clone());
    let up = std::thread::spawn(move || pipe(client_r, server_w, &l, &l.last_up, &s));
    pipe(server_r, client_w, &link, &link.last_down, shared);
    let _ = up.join();
    shared
        .live
        .lock()
        .unwrap()
        .retain(|other| other.number != link.number);
}

/// Copies until end of stream, then passes the end on; notes each transfer
/// in `direction` (the link's `last_up` or `last_down`).
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    link: &Link,
    direction: &AtomicU64,
    shared: &Shared,
) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                direction.store(
                    shared.transfers.fetch_add(1, Ordering::SeqCst),
                    Ordering::SeqCst,
                );
                link.last_moved_ms.store(shared.now_ms(), Ordering::SeqCst);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                link.last_moved_ms.store(shared.now_ms(), Ordering::SeqCst);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Reads one request (head and `Content-Length` body) and answers 500.
fn answer_500(mut client: TcpStream) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = client.read(&mut buf)?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let answer = format!(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=UTF-8\r\n\
         X-ClickHouse-Exception-Code: 241\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY_500}",
        BODY_500.len()
    );
    client.write_all(answer.as_bytes())?;
    client.flush()?;
    let _ = client.shutdown(Shutdown::Write);
    // Let the client read the answer before the socket goes away.
    let _ = client.read(&mut buf);
    Ok(())
}
