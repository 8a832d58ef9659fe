//! The actor: one per live object id. It owns the object's wasmtime `Store`
//! (when an instance exists), its sockets and its storage view, and runs events
//! one at a time, in the order they arrived.
//!
//! Events are taken in batches — whatever queued up while the previous batch
//! was committing. Each event is its own transaction (a trap rolls back only
//! that event), and the batch's writes are committed together; the batch's
//! output (frames, closes, HTTP replies) is released only once those writes are
//! durable. Under load a busy room commits many events per fsync.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use wasmtime::{Store, UpdateDeadline};

use crate::bindings::{Object, Reply};
use crate::error::EventError;
use crate::ids::ObjectId;
use crate::objects::{Event, ObjectCore, ObjectCtx, ObjectHandle, Runtime};
use crate::sockets::{Outbox, Output, SocketConn, SocketId};
use crate::storage::ObjectStorage;

/// A live instance.
struct Live {
    store: Store<ObjectCtx>,
    object: Object,
}

/// The object's core, either inside a live instance's store or parked.
enum State {
    Live(Live),
    Parked(ObjectCore),
    /// Only while switching between the two.
    Moving,
}

struct Actor {
    rt: Arc<Runtime>,
    id: ObjectId,
    state: State,
}

/// What an event leaves to do once the batch is durable.
enum Pending {
    Reply(
        oneshot::Sender<Result<Reply, EventError>>,
        Result<Reply, EventError>,
    ),
    Call(
        oneshot::Sender<Result<Result<Vec<u8>, String>, EventError>>,
        Result<Result<Vec<u8>, String>, EventError>,
    ),
    Nothing,
}

/// The actor's task.
pub(crate) async fn run(
    rt: Arc<Runtime>,
    id: ObjectId,
    handle: ObjectHandle,
    mut rx: mpsc::Receiver<Event>,
) {
    rt.metrics.actor_started();
    let core = ObjectCore {
        id: id.clone(),
        rt: rt.clone(),
        storage: ObjectStorage::new(rt.db.clone(), id.clone()),
        sockets: Default::default(),
    };
    drop(handle);
    let mut actor = Actor {
        rt: rt.clone(),
        id,
        state: State::Parked(core),
    };
    let max_batch = rt.config.limits.max_batch_events;
    let mut batch = Vec::with_capacity(16);
    loop {
        let first = tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
            _ = rt.shutdown.cancelled() => break,
        };
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(_) => break,
            }
        }
        actor.run_batch(&mut batch).await;
    }
    actor.shut_down();
    rt.metrics.actor_stopped();
}

impl Actor {
    fn core_mut(&mut self) -> Option<&mut ObjectCore> {
        match &mut self.state {
            State::Live(live) => Some(&mut live.store.data_mut().core),
            State::Parked(core) => Some(core),
            State::Moving => None,
        }
    }

    /// Removes a socket from the table for good.
    fn forget_socket(&mut self, id: SocketId) {
        if let Some(core) = self.core_mut()
            && core.sockets.remove(id).is_some()
        {
            self.rt.metrics.socket_closed();
        }
    }

    /// Drops the instance (after a trap, or to evict), keeping the core.
    fn drop_instance(&mut self) {
        if let State::Live(_) = self.state
            && let State::Live(live) = std::mem::replace(&mut self.state, State::Moving)
        {
            let ctx = live.store.into_data();
            self.state = State::Parked(ctx.core);
            self.rt.metrics.instance_dropped();
        }
    }

