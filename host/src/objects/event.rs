//! What reaches an object: its [`Event`]s, through the cheap [`ObjectHandle`]
//! to its actor's mailbox.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::bindings::{Reply, Request};
use crate::error::EventError;
use crate::ids::ObjectId;
use crate::sockets::{SocketConn, SocketEvent, SocketInbox};

/// Something that happens to an object. Events run one at a time, in order.
pub enum Event {
    /// An HTTP request; `socket` is set when it asks for a WebSocket.
    Request {
        /// The request as the guest sees it (boxed: events stay small).
        request: Box<Request>,
        /// The connection to register if the guest accepts the upgrade.
        socket: Option<Arc<SocketConn>>,
        /// Where the reply goes, after the event's writes are durable.
        reply: oneshot::Sender<Result<Reply, EventError>>,
    },
    /// A frame from one of the object's sockets, or its close.
    Socket(SocketEvent),
    /// The object's alarm is due; `retry` counts redeliveries after traps.
    Alarm {
        /// The retry count.
        retry: u32,
    },
    /// A call from another object.
    Call {
        /// The method and the payload (boxed: events stay small).
        call: Box<(String, Vec<u8>)>,
        /// The objects waiting on this call, outermost first.
        chain: Arc<Vec<ObjectId>>,
        /// Where the result goes.
        reply: oneshot::Sender<Result<Result<Vec<u8>, String>, EventError>>,
    },
    /// An operator's request (the admin API), run by the actor itself.
    Admin(Box<super::admin::AdminOp>),
}

impl Event {
    /// The guest export that handles it (`on-request`, ...), for logs.
    pub fn handler_name(&self) -> &'static str {
        match self {
            Event::Request { .. } => "on-request",
            Event::Socket(SocketEvent::Message { .. }) => "on-socket-message",
            Event::Socket(SocketEvent::Closed { .. }) => "on-socket-close",
            Event::Alarm { .. } => "on-alarm",
            Event::Call { .. } => "on-call",
            Event::Admin(_) => "admin",
        }
    }
}

/// A cheap, cloneable handle to an object's mailbox.
///
/// The mailbox holds boxed events: tokio's channel keeps a block of 32 slots
/// for as long as it lives — a hibernating room's whole life — so a slot is a
/// pointer (~0.3 KiB per room) rather than an event (~2 KiB per room).
#[derive(Clone)]
pub struct ObjectHandle {
    pub(super) tx: mpsc::Sender<Box<Event>>,
    /// Which actor (an object may get a new actor after its old one exited).
    pub(super) generation: u64,
}

impl ObjectHandle {
    /// Queues an event; gives it back when the actor is gone.
    pub async fn send(&self, event: Event) -> Result<(), Event> {
        self.tx.send(Box::new(event)).await.map_err(|e| *e.0)
    }

    /// Queues an event without waiting: `Err(Some(event))` when the mailbox is
    /// full, `Err(None)` when the actor is gone.
    pub fn try_send(&self, event: Event) -> Result<(), Option<Event>> {
        self.tx.try_send(Box::new(event)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(ev) => Some(*ev),
            mpsc::error::TrySendError::Closed(_) => None,
        })
    }

    /// True once the actor behind it has gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A connection reaches its object through the object's mailbox.
impl SocketInbox for ObjectHandle {
    fn try_deliver(&self, event: SocketEvent) -> Result<(), Option<SocketEvent>> {
        self.try_send(Event::Socket(event))
            .map_err(|back| match back {
                Some(Event::Socket(event)) => Some(event),
                _ => None,
            })
    }

    fn deliver(&self, event: SocketEvent) -> impl Future<Output = bool> + Send + 'static {
        let object = self.clone();
        async move { object.send(Event::Socket(event)).await.is_ok() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_stay_small() {
        // Every queued event and every idle connection's state holds one.
        assert!(
            std::mem::size_of::<Event>() <= 80,
            "{}",
            std::mem::size_of::<Event>()
        );
    }
}
