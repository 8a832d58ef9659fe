//! Connection caps and the connection's watch: how many TCP connections are
//! open, in all and per client IP ([`ConnLimits`], a slot per connection
//! held until its last user — the HTTP connection or the WebSocket task it
//! became — lets go), and whether a connection has sent anything since its
//! last response ([`Watched`]), which tells a slow request head from an idle
//! connection when the head deadline cuts it.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::metrics::Metrics;

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections_per_ip`.
    PerIp,
    /// `limits.max_connections`.
    Total,
}

/// Open connections, in all and per IP, against their caps.
pub struct ConnLimits {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    metrics: Arc<Metrics>,
}

/// One admitted connection (or upgrade); gives its place back when dropped.
pub struct ConnSlot {
    limits: Option<Arc<ConnLimits>>,
    ip: Option<IpAddr>,
    total: bool,
}

impl ConnSlot {
    /// A slot that counts nothing (a listener without caps).
    pub fn unlimited() -> ConnSlot {
        ConnSlot {
            limits: None,
            ip: None,
            total: false,
        }
    }
}

impl ConnLimits {
    /// Caps of `max_total` connections, `max_per_ip` per IP.
    pub fn new(max_total: usize, max_per_ip: usize, metrics: Arc<Metrics>) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// Admits a new TCP connection: counts it in the total and, when `ip` is
    /// given, against its IP's cap. A refusal is counted in the metrics.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnSlot, Refused> {
        let before = self.total.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.metrics.refused_total_cap();
            return Err(Refused::Total);
        }
        if let Some(ip) = ip
            && !self.take_ip(ip)
        {
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.metrics.refused_per_ip();
            return Err(Refused::PerIp);
        }
        self.metrics.connection_opened();
        Ok(ConnSlot {
            limits: Some(self.clone()),
            ip,
            total: true,
        })
    }

    /// Admits a WebSocket upgrade against `ip`'s cap only (the forwarded
    /// client IP behind a trusted proxy; its TCP connection is counted in the
    /// total already).
    pub fn admit_ip(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, Refused> {
        if !self.take_ip(ip) {
            self.metrics.refused_per_ip();
            return Err(Refused::PerIp);
        }
        Ok(ConnSlot {
            limits: Some(self.clone()),
            ip: Some(ip),
            total: false,
        })
    }

    fn take_ip(&self, ip: IpAddr) -> bool {
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, ip: Option<IpAddr>, total: bool) {
        if let Some(ip) = ip {
            let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        if total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.metrics.connection_closed();
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(limits) = &self.limits {
            limits.release(self.ip, self.total);
        }
    }
}

/// The canonical form of a peer address (an IPv4-mapped IPv6 address is
/// the IPv4 address), so that one client is one key.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// What a connection refused at accept is told (it is then closed at once,
/// without reading anything).
pub const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n\r\ntoo many connections\n";

/// A TCP stream that remembers whether bytes arrived since it last wrote:
/// when the head deadline cuts a connection, a slow request head (bytes
/// came) is told from an idle connection (none came since the last
/// response, or ever).
pub struct Watched {
    stream: TcpStream,
    read_since_write: Arc<AtomicBool>,
}

impl Watched {
    /// Watches `stream`.
    pub fn new(stream: TcpStream) -> Watched {
        Watched {
            stream,
            read_since_write: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True while bytes have arrived since the last write.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.read_since_write.clone()
    }

    /// The bare stream (a WebSocket keeps only it).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.read_since_write.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.read_since_write.store(false, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.read_since_write.store(false, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_slots_give_their_place_back() {
        let metrics = Arc::new(Metrics::default());
        let limits = ConnLimits::new(3, 2, metrics.clone());
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        let b: IpAddr = "127.0.0.2".parse().expect("ip");
        let a1 = limits.admit(Some(a)).expect("first");
        let a2 = limits.admit(Some(a)).expect("second");
        assert_eq!(limits.admit(Some(a)).err(), Some(Refused::PerIp));
        let b1 = limits.admit(Some(b)).expect("another ip");
        assert_eq!(limits.admit(Some(b)).err(), Some(Refused::Total));
        drop(a1);
        let _a3 = limits.admit(Some(a)).expect("a place came back");
        drop((a2, b1));
        let s = metrics.snapshot();
        assert_eq!(
            (
                s.connections_open,
                s.connections_refused_per_ip,
                s.connections_refused_total_cap
            ),
            (1, 1, 1)
        );
        let _f1 = limits.admit_ip(b).expect("forwarded");
        let _f2 = limits.admit_ip(b).expect("forwarded");
        assert_eq!(limits.admit_ip(b).err(), Some(Refused::PerIp));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(canonical(mapped), a);
    }
}