    /// Creates an instance from the class's pre-linked component. `init` runs in
    /// the caller's event.
    async fn instantiate(&mut self) -> Result<(), EventError> {
        let State::Parked(_) = self.state else {
            return Ok(());
        };
        let State::Parked(core) = std::mem::replace(&mut self.state, State::Moving) else {
            return Ok(());
        };
        let Some(pre) = self.rt.components.class(&self.id.class) else {
            self.state = State::Parked(core);
            return Err(EventError::NoSuchClass(self.id.class.clone()));
        };
        let mut store = Store::new(&self.rt.components.engine, ObjectCtx::new(core));
        store.limiter(|ctx| &mut ctx.limits);
        let max_ticks = (self.rt.config.limits.max_event_cpu_ms
            / crate::components::EPOCH_TICK.as_millis() as u64)
            .max(1);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            let data = ctx.data_mut();
            data.ticks += 1;
            if data.ticks > max_ticks {
                Err(wasmtime::Error::msg("event exceeded its CPU time limit"))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        match pre.instantiate_async(&mut store).await {
            Ok(object) => {
                self.rt.metrics.instance_created();
                self.rt.metrics.instance_started();
                self.state = State::Live(Live { store, object });
                Ok(())
            }
            Err(e) => {
                self.state = State::Parked(store.into_data().core);
                Err(EventError::Instantiate {
                    object: self.id.clone(),
                    message: format!("{e:#}"),
                })
            }
        }
    }

    async fn run_batch(&mut self, batch: &mut Vec<Event>) {
        let mut pending: Vec<(Outbox, Pending, Option<SocketId>)> = Vec::with_capacity(batch.len());
        for event in batch.drain(..) {
            pending.push(self.run_event(event).await);
        }
        let writes = match self.core_mut() {
            Some(core) => core.storage.take_batch(),
            None => Default::default(),
        };
        let committed = if writes.is_empty() {
            Ok(())
        } else {
            self.rt.committer.commit(self.id.clone(), writes).await
        };
        match committed {
            Ok(()) => {
                for (outbox, p, _) in pending {
                    self.release(outbox);
                    p.send();
                }
            }
            Err(e) => {
                tracing::error!(object = %self.id, error = %e, "commit failed; dropping the batch's output");
                let failure = EventError::Commit {
                    object: self.id.clone(),
                    message: e.to_string(),
                };
                self.drop_instance();
                for (_, p, accepted) in pending {
                    p.fail(failure.clone());
                    // The upgrade will not happen: forget the socket.
                    if let Some(id) = accepted {
                        self.forget_socket(id);
                    }
                }
            }
        }
    }

    /// Sends an event's output to its sockets.
    fn release(&mut self, outbox: Outbox) {
        for output in outbox {
            match output {
                Output::Frame(to, bytes) => {
                    for conn in to {
                        if !conn.push(bytes.clone()) {
                            self.rt.metrics.slow_socket_closed();
                        }
                    }
                }
                Output::Close(conn, code, reason) => {
                    conn.close(code, &reason);
                    self.forget_socket(conn.id());
                }
            }
        }
    }

    /// Runs one event as one transaction.
    async fn run_event(&mut self, event: Event) -> (Outbox, Pending, Option<SocketId>) {
        let closed = match &event {
            Event::SocketClosed { id, .. } => Some(*id),
            _ => None,
        };
        let (outbox, pending, accepted) = self.run_event_inner(event).await;
        if let Some(id) = closed {
            // The guest has seen the close: the socket is gone for good.
            self.forget_socket(id);
        }
        (outbox, pending, accepted)
    }

    async fn run_event_inner(&mut self, event: Event) -> (Outbox, Pending, Option<SocketId>) {
        // Events for sockets that are already gone need no instance.
        if let Event::SocketMessage { id, .. } | Event::SocketClosed { id, .. } = &event {
            let known = self
                .core_mut()
                .is_some_and(|c| c.sockets.get(*id).is_some());
            if !known {
                return (Vec::new(), Pending::Nothing, None);
            }
        }
        let chain = match &event {
            Event::Call { chain, .. } => {
                let mut c = Vec::with_capacity(chain.len() + 1);
                c.extend(chain.iter().cloned());
                c.push(self.id.clone());
                Arc::new(c)
            }
            _ => Arc::new(vec![self.id.clone()]),
        };
        let fresh = matches!(self.state, State::Parked(_));
        if let Err(e) = self.instantiate().await {
            tracing::error!(object = %self.id, error = %e, "cannot create instance");
            return (Vec::new(), Pending::failed(event, e), None);
        };
        let State::Live(live) = &mut self.state else {
            let e = EventError::Unavailable(self.id.clone());
            return (Vec::new(), Pending::failed(event, e), None);
        };
        let ctx = live.store.data_mut();
        ctx.chain = chain;
        ctx.ticks = 0;
        ctx.outbox.clear();
        let store = &mut live.store;
        let handler = live.object.roomhost_object_handler();
        let init = if fresh {
            handler.call_init(&mut *store).await
        } else {
            Ok(())
        };
        let mut accepted: Option<Arc<SocketConn>> = None;
        let result: Result<Pending, wasmtime::Error> = match init {
            Err(e) => Err(e),
            Ok(()) => match event {
                Event::Request {
                    request,
                    socket,
                    reply,
                } => match handler.call_on_request(&mut *store, &request).await {
                    Ok(r) => {
                        let r = match (r, socket) {
                            (Reply::AcceptWebsocket(accept), Some(conn)) => {
                                match accept_socket(store.data_mut(), &conn, &accept) {
                                    Ok(()) => {
                                        accepted = Some(conn);
                                        Ok(Reply::AcceptWebsocket(accept))
                                    }
                                    Err(message) => Err(EventError::Trap {
                                        object: self.id.clone(),
                                        message,
                                    }),
                                }
                            }
                            (Reply::AcceptWebsocket(_), None) => Err(EventError::Trap {
                                object: self.id.clone(),
                                message: "accepted a WebSocket on a request that is not an upgrade"
                                    .into(),
                            }),
                            (r, _) => Ok(r),
                        };
                        Ok(Pending::Reply(reply, r))
                    }
                    Err(e) => {
                        Pending::Reply(
                            reply,
                            Err(EventError::Trap {
                                object: self.id.clone(),
                                message: format!("{e:#}"),
                            }),
                        )
                        .send();
                        Err(e)
                    }
                },
                Event::SocketMessage { id, frame } => handler
                    .call_on_socket_message(&mut *store, id, &frame)
                    .await
                    .map(|()| Pending::Nothing),
                Event::SocketClosed { id, code, reason } => handler
                    .call_on_socket_close(&mut *store, id, code, &reason)
                    .await
                    .map(|()| Pending::Nothing),
                Event::Call {
                    method,
                    payload,
                    reply,
                    ..
                } => match handler.call_on_call(&mut *store, &method, &payload).await {
                    Ok(r) => Ok(Pending::Call(reply, Ok(r))),
                    Err(e) => {
                        let _ = reply.send(Err(EventError::Trap {
                            object: self.id.clone(),
                            message: format!("{e:#}"),
                        }));
                        Err(e)
                    }
                },
            },
        };
        match result {
            Ok(p) => {
                let ctx = store.data_mut();
                ctx.core.storage.end_event(true);
                ctx.core.sockets.keep_changes();
                let outbox = std::mem::take(&mut ctx.outbox);
                self.rt.metrics.event_ran(false);
                let accepted = accepted.map(|conn| {
                    self.rt.metrics.socket_accepted();
                    self.rt.metrics.socket_opened();
                    conn.id()
                });
                (outbox, p, accepted)
            }
            Err(e) => {
                tracing::warn!(object = %self.id, error = %format!("{e:#}"), "guest trapped; its writes and output are discarded");
                let ctx = store.data_mut();
                ctx.core.storage.end_event(false);
                ctx.core.sockets.undo_changes();
                ctx.outbox.clear();
                self.rt.metrics.event_ran(true);
                // A trap poisons the instance: start afresh on the next event.
                self.drop_instance();
                (Vec::new(), Pending::Nothing, None)
            }
        }
    }

    /// Host shutdown: close every socket with 1001 and drop the instance.
    fn shut_down(&mut self) {
        self.drop_instance();
        if let Some(core) = self.core_mut() {
            let sockets: Vec<_> = core.sockets.drain().collect();
            for entry in sockets {
                entry.conn.close(1001, "host shutting down");
                entry.conn.end();
                self.rt.metrics.socket_closed();
            }
        }
    }
}

/// Registers an accepted socket in the table (undone if the event traps).
fn accept_socket(
    ctx: &mut ObjectCtx,
    conn: &Arc<SocketConn>,
    accept: &crate::bindings::Accept,
) -> Result<(), String> {
    crate::sockets::validate_tags(&accept.tags).map_err(|e| format!("invalid accept: {e:?}"))?;
    crate::sockets::validate_attachment(&accept.attachment)
        .map_err(|e| format!("invalid accept: {e:?}"))?;
    ctx.core
        .sockets
        .accept(conn.clone(), accept.tags.clone(), accept.attachment.clone());
    Ok(())
}

impl Pending {
    fn failed(event: Event, e: EventError) -> Pending {
        match event {
            Event::Request { reply, .. } => Pending::Reply(reply, Err(e)),
            Event::Call { reply, .. } => Pending::Call(reply, Err(e)),
            _ => Pending::Nothing,
        }
    }

    fn send(self) {
        match self {
            Pending::Reply(tx, r) => {
                let _ = tx.send(r);
            }
            Pending::Call(tx, r) => {
                let _ = tx.send(r);
            }
            Pending::Nothing => {}
        }
    }

    fn fail(self, e: EventError) {
        match self {
            Pending::Reply(tx, _) => {
                let _ = tx.send(Err(e));
            }
            Pending::Call(tx, _) => {
                let _ = tx.send(Err(e));
            }
            Pending::Nothing => {}
        }
    }
}
