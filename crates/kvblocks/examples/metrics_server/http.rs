//! A minimal HTTP/1.1 server for `GET /metrics` on a `std::net::TcpListener`.
//!
//! Owns the accept thread and the exposition format negotiation; one request
//! per connection (`Connection: close`), handled on the accept thread (a
//! scrape every few seconds needs no more). It must never block a caller:
//! every read has a timeout and a size limit. Shared with
//! `tests/prometheus_scrape.rs`, which starts it in-process.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;

/// The OpenMetrics text format's content type (what a scraper asks for in `Accept`).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Largest request head read before answering 431.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A running server; dropping it stops the accept thread and waits for it.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `registry` on `listener` (bind it to 127.0.0.1) from a new thread.
    pub fn start(listener: TcpListener, registry: Arc<Registry>) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    // A failed accept or a client that misbehaves only loses its own answer.
                    if let Ok(stream) = stream {
                        let _ = answer(stream, &registry);
                    }
                }
            })?;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the chosen port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept; it sees the flag and returns.
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request from `stream` and writes the answer.
fn answer(mut stream: TcpStream, registry: &Registry) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = match read_head(&mut stream)? {
        Some(head) => head,
        None => {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
        }
    };
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let (method, target) = (
        request_line.next().unwrap_or(""),
        request_line.next().unwrap_or(""),
    );
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return respond(&mut stream, "404 Not Found", "text/plain", "try /metrics\n");
    }
    if method != "GET" {
        return respond(&mut stream, "405 Method Not Allowed", "text/plain", "");
    }
    let openmetrics = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept")
                && value.contains("application/openmetrics-text")
        })
    });
    let mut body = String::new();
    let (content_type, encoded) = if openmetrics {
        (OPENMETRICS_CONTENT_TYPE, text::encode(&mut body, registry))
    } else {
        (
            prometheus_text::CONTENT_TYPE,
            prometheus_text::encode(&mut body, registry),
        )
    };
    if encoded.is_err() {
        return respond(
            &mut stream,
            "500 Internal Server Error",
            "text/plain",
            "encoding failed\n",
        );
    }
    respond(&mut stream, "200 OK", content_type, &body)
}

/// The request head (up to the blank line), or `None` past [`MAX_HEAD`].
fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
