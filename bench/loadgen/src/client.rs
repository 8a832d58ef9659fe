//! One chat client: connect from its own loopback address, join, then (after
//! the coordinator's start signal) send what its plan says while counting
//! everything it receives, until the coordinator says stop; then close
//! cleanly. Each client keeps its statistics to itself and hands them back
//! when its task ends; the coordinator hears only a few [`Event`]s per client
//! (ready, sent everything, settled, done), except in `wake`, where every
//! delivery is one event (a handful per round).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Interval;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::hist::Histogram;
use crate::proto::{Incoming, RATE_LIMITED, Stamp, classify, name_frame, now_ns};

/// A client's WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Messages a burst sender writes before it reads again.
const CHUNK: u32 = 32;
/// Each client's WebSocket read buffer. tungstenite zeroes this much before
/// every read (including the one that ends in EAGAIN): at 16 KiB that memset
/// was 10 % of the load generator's CPU at one message in flight per client.
/// 4 KiB still takes ~40 chat frames per read.
const READ_BUFFER: usize = 4 * 1024;
/// How long a client waits for the host to answer its close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Opens a WebSocket to room `room` on `host` from `source` (a loopback
/// address the socket is bound to before connecting).
pub async fn connect(host: SocketAddr, source: Ipv4Addr, room: &str) -> anyhow::Result<Ws> {
    crate::addr::check_loopback(host)?;
    anyhow::ensure!(
        source.is_loopback(),
        "source {source} is not a loopback address"
    );
    let socket = TcpSocket::new_v4().context("creating a socket")?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .with_context(|| format!("binding to {source}"))?;
    let stream = socket
        .connect(host)
        .await
        .with_context(|| format!("connecting to {host} from {source}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let url = format!("ws://{host}/api/room/{room}/websocket");
    // tungstenite's default 128 KiB read buffer is allocated eagerly (and
    // partly zeroed on every read): far too much for 10,000 idle clients.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .with_context(|| format!("WebSocket handshake for room {room} from {source}"))?;
    Ok(ws)
}

/// What a client saw while joining.
#[derive(Clone, Copy, Debug, Default)]
pub struct JoinInfo {
    /// `{"joined"}` frames before `ready` (members present, plus itself).
    pub joined: u32,
    /// History messages replayed.
    pub history: u32,
}

/// Sends `{"name"}` and reads until `{"ready":true}`.
pub async fn join(ws: &mut Ws, name: &str) -> anyhow::Result<JoinInfo> {
    ws.send(Message::text(name_frame(name)))
        .await
        .context("sending the name")?;
    let mut info = JoinInfo::default();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match classify(&t) {
                Incoming::Ready => return Ok(info),
                Incoming::Joined => info.joined += 1,
                Incoming::Chat(_) => info.history += 1,
                Incoming::Error(e) => bail!("the room answered the join with an error: {e}"),
                Incoming::Quit | Incoming::Other => {}
            },
            Some(Ok(Message::Close(c))) => bail!("the host closed the socket while joining: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("reading while joining"),
            None => bail!("the connection ended while joining"),
        }
    }
}

/// Reads frames until the server has answered a close (or [`CLOSE_WAIT`]).
pub async fn close(ws: &mut Ws) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// What one client sends after the start signal.
#[derive(Debug)]
pub enum SendPlan {
    /// Nothing.
    Idle,
    /// `count` messages, at most `window` unacknowledged (not yet echoed back
    /// to this client or refused) at a time; `u32::MAX` is a plain burst.
    Window {
        /// Messages to send.
        count: u32,
        /// Most messages in flight.
        window: u32,
    },
    /// `count` messages, one every `interval`, the first `offset` after start.
    Paced {
        /// Messages to send.
        count: u32,
        /// Time between two messages.
        interval: Duration,
        /// Delay of the first one (spreads senders over the interval).
        offset: Duration,
    },
    /// One message per sequence number received on the channel.
    Commanded(mpsc::UnboundedReceiver<u32>),
}

impl SendPlan {
    fn count(&self) -> u32 {
        match self {
            SendPlan::Window { count, .. } | SendPlan::Paced { count, .. } => *count,
            SendPlan::Idle | SendPlan::Commanded(_) => 0,
        }
    }
}

/// One client's plan.
#[derive(Debug)]
pub struct ClientPlan {
    /// Client id (also its name `c<id>` and the sender id in its stamps).
    pub id: u32,
    /// The room to join.
    pub room: Arc<str>,
    /// The loopback address to connect from.
    pub source: Ipv4Addr,
    /// What to send.
    pub send: SendPlan,
    /// Deliveries (stamped chat messages) it must receive to be done.
    pub expect: u64,
    /// Report every delivery and error frame as an event (`wake`).
    pub report_each: bool,
    /// Check each sender's sequence numbers: count duplicates and messages
    /// that arrive after a later one of the same sender (`swap`).
    pub check_order: bool,
}

/// What clients tell the coordinator.
#[derive(Debug)]
pub enum Event {
    /// Joined (received `ready`) after `join_ns` from the start of its connect.
    Ready {
        /// Client id.
        id: u32,
        /// Connect + handshake + join time.
        join_ns: u64,
    },
    /// A sender has written all its messages.
    SentAll {
        /// Client id.
        id: u32,
    },
    /// A sender has an echo or an error for every message it sent.
    Settled {
        /// Client id.
        id: u32,
        /// Error frames among them (rate limiting, ...).
        errors: u64,
    },
    /// Received every expected delivery (and, as a sender, settled).
    Done {
        /// Client id.
        id: u32,
    },
    /// A stamped chat message arrived (only with `report_each`).
    Delivered {
        /// The receiving client.
        id: u32,
        /// Its stamp.
        stamp: Stamp,
        /// Receive time − send time.
        latency_ns: u64,
    },
    /// An `{"error"}` frame arrived (only with `report_each`).
    ErrorFrame {
        /// The receiving client.
        id: u32,
        /// The error text.
        text: String,
    },
    /// The client could not connect or join, or lost its connection.
    Failed {
        /// Client id.
        id: u32,
        /// What happened.
        error: String,
    },
}

/// State shared by a run's clients (read-only after start, apart from the
/// tokens and the event channel).
#[derive(Debug)]
pub struct Shared {
    /// The host.
    pub host: SocketAddr,
    /// Caps concurrent connects + joins.
    pub permits: Semaphore,
    /// Cancelled when the active phase starts.
    pub start: CancellationToken,
    /// When it started.
    pub start_at: OnceLock<Instant>,
    /// Cancelled when clients should close and return.
    pub stop: CancellationToken,
    /// Where events go.
    pub events: mpsc::UnboundedSender<Event>,
    /// `(at_ns, width_ns)`, set before the start when a scenario wants the
    /// latency of others' messages sent in `[at − width, at)` and
    /// `[at, at + width)` apart (`swap`: the 1 s before and after a deploy).
    pub split: OnceLock<(u64, u64)>,
}

/// What clients count of the chat once ready: one client's, or the sum over
/// clients ([`Counts::merge`]).
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Stamped chat messages received after ready (senders' own echoes included).
    pub deliveries: u64,
    /// Senders' own messages echoed back.
    pub acks: u64,
    /// Latency of others' messages (ns).
    pub latency: Histogram,
    /// Latency of senders' own echoes (ns).
    pub ack_latency: Histogram,
    /// Rate-limit error frames.
    pub rate_limited: u64,
    /// Other error frames.
    pub other_errors: u64,
    /// The first error frame's text.
    pub first_error: Option<String>,
    /// `{"joined"}` frames after ready.
    pub joined: u64,
    /// `{"quit"}` frames.
    pub quit: u64,
    /// Chat messages without a stamp.
    pub foreign: u64,
    /// Last delivery (ns since the epoch).
    pub last_delivery_ns: Option<u64>,
    /// Last echo of a sender's own message (ns since the epoch).
    pub last_ack_ns: Option<u64>,
    /// Deliveries of a message this client had already received (only
    /// counted with `check_order`).
    pub duplicates: u64,
    /// Deliveries that came after a later message of the same sender (only
    /// counted with `check_order`).
    pub out_of_order: u64,
    /// Latency of others' messages sent in the window before the split (see
    /// [`Shared::split`]).
    pub before_split: Histogram,
    /// Latency of others' messages sent in the window from the split on.
    pub after_split: Histogram,
}

impl Counts {
    /// Adds `other` to these counts.
    pub fn merge(&mut self, other: &Counts) {
        self.deliveries += other.deliveries;
        self.acks += other.acks;
        self.latency.merge(&other.latency);
        self.ack_latency.merge(&other.ack_latency);
        self.rate_limited += other.rate_limited;
        self.other_errors += other.other_errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.joined += other.joined;
        self.quit += other.quit;
        self.foreign += other.foreign;
        self.last_delivery_ns = self.last_delivery_ns.max(other.last_delivery_ns);
        self.last_ack_ns = self.last_ack_ns.max(other.last_ack_ns);
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.before_split.merge(&other.before_split);
        self.after_split.merge(&other.after_split);
    }
}

/// The largest sequence number [`SeqCheck`] tracks (2^24): anything above is
/// counted out of order rather than grow a bitmap without bound.
const MAX_CHECKED_SEQ: u32 = 1 << 24;

/// Which messages of each sender a client has received: one bitmap per
/// sender (a room has a handful), so a duplicate or a late message is
/// recognised exactly.
#[derive(Debug, Default)]
pub struct SeqCheck {
    senders: Vec<SenderSeqs>,
}

#[derive(Debug)]
struct SenderSeqs {
    sender: u32,
    seen: Vec<u64>,
    /// One past the highest sequence number seen.
    next: u32,
}

/// How a delivery fits the sender's sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not seen before, and no later message of its sender was seen before
    /// it.
    InOrder,
    /// Seen before.
    Duplicate,
    /// Not seen before, but a later message of its sender was.
    OutOfOrder,
}

