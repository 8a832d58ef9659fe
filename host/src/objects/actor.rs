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

use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;
use wasmtime::Store;

use crate::bindings::{Object, Reply};
use crate::error::EventError;
use crate::ids::ObjectId;
use crate::objects::{Event, LiveSlot, ObjectCore, ObjectCtx, Runtime};
use crate::sockets::{Outbox, Output, SocketConn, SocketId};
use std::sync::atomic::Ordering;

/// A live instance, holding one of the host's live-instance slots.
struct Live {
    store: Store<ObjectCtx>,
    object: Object,
    _permit: OwnedSemaphorePermit,
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
    generation: u64,
    state: State,
    slot: Arc<LiveSlot>,
    /// The instance was evicted: the next instantiation is a wake.
    evicted: bool,
    /// An instance was created or taken from the warm pool: refill the pool
    /// once the batch's output is out (not on the wake's path).
    refill: bool,
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

/// The actor's task. It lives while the object has sockets or recent events:
/// an instance idle for `idle_timeout` is evicted (the sockets stay), and an
/// actor with neither instance nor sockets leaves the directory and ends.
pub(crate) async fn run(
    rt: Arc<Runtime>,
    id: ObjectId,
    generation: u64,
    mut rx: mpsc::Receiver<Box<Event>>,
) {
    rt.metrics.actor_started();
    let core = ObjectCore::new(&rt, id.clone(), rt.config.limits.storage_quota_bytes);
    let mut actor = Actor {
        rt: rt.clone(),
        id,
        generation,
        state: State::Parked(core),
        slot: Arc::new(LiveSlot::default()),
        evicted: false,
        refill: false,
    };
    let idle = Duration::from_millis(rt.config.idle_timeout_ms);
    let max_batch = rt.config.limits.max_batch_events;
    let mut batch = Vec::new();
    let mut last_event = Instant::now();
    let exited = loop {
        let live = matches!(actor.state, State::Live(_));
        let lonely = actor.core_mut().is_none_or(|c| c.sockets.is_empty());
        let slot = actor.slot.clone();
        let first = tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => *ev,
                None => break false,
            },
            _ = tokio::time::sleep_until(last_event + idle), if live || lonely => {
                actor.evict();
                // What the instance freed leaves this worker's allocator cache:
                // an idle worker would keep it for good. (Not after an LRU
                // eviction: that worker is busy and reuses its cache at once.)
                crate::memory::flush_thread_cache();
                // A hibernating room keeps no batch capacity.
                batch = Vec::new();
                if actor.core_mut().is_none_or(|c| c.sockets.is_empty())
                    && rt.leave_directory(&actor.id, actor.generation, &mut rx)
                {
                    break true;
                }
                last_event = Instant::now();
                continue;
            }
            _ = slot.evict.notified(), if live => {
                actor.evict();
                continue;
            }
            _ = rt.shutdown.cancelled() => break false,
        };
        actor.slot.busy.store(true, Ordering::Relaxed);
        batch.push((first, Instant::now()));
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(ev) => batch.push((*ev, Instant::now())),
                Err(_) => break,
            }
        }
        // Boxed: the batch's futures (instantiation, guest calls, the commit)
        // are kilobytes, and an idle actor should not carry them.
        Box::pin(actor.run_batch(&mut batch)).await;
        actor.slot.last_used.store(rt.live.now(), Ordering::Relaxed);
        actor.slot.busy.store(false, Ordering::Relaxed);
        last_event = Instant::now();
    };
    if exited {
        // Events that raced with our exit go to the object's next actor.
        while let Ok(ev) = rx.try_recv() {
            let id = actor.id.clone();
            if let Err(e) = Box::pin(rt.send(&id, *ev)).await {
                tracing::warn!(object = %id, error = %e, "could not hand an event to the object's next actor");
            }
        }
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

    /// Evicts the instance: its Store is dropped, its memory returns to the
    /// pool; sockets, tags and attachments stay.
    fn evict(&mut self) {
        if matches!(self.state, State::Live(_)) {
            // Counted first: dropping the instance frees its live-instance slot,
            // and whoever takes it must see the eviction that made room.
            self.rt.metrics.evicted();
            self.evicted = true;
            self.drop_instance();
            // Hibernating: its sockets' empty send queues give their slots back.
            if let Some(core) = self.core_mut() {
                core.sockets.release_idle_capacity();
            }
        }
    }

    /// `on-alarm` trapped: retry with backoff, or give up and delete the alarm.
    fn alarm_failed(&mut self, retry: u32) {
        if retry < crate::alarms::MAX_RETRIES {
            let base = Duration::from_millis(self.rt.config.limits.alarm_retry_base_ms);
            let delay = crate::alarms::backoff(base, retry + 1);
            tracing::warn!(object = %self.id, retry = retry + 1, ?delay, "on-alarm trapped; retrying");
            self.rt.alarms.retry(self.id.clone(), retry + 1, delay);
        } else {
            tracing::error!(object = %self.id, "on-alarm trapped {} times; giving up and deleting the alarm", retry + 1);
            if let Some(core) = self.core_mut() {
                core.storage.set_alarm(None);
                core.storage.end_event(true);
            }
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
            // Give back the live-instance slot (the permit drops with `live`).
            self.rt.live.release(self.generation);
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
        // A fresh slot: an eviction request meant for an earlier instance must not
        // evict this one.
        self.slot = Arc::new(LiveSlot::default());
        let Some(permit) = self.rt.live.acquire(self.generation, &self.slot).await else {
            self.state = State::Parked(core);
            return Err(EventError::Instantiate {
                object: self.id.clone(),
                message: "no live-instance slot became free (max_live_instances reached, all busy)"
                    .into(),
            });
        };
        let (store, object) = match self.rt.warm.take(&self.id.class, &self.rt.metrics) {
            // A pre-warmed instance: bound to this object, no instantiation.
            Some(warm) => warm.bind(core, &self.id),
            None => {
                let mut store = super::warm::new_store(&self.rt, core);
                match pre.instantiate_async(&mut store).await {
                    Ok(object) => (store, object),
                    Err(e) => {
                        self.rt.live.release(self.generation);
                        self.state = State::Parked(store.into_data().core);
                        return Err(EventError::Instantiate {
                            object: self.id.clone(),
                            message: format!("{e:#}"),
                        });
                    }
                }
            }
        };
        self.rt.metrics.instance_created();
        self.rt.metrics.instance_started();
        self.refill = true;
        self.state = State::Live(Live {
            store,
            object,
            _permit: permit,
        });
        Ok(())
    }

    async fn run_batch(&mut self, batch: &mut Vec<(Event, Instant)>) {
        let mut pending: Vec<(Outbox, Pending, Option<SocketId>)> = Vec::with_capacity(batch.len());
        let running = self.rt.components.guest_running();
        for (event, dequeued) in batch.drain(..) {
            let arrived = match &event {
                Event::SocketMessage { at, .. } => *at,
                _ => dequeued,
            };
            pending.push(self.run_event(event, arrived).await);
        }
        drop(running);
        let writes = match self.core_mut() {
            Some(core) => core.storage.take_batch(),
            None => Default::default(),
        };
        let alarm = writes.writes.alarm;
        let committed = if writes.is_empty() {
            // Once storage has failed, no output at all leaves: the host is
            // going down and nothing this object says can be trusted to last.
            match self.rt.committer.refusal() {
                Some(e) => Err(e),
                None => Ok(None),
            }
        } else {
            self.rt
                .committer
                .commit(self.id.clone(), writes)
                .await
                .map(Some)
        };
        if let Some(core) = self.core_mut() {
            match &committed {
                Ok(Some(usage)) => core.storage.committed(*usage),
                Ok(None) => {}
                Err(_) => core.storage.commit_failed(),
            }
        }
        match committed {
            Ok(_) => {
                match alarm {
                    Some(Some(at)) => self.rt.alarms.set(self.id.clone(), at),
                    Some(None) => self.rt.alarms.delete(self.id.clone()),
                    None => {}
                }
                for (outbox, p, _) in pending {
                    self.release(outbox);
                    p.send();
                }
                if std::mem::take(&mut self.refill) {
                    super::warm::refill(&self.rt, &self.id.class);
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
                Output::One(conn, bytes) => {
                    if !conn.push(bytes) {
                        self.rt.metrics.slow_socket_closed();
                    }
                }
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
    async fn run_event(
        &mut self,
        event: Event,
        arrived: Instant,
    ) -> (Outbox, Pending, Option<SocketId>) {
        let closed = match &event {
            Event::SocketClosed { id, .. } => Some(*id),
            _ => None,
        };
        let (outbox, pending, accepted) = self.run_event_inner(event, arrived).await;
        if let Some(id) = closed {
            // The guest has seen the close: the socket is gone for good.
            self.forget_socket(id);
        }
        (outbox, pending, accepted)
    }

    async fn run_event_inner(
        &mut self,
        event: Event,
        arrived: Instant,
    ) -> (Outbox, Pending, Option<SocketId>) {
        // Events for sockets that are already gone need no instance.
        if let Event::SocketMessage { id, .. } | Event::SocketClosed { id, .. } = &event {
            let known = self
                .core_mut()
                .is_some_and(|c| c.sockets.get(*id).is_some());
            if !known {
                return (Vec::new(), Pending::Nothing, None);
            }
        }
        if let Event::Alarm { .. } = &event {
            let due = self
                .core_mut()
                .map(|c| c.storage.alarm())
                .transpose()
                .ok()
                .flatten()
                .flatten();
            if due.is_none_or(|at| at > crate::sockets::conn::now_ms()) {
                // Deleted or moved since it was scheduled.
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
        if fresh && self.evicted {
            self.evicted = false;
            self.rt.metrics.woke();
            self.rt.metrics.wake_latency.record(arrived.elapsed());
        }
        let mut accepted: Option<Arc<SocketConn>> = None;
        let mut alarm_retry: Option<u32> = None;
        let result: Result<Pending, wasmtime::Error> = match init {
            Err(e) => Err(e),
            Ok(()) => match event {
                Event::Request {
                    request,
                    socket,
                    reply,
                } => {
                    store.data_mut().pending_socket = socket.clone();
                    let called = handler.call_on_request(&mut *store, &request).await;
                    store.data_mut().pending_socket = None;
                    match called {
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
                                    message:
                                        "accepted a WebSocket on a request that is not an upgrade"
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
                    }
                }
                Event::SocketMessage { id, frame, .. } => handler
                    .call_on_socket_message(&mut *store, id, &frame)
                    .await
                    .map(|()| Pending::Nothing),
                Event::SocketClosed { id, code, reason } => handler
                    .call_on_socket_close(&mut *store, id, code, &reason)
                    .await
                    .map(|()| Pending::Nothing),
                Event::Alarm { retry } => {
                    alarm_retry = Some(retry);
                    let r = handler.call_on_alarm(&mut *store, retry).await;
                    let storage = &mut store.data_mut().core.storage;
                    if r.is_ok() && !storage.event_touched_alarm() {
                        // Delivered: the alarm is cleared with this event.
                        storage.set_alarm(None);
                    }
                    r.map(|()| Pending::Nothing)
                }
                Event::Call { call, reply, .. } => {
                    match handler.call_on_call(&mut *store, &call.0, &call.1).await {
                        Ok(r) => Ok(Pending::Call(reply, Ok(r))),
                        Err(e) => {
                            let _ = reply.send(Err(EventError::Trap {
                                object: self.id.clone(),
                                message: format!("{e:#}"),
                            }));
                            Err(e)
                        }
                    }
                }
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
                if let Some(retry) = alarm_retry {
                    self.alarm_failed(retry);
                }
                // A trap poisons the instance: start afresh on the next event.
                self.drop_instance();
                (Vec::new(), Pending::Nothing, None)
            }
        }
    }

    /// Host shutdown: close every socket with 1001 (1011 when storage failed)
    /// and drop the instance.
    fn shut_down(&mut self) {
        self.drop_instance();
        let (code, reason) = match self.rt.committer.failure() {
            Some(_) => (1011, "storage failed; host restarting"),
            None => (1001, "host shutting down"),
        };
        if let Some(core) = self.core_mut() {
            let sockets: Vec<_> = core.sockets.drain().collect();
            for entry in sockets {
                entry.conn.close(code, reason);
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
    let _ = conn.auto.set(ctx.core.auto.clone());
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