impl SeqCheck {
    /// Records message `seq` of `sender`.
    pub fn see(&mut self, sender: u32, seq: u32) -> Seen {
        if seq >= MAX_CHECKED_SEQ {
            return Seen::OutOfOrder;
        }
        let i = match self.senders.iter().position(|s| s.sender == sender) {
            Some(i) => i,
            None => {
                self.senders.push(SenderSeqs {
                    sender,
                    seen: Vec::new(),
                    next: 0,
                });
                self.senders.len() - 1
            }
        };
        let s = &mut self.senders[i];
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= s.seen.len() {
            s.seen.resize(word + 1, 0);
        }
        if s.seen[word] & bit != 0 {
            return Seen::Duplicate;
        }
        s.seen[word] |= bit;
        if seq < s.next {
            Seen::OutOfOrder
        } else {
            s.next = seq + 1;
            Seen::InOrder
        }
    }
}

/// One client's statistics.
#[derive(Debug, Default, Clone)]
pub struct ClientStats {
    /// Client id.
    pub id: u32,
    /// Connect-to-ready time.
    pub join_ns: Option<u64>,
    /// What it saw while joining.
    pub join: JoinInfo,
    /// Messages it sent.
    pub sent: u32,
    /// What it saw after ready.
    pub counts: Counts,
    /// First delivery (ns since the epoch).
    pub first_delivery_ns: Option<u64>,
    /// Why it failed, if it did.
    pub failed: Option<String>,
}

async fn connect_and_join(
    shared: &Shared,
    id: u32,
    room: &str,
    source: Ipv4Addr,
) -> anyhow::Result<(Ws, u64, JoinInfo)> {
    let _permit = shared.permits.acquire().await.context("semaphore closed")?;
    let t0 = now_ns();
    let mut ws = connect(shared.host, source, room).await?;
    let info = join(&mut ws, &format!("c{id}")).await?;
    Ok((ws, now_ns().saturating_sub(t0), info))
}

async fn tick(t: &mut Option<Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn recv(rx: &mut Option<mpsc::UnboundedReceiver<u32>>) -> Option<u32> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes one stamped message (without flushing).
async fn feed(ws: &mut Ws, id: u32, seq: u32) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let stamp = Stamp {
        t_ns: now_ns(),
        sender: id,
        seq,
    };
    ws.feed(Message::text(stamp.message_frame())).await
}

/// Runs one client to the end; see the module documentation.
pub async fn run_client(shared: Arc<Shared>, plan: ClientPlan) -> ClientStats {
    let ClientPlan {
        id,
        room,
        source,
        send,
        expect,
        report_each,
        check_order,
    } = plan;
    let mut seqs = check_order.then(SeqCheck::default);
    let mut split: Option<(u64, u64)> = None;
    let mut st = ClientStats {
        id,
        ..ClientStats::default()
    };
    let fail = |st: &mut ClientStats, error: String| {
        st.failed = Some(error.clone());
        let _ = shared.events.send(Event::Failed { id, error });
    };

    let stop = shared.stop.clone();
    let joined = tokio::select! {
        biased;
        _ = stop.cancelled() => return st,
        r = connect_and_join(&shared, id, &room, source) => r,
    };
    let mut ws = match joined {
        Ok((ws, join_ns, info)) => {
            st.join_ns = Some(join_ns);
            st.join = info;
            let _ = shared.events.send(Event::Ready { id, join_ns });
            ws
        }
        Err(e) => {
            fail(
                &mut st,
                format!("client {id} ({source}, room {room}): {e:#}"),
            );
            return st;
        }
    };

    let count = send.count();
    let (window, paced) = match &send {
        SendPlan::Window { window, .. } => (Some(*window), None),
        SendPlan::Paced {
            interval, offset, ..
        } => (None, Some((*interval, *offset))),
        _ => (None, None),
    };
    let mut cmds = match send {
        SendPlan::Commanded(rx) => Some(rx),
        _ => None,
    };
    let mut ticker: Option<Interval> = None;
    let mut sender_errors: u64 = 0;
    let (mut started, mut sent_all, mut settled, mut done) = (false, count == 0, count == 0, false);

    let stop_fut = stop.cancelled();
    tokio::pin!(stop_fut);
    let start_token = shared.start.clone();
    let start_fut = start_token.cancelled();
    tokio::pin!(start_fut);

    let lost = loop {
        let in_flight = u64::from(st.sent).saturating_sub(st.counts.acks + sender_errors);
        let window_open =
            started && st.sent < count && window.is_some_and(|w| in_flight < u64::from(w));
        // Biased, frames first: while frames are waiting, nothing else is
        // polled (no shared token or timer is touched per frame); the other
        // branches run when the socket has nothing to read.
        tokio::select! {
            biased;
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(t))) => match classify(&t) {
                    Incoming::Chat(m) => match Stamp::decode(&m) {
                        Some(stamp) => {
                            let now = now_ns();
                            let lat = now.saturating_sub(stamp.t_ns);
                            st.counts.deliveries += 1;
                            st.first_delivery_ns.get_or_insert(now);
                            st.counts.last_delivery_ns = Some(now);
                            if let Some(seqs) = &mut seqs {
                                match seqs.see(stamp.sender, stamp.seq) {
                                    Seen::InOrder => {}
                                    Seen::Duplicate => st.counts.duplicates += 1,
                                    Seen::OutOfOrder => st.counts.out_of_order += 1,
                                }
                            }
                            if stamp.sender == id {
                                st.counts.acks += 1;
                                st.counts.ack_latency.record(lat);
                                st.counts.last_ack_ns = Some(now);
                            } else {
                                st.counts.latency.record(lat);
                                if let Some((at, width)) = split {
                                    if stamp.t_ns >= at {
                                        if stamp.t_ns - at < width {
                                            st.counts.after_split.record(lat);
                                        }
                                    } else if at - stamp.t_ns <= width {
                                        st.counts.before_split.record(lat);
                                    }
                                }
                            }
                            if report_each {
                                let _ = shared.events.send(Event::Delivered { id, stamp, latency_ns: lat });
                            }
                        }
                        None => st.counts.foreign += 1,
                    },
                    Incoming::Error(e) => {
                        if e.contains(RATE_LIMITED) {
                            st.counts.rate_limited += 1;
                        } else {
                            st.counts.other_errors += 1;
                        }
                        if st.counts.first_error.is_none() {
                            st.counts.first_error = Some(e.to_string());
                        }
                        if st.sent > 0 {
                            sender_errors += 1;
                        }
                        if report_each {
                            let _ = shared.events.send(Event::ErrorFrame { id, text: e.into_owned() });
                        }
                    }
                    Incoming::Joined => st.counts.joined += 1,
                    Incoming::Quit => st.counts.quit += 1,
                    Incoming::Ready | Incoming::Other => {}
                },
                Some(Ok(Message::Close(c))) => break Some(format!("the host closed the connection: {c:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => break Some(format!("connection error: {e}")),
                None => break Some("the connection ended".to_string()),
            },
            _ = &mut stop_fut => break None,
            _ = &mut start_fut, if !started => {
                started = true;
                split = shared.split.get().copied();
                if let Some((interval, offset)) = paced {
                    let at = shared.start_at.get().copied().unwrap_or_else(Instant::now) + offset;
                    let mut t = tokio::time::interval_at(at.into(), interval);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    ticker = Some(t);
                }
            }
            _ = tick(&mut ticker), if started && st.sent < count => {
                if let Err(e) = feed(&mut ws, id, st.sent).await {
                    break Some(format!("sending: {e}"));
                }
                st.sent += 1;
                if let Err(e) = ws.flush().await {
                    break Some(format!("sending: {e}"));
                }
            }
            _ = std::future::ready(()), if window_open => {
                let room_left = window.map_or(0, |w| u64::from(w).saturating_sub(in_flight));
                let n = u64::from(CHUNK.min(count - st.sent)).min(room_left) as u32;
                let mut err = None;
                for _ in 0..n {
                    if let Err(e) = feed(&mut ws, id, st.sent).await {
                        err = Some(e);
                        break;
                    }
                    st.sent += 1;
                }
                let r = match err {
                    Some(e) => Err(e),
                    None => ws.flush().await,
                };
                if let Err(e) = r {
                    break Some(format!("sending: {e}"));
                }
            }
            cmd = recv(&mut cmds), if started => match cmd {
                Some(seq) => {
                    let r = match feed(&mut ws, id, seq).await {
                        Ok(()) => ws.flush().await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = r {
                        break Some(format!("sending: {e}"));
                    }
                    st.sent += 1;
                }
                None => cmds = None,
            },
        }
        if started {
            if !sent_all && st.sent >= count {
                sent_all = true;
                let _ = shared.events.send(Event::SentAll { id });
            }
            if sent_all && !settled && st.counts.acks + sender_errors >= u64::from(count) {
                settled = true;
                let _ = shared.events.send(Event::Settled {
                    id,
                    errors: sender_errors,
                });
            }
            if settled && !done && st.counts.deliveries >= expect {
                done = true;
                let _ = shared.events.send(Event::Done { id });
            }
        }
    };
    match lost {
        None => close(&mut ws).await,
        Some(why) => {
            if !stop.is_cancelled() {
                fail(
                    &mut st,
                    format!("client {id} ({source}, room {room}): {why}"),
                );
            }
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_check_finds_duplicates_and_late_messages() {
        let mut c = SeqCheck::default();
        assert_eq!(c.see(7, 0), Seen::InOrder);
        assert_eq!(c.see(9, 0), Seen::InOrder, "senders are apart");
        assert_eq!(c.see(7, 1), Seen::InOrder);
        assert_eq!(c.see(7, 1), Seen::Duplicate);
        assert_eq!(c.see(7, 3), Seen::InOrder, "a gap is not (yet) a fault");
        assert_eq!(c.see(7, 2), Seen::OutOfOrder, "it came after 3");
        assert_eq!(c.see(7, 2), Seen::Duplicate);
        assert_eq!(c.see(7, 200), Seen::InOrder);
        assert_eq!(c.see(9, 1), Seen::InOrder);
        assert_eq!(c.see(9, MAX_CHECKED_SEQ), Seen::OutOfOrder);
    }
}
