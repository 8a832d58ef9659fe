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
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;
use wasmtime::Store;

use super::admin::{AdminOp, Deleted, Shown, SocketInfo};
use super::live::LiveSlot;
use super::{Event, ObjectCore, ObjectCtx, ObjectStatus, Runtime};
use crate::bindings::exports::roomhost::object::handler::Guest as Handler;
use crate::bindings::{Accept, Object, Reply, Request};
use crate::budget::OverBudget;
use crate::components::Version;
use crate::error::{AdminError, EventError, Report};
use crate::guest_log::GuestFailure;
use crate::ids::ObjectId;
use crate::sockets::{Outbox, Output, SocketConn, SocketEvent, SocketId};

/// A live instance, holding one of the host's live-instance slots.
struct Live {
    store: Store<ObjectCtx>,
    object: Object,
    /// The version it is an instance of.
    version: Arc<Version<ObjectCtx>>,
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
    /// The components' version generation this actor last checked its
    /// instance against.
    versions_seen: u64,
    /// What the admin API reports about this object.
    status: Arc<ObjectStatus>,
}

/// Where the answer to a request or a call goes.
type ReplyTo<T> = oneshot::Sender<Result<T, EventError>>;

/// What an event leaves to do once the batch is durable.
enum Pending {
    Reply(ReplyTo<Reply>, Result<Reply, EventError>),
    Call(
        ReplyTo<Result<Vec<u8>, String>>,
        Result<Result<Vec<u8>, String>, EventError>,
    ),
    /// An operator's request: told `None` once durable, or why not.
    Admin(Box<dyn FnOnce(Option<EventError>) + Send>),
    Nothing,
}

/// What running one event leaves for the end of the batch.
struct Ran {
    /// Its gated output.
    outbox: Outbox,
    /// Whom to answer once the batch is durable.
    pending: Pending,
    /// The socket it accepted (forgotten again if the commit fails).
    accepted: Option<SocketId>,
}

impl Ran {
    /// An event that produced nothing (or whose sender was already told).
    fn nothing() -> Ran {
        Ran::answer(Pending::Nothing)
    }

    /// An event with only an answer.
    fn answer(pending: Pending) -> Ran {
        Ran {
            outbox: Vec::new(),
            pending,
            accepted: None,
        }
    }
}

/// How an event's guest call ended.
enum Outcome {
    /// It returned: its writes and output stay.
    Done {
        pending: Pending,
        accepted: Option<Arc<SocketConn>>,
    },
    /// It trapped: its writes and output go, and its sender hears of the trap
    /// at once (there is nothing to wait for).
    Trapped {
        error: EventError,
        /// The sender, answered with `error`.
        pending: Pending,
        /// The retry count, when it was an alarm.
        alarm_retry: Option<u32>,
    },
}

impl Outcome {
    /// `id`'s guest trapped; `answer` tells the event's sender.
    fn trapped(
        id: &ObjectId,
        error: wasmtime::Error,
        answer: impl FnOnce(EventError) -> Pending,
        alarm_retry: Option<u32>,
    ) -> Outcome {
        let error = EventError::trap(id, error);
        Outcome::Trapped {
            pending: answer(error.clone()),
            error,
            alarm_retry,
        }
    }
}

/// The actor's task. It lives while the object has sockets or recent events:
/// an instance idle for `idle_timeout` is evicted (the sockets stay), and an
/// actor with neither instance nor sockets leaves the directory and ends.
pub(crate) async fn run(
    rt: Arc<Runtime>,
    id: ObjectId,
    generation: u64,
    mut rx: mpsc::Receiver<Box<Event>>,
    status: Arc<ObjectStatus>,
) {
    rt.metrics.actor_started();
    let core = ObjectCore::new(&rt.db, id.clone(), rt.config.limits.storage_quota_bytes);
    let mut actor = Actor {
        rt: rt.clone(),
        id,
        generation,
        state: State::Parked(core),
        slot: Arc::new(LiveSlot::default()),
        evicted: false,
        refill: false,
        versions_seen: 0,
        status,
    };
    let idle = Duration::from_millis(rt.config.idle_timeout_ms);
    let max_batch = rt.config.limits.max_batch_events;
    let mut batch = Vec::new();
    let mut last_event = Instant::now();
    let exited = loop {
        let live = matches!(actor.state, State::Live(_));
        let lonely = actor.core_mut().is_none_or(|c| c.sockets.is_empty());
        let slot = actor.slot.clone();
        let status = actor.status.clone();
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
            _ = status.evict.notified(), if live => {
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
        let sockets = actor.core_mut().map_or(0, |c| c.sockets.len());
        actor.status.sockets.store(sockets, Ordering::Relaxed);
        actor.slot.last_used.store(rt.live.now(), Ordering::Relaxed);
        actor.slot.busy.store(false, Ordering::Relaxed);
        last_event = Instant::now();
    };
    if exited {
        // Events that raced with our exit go to the object's next actor.
        while let Ok(ev) = rx.try_recv() {
            let id = actor.id.clone();
            if let Err(e) = Box::pin(rt.send(&id, *ev)).await {
                tracing::warn!(object = %id, error = %Report(&e), "could not hand an event to the object's next actor");
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

    /// `on-alarm` trapped: retry with backoff, or give up and delete the
    /// alarm. Returns what happens next, for the trap's log line, and whether
    /// the alarm was given up.
    fn alarm_failed(&mut self, retry: u32) -> (String, bool) {
        if retry < crate::alarms::MAX_RETRIES {
            let base = Duration::from_millis(self.rt.config.limits.alarm_retry_base_ms);
            let delay = crate::alarms::backoff(base, retry + 1);
            self.rt.alarms.retry(self.id.clone(), retry + 1, delay);
            (
                format!(
                    "; the alarm is retried in {delay:?} (retry {} of {})",
                    retry + 1,
                    crate::alarms::MAX_RETRIES
                ),
                false,
            )
        } else {
            if let Some(core) = self.core_mut() {
                core.storage.set_alarm(None);
                core.storage.end_event(true);
            }
            (
                format!(
                    "; on-alarm trapped {} times: giving up, the alarm is deleted",
                    retry + 1
                ),
                true,
            )
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
            self.status.dropped();
        }
    }

    /// Creates an instance from the class's pre-linked component. `init` runs in
    /// the caller's event.
    async fn instantiate(&mut self) -> Result<(), EventError> {
        let State::Parked(_) = self.state else {
            return Ok(());
        };
        let State::Parked(mut core) = std::mem::replace(&mut self.state, State::Moving) else {
            return Ok(());
        };
        // Read before the version: a change after this is seen at the next event.
        let seen = self.rt.components.generation();
        let Some((version, active)) = self.rt.components.version_for(&self.id) else {
            self.state = State::Parked(core);
            return Err(EventError::NoSuchClass(self.id.class.clone()));
        };
        // A fresh slot: an eviction request meant for an earlier instance must not
        // evict this one.
        self.slot = Arc::new(LiveSlot::default());
        let Some(permit) = self.rt.live.acquire(self.generation, &self.slot).await else {
            self.state = State::Parked(core);
            return Err(EventError::NoInstanceSlot(self.id.clone()));
        };
        // What this instance writes is recorded as written by its version.
        core.storage.set_version(&version.info.id);
        let warm = self
            .rt
            .warm
            .take(&self.id.class, &version.info.id, active, &self.rt.metrics);
        let (store, object) = match warm {
            // A pre-warmed instance: bound to this object, no instantiation.
            Some(warm) => warm.bind(core, &self.id),
            None => {
                let mut store = super::warm::new_store(&self.rt, core);
                // A long start function's task leaves the long lane when
                // the event starts (`GuestClock::start`).
                match version.pre.instantiate_async(&mut store).await {
                    Ok(object) => (store, object),
                    Err(e) => {
                        self.rt.live.release(self.generation);
                        self.state = State::Parked(store.into_data().core);
                        return Err(EventError::Instantiate {
                            object: self.id.clone(),
                            source: Arc::new(crate::components::engine::explain_limits(e)),
                        });
                    }
                }
            }
        };
        self.rt.metrics.instance_created();
        self.rt.metrics.instance_started();
        self.refill = true;
        self.versions_seen = seen;
        self.status.running(&version.info.id);
        self.state = State::Live(Live {
            store,
            object,
            version,
            _permit: permit,
        });
        Ok(())
    }

    /// Moves to another version at this event boundary if the object should
    /// run one (a deploy, a rollback, a canary): the instance is dropped, and
    /// the event runs on a fresh instance of the new version, after `init`.
    fn follow_version(&mut self) {
        let now = self.rt.components.generation();
        if now == self.versions_seen {
            return;
        }
        self.versions_seen = now;
        let State::Live(live) = &self.state else {
            return;
        };
        let want = self.rt.components.version_for(&self.id);
        if let Some((want, _)) = want
            && want.info.id != live.version.info.id
        {
            tracing::debug!(object = %self.id, from = %live.version.info.id, to = %want.info.id, "moving to another version");
            self.drop_instance();
            self.rt.metrics.swapped();
        }
    }

    async fn run_batch(&mut self, batch: &mut Vec<(Event, Instant)>) {
        let mut ran: Vec<Ran> = Vec::with_capacity(batch.len());
        let running = self.rt.components.guest_running();
        for (event, dequeued) in batch.drain(..) {
            let arrived = match &event {
                Event::Socket(SocketEvent::Message { at, .. }) => *at,
                _ => dequeued,
            };
            ran.push(self.run_event(event, arrived).await);
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
                for r in ran {
                    self.release(r.outbox);
                    r.pending.send();
                }
                if std::mem::take(&mut self.refill) {
                    super::warm::refill(&self.rt, &self.id.class);
                }
            }
            Err(source) => {
                tracing::error!(object = %self.id, error = %Report(&source), "commit failed; dropping the batch's output");
                let failure = EventError::Commit {
                    object: self.id.clone(),
                    source,
                };
                self.drop_instance();
                for r in ran {
                    r.pending.fail(failure.clone());
                    // The upgrade will not happen: forget the socket.
                    if let Some(id) = r.accepted {
                        self.forget_socket(id);
                    }
                }
            }
        }
    }

    /// Runs an operator's request as one event of the object (see
    /// `objects::admin`).
    fn run_admin(&mut self, op: AdminOp) -> Ran {
        let id = self.id.clone();
        let Some(core) = self.core_mut() else {
            return Ran::nothing(); // dropping `op` tells the operator
        };
        match op {
            AdminOp::Sockets(reply) => {
                let now = crate::clock::now_ms();
                let list = core
                    .sockets
                    .open()
                    .map(|e| SocketInfo {
                        id: e.conn.id(),
                        tags: e.tags.clone(),
                        attachment: e.attachment.as_deref().map(|a| Shown::new(a, 0)),
                        peer: e.conn.peer().map(|p| p.to_string()),
                        age_ms: now.saturating_sub(e.conn.opened_ms()),
                    })
                    .collect();
                let _ = reply.send(list);
                Ran::nothing()
            }
            AdminOp::Import {
                entries,
                overwrite,
                reply,
            } => {
                let written = import(&mut core.storage, entries, overwrite);
                core.storage.end_event(written.is_ok());
                match written {
                    Ok(n) => {
                        // The instance may hold what it read before: start afresh.
                        self.drop_instance();
                        tracing::info!(object = %id, keys = n, overwrite, "keys imported by the operator");
                        Ran::answer(Pending::Admin(Box::new(move |failed| {
                            let _ = reply.send(match failed {
                                None => Ok(n),
                                Some(e) => Err(e.into()),
                            });
                        })))
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        Ran::nothing()
                    }
                }
            }
            AdminOp::Delete { by, reply } => {
                let conns: Vec<_> = core.sockets.open().map(|e| e.conn.clone()).collect();
                let before = (core.storage.usage(), core.storage.alarm());
                let (bytes, alarm) = match before {
                    (Ok(b), Ok(a)) => (b, a),
                    (Err(e), _) | (_, Err(e)) => {
                        core.storage.end_event(false);
                        let _ = reply.send(Err(e.into()));
                        return Ran::nothing();
                    }
                };
                core.storage.delete_all();
                core.storage.set_alarm(None);
                core.storage.end_event(true);
                let deleted = Deleted {
                    sockets_closed: conns.len(),
                    bytes_deleted: bytes,
                    alarm_ms: alarm,
                };
                let outbox = conns
                    .into_iter()
                    .map(|c| Output::Close(c, 1012, "object deleted by the operator".into()))
                    .collect();
                self.drop_instance();
                Ran {
                    outbox,
                    pending: Pending::Admin(Box::new(move |failed| match failed {
                        None => {
                            tracing::warn!(object = %id, by = %by, sockets = deleted.sockets_closed,
                                bytes = deleted.bytes_deleted,
                                "{id} deleted by {by}: {} sockets closed with 1012, {} bytes of storage and its alarm removed",
                                deleted.sockets_closed, deleted.bytes_deleted);
                            let _ = reply.send(Ok(deleted));
                        }
                        Some(e) => {
                            let _ = reply.send(Err(e.into()));
                        }
                    })),
                    accepted: None,
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
    async fn run_event(&mut self, event: Event, arrived: Instant) -> Ran {
        let event = match event {
            Event::Admin(op) => return self.run_admin(*op),
            other => other,
        };
        let closed = match &event {
            Event::Socket(SocketEvent::Closed { id, .. }) => Some(*id),
            _ => None,
        };
        let ran = self.run_guest(event, arrived).await;
        if let Some(id) = closed {
            // The guest has seen the close: the socket is gone for good.
            self.forget_socket(id);
        }
        ran
    }

    /// False for events that need no guest: those for sockets that are
    /// already gone, and alarms deleted or moved since they were scheduled.
    fn wants(&mut self, event: &Event) -> bool {
        let Some(core) = self.core_mut() else {
            return false;
        };
        match event {
            Event::Socket(e) => core.sockets.get(e.socket()).is_some(),
            Event::Alarm { .. } => {
                let due = core.storage.alarm().ok().flatten();
                due.is_some_and(|at| at <= crate::clock::now_ms())
            }
            Event::Request { .. } | Event::Call { .. } | Event::Admin(_) => true,
        }
    }

    /// Gives the event to the guest — creating the instance and running
    /// `init` first if there is none — and ends its transaction.
    async fn run_guest(&mut self, event: Event, arrived: Instant) -> Ran {
        if !self.wants(&event) {
            return Ran::nothing();
        }
        // An upgrade over the socket cap is refused without waking the guest.
        let max = self.rt.config.limits.max_sockets_per_object;
        if matches!(
            &event,
            Event::Request {
                socket: Some(_),
                ..
            }
        ) && self.core_mut().is_some_and(|c| c.sockets.len() >= max)
        {
            self.rt.metrics.refused_socket_per_object();
            let e = EventError::TooManySockets {
                object: self.id.clone(),
                max,
            };
            return Ran::answer(Pending::failed(event, e));
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
        // After a long event the actor may still be on the long lane: a new
        // event starts on the tokio workers.
        crate::lane::home().await;
        self.follow_version();
        let fresh = matches!(self.state, State::Parked(_));
        if let Err(e) = self.instantiate().await {
            tracing::error!(object = %self.id, error = %Report(&e), "cannot create instance");
            return Ran::answer(Pending::failed(event, e));
        };
        let State::Live(live) = &mut self.state else {
            let e = EventError::Unavailable(self.id.clone());
            return Ran::answer(Pending::failed(event, e));
        };
        // The deadline set at the last event's end has passed long ago.
        live.store.set_epoch_deadline(1);
        let ctx = live.store.data_mut();
        ctx.chain = chain;
        ctx.clock.start();
        ctx.outbox.clear();
        // What the guest writes to stderr now is logged when the event
        // returns, or reported with the trap.
        ctx.stderr.capture();
        let handler = live.object.roomhost_object_handler();
        let what = event.handler_name();
        let init = if fresh {
            handler.call_init(&mut live.store).await
        } else {
            Ok(())
        };
        if fresh && self.evicted {
            self.evicted = false;
            self.rt.metrics.woke();
            self.rt.metrics.wake_latency.record(arrived.elapsed());
        }
        let (outcome, what) = match init {
            Ok(()) => (
                dispatch(&mut live.store, handler, &self.id, event).await,
                what,
            ),
            Err(error) => {
                let alarm_retry = match &event {
                    Event::Alarm { retry } => Some(*retry),
                    _ => None,
                };
                let answer = |e| Pending::failed(event, e);
                (
                    Outcome::trapped(&self.id, error, answer, alarm_retry),
                    "init",
                )
            }
        };
        self.finish(outcome, what)
    }

    /// Ends the running event's transaction: kept when the guest returned,
    /// rolled back (with the instance dropped) when it trapped. `what` is the
    /// export that ran last (`init` when it trapped there).
    fn finish(&mut self, outcome: Outcome, what: &str) -> Ran {
        let State::Live(live) = &mut self.state else {
            return Ran::nothing();
        };
        let ctx = live.store.data_mut();
        let (_, long) = ctx.clock.finish();
        if long {
            self.rt.metrics.long_event();
        }
        match outcome {
            Outcome::Done { pending, accepted } => {
                ctx.core.storage.end_event(true);
                ctx.core.sockets.keep_changes();
                ctx.stderr.release();
                let outbox = std::mem::take(&mut ctx.outbox);
                self.rt.metrics.event_ran(false);
                live.version.stats.ran(false);
                let accepted = accepted.map(|conn| {
                    self.rt.metrics.socket_accepted();
                    self.rt.metrics.socket_opened();
                    conn.id()
                });
                Ran {
                    outbox,
                    pending,
                    accepted,
                }
            }
            Outcome::Trapped {
                error,
                pending,
                alarm_retry,
            } => {
                ctx.core.storage.end_event(false);
                ctx.core.sockets.undo_changes();
                ctx.outbox.clear();
                let stderr = ctx.stderr.take();
                self.rt.metrics.event_ran(true);
                live.version.stats.ran(true);
                let failure = match &error {
                    EventError::Trap { source, .. } => {
                        if source.downcast_ref::<OverBudget>().is_some() {
                            self.rt.metrics.event_over_budget();
                        }
                        GuestFailure::new(source, stderr)
                    }
                    other => GuestFailure::new(&wasmtime::Error::msg(other.to_string()), stderr),
                };
                pending.send();
                let (next, gave_up) = match alarm_retry {
                    Some(retry) => self.alarm_failed(retry),
                    None => (String::new(), false),
                };
                // One entry per trap: the panic (or cause), the guest's other
                // stderr lines, the backtrace.
                let (id, summary, details) = (&self.id, &failure.summary, failure.details());
                self.rt.traps.record(id, what, summary);
                if gave_up {
                    tracing::error!(target: "roomhost::guest", object = %id, event = what,
                        "{id}: {what} trapped: {summary}; its writes and output were discarded{next}{details}");
                } else {
                    tracing::warn!(target: "roomhost::guest", object = %id, event = what,
                        "{id}: {what} trapped: {summary}; its writes and output were discarded{next}{details}");
                }
                // A trap poisons the instance: start afresh on the next event.
                self.drop_instance();
                Ran::nothing()
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

/// An import's writes, in the running event: all or none.
fn import(
    storage: &mut crate::storage::ObjectStorage,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    overwrite: bool,
) -> Result<usize, AdminError> {
    if !overwrite {
        let mut exist = 0;
        let mut first = None;
        for (k, _) in &entries {
            if storage.get(k)?.is_some() {
                exist += 1;
                first.get_or_insert_with(|| String::from_utf8_lossy(k).into_owned());
            }
        }
        if let Some(first) = first {
            return Err(AdminError::KeysExist {
                count: exist,
                first,
            });
        }
    }
    let n = entries.len();
    storage.put_many(entries).map_err(|e| match e {
        crate::storage::WriteError::QuotaExceeded(q) => AdminError::QuotaExceeded(q),
        crate::storage::WriteError::Storage(e) => AdminError::Storage(e),
    })?;
    Ok(n)
}

/// Calls the guest's handler for one event.
async fn dispatch(
    store: &mut Store<ObjectCtx>,
    handler: &Handler,
    id: &ObjectId,
    event: Event,
) -> Outcome {
    let nobody = |_| Pending::Nothing;
    let done = |pending| Outcome::Done {
        pending,
        accepted: None,
    };
    match event {
        Event::Request {
            request,
            socket,
            reply,
        } => on_request(store, handler, id, &request, socket, reply).await,
        Event::Socket(SocketEvent::Message {
            id: socket, frame, ..
        }) => {
            match handler
                .call_on_socket_message(&mut *store, socket, &frame)
                .await
            {
                Ok(()) => done(Pending::Nothing),
                Err(e) => Outcome::trapped(id, e, nobody, None),
            }
        }
        Event::Socket(SocketEvent::Closed {
            id: socket,
            code,
            reason,
        }) => {
            match handler
                .call_on_socket_close(&mut *store, socket, code, &reason)
                .await
            {
                Ok(()) => done(Pending::Nothing),
                Err(e) => Outcome::trapped(id, e, nobody, None),
            }
        }
        Event::Alarm { retry } => match handler.call_on_alarm(&mut *store, retry).await {
            Ok(()) => {
                let storage = &mut store.data_mut().core.storage;
                if !storage.event_touched_alarm() {
                    // Delivered: the alarm is cleared with this event.
                    storage.set_alarm(None);
                }
                done(Pending::Nothing)
            }
            Err(e) => Outcome::trapped(id, e, nobody, Some(retry)),
        },
        Event::Call { call, reply, .. } => {
            match handler.call_on_call(&mut *store, &call.0, &call.1).await {
                Ok(r) => done(Pending::Call(reply, Ok(r))),
                Err(e) => Outcome::trapped(id, e, |e| Pending::Call(reply, Err(e)), None),
            }
        }
        // Run by the actor itself (`run_admin`), never by the guest.
        Event::Admin(_) => done(Pending::Nothing),
    }
}

/// `on-request`: a plain response, or a WebSocket the guest accepts.
async fn on_request(
    store: &mut Store<ObjectCtx>,
    handler: &Handler,
    id: &ObjectId,
    request: &Request,
    socket: Option<Arc<SocketConn>>,
    reply: ReplyTo<Reply>,
) -> Outcome {
    store.data_mut().pending_socket = socket.clone();
    let called = handler.call_on_request(&mut *store, request).await;
    store.data_mut().pending_socket = None;
    let r = match called {
        Ok(r) => r,
        Err(e) => return Outcome::trapped(id, e, |e| Pending::Reply(reply, Err(e)), None),
    };
    let broken = |message: &str| EventError::trap(id, wasmtime::Error::msg(message.to_string()));
    let (r, accepted) = match (r, socket) {
        (Reply::AcceptWebsocket(accept), Some(conn)) => {
            match accept_socket(store.data_mut(), &conn, &accept) {
                Ok(()) => (Ok(Reply::AcceptWebsocket(accept)), Some(conn)),
                Err(message) => (Err(broken(&message)), None),
            }
        }
        (Reply::AcceptWebsocket(_), None) => (
            Err(broken(
                "accepted a WebSocket on a request that is not an upgrade",
            )),
            None,
        ),
        (r, _) => (Ok(r), None),
    };
    Outcome::Done {
        pending: Pending::Reply(reply, r),
        accepted,
    }
}

/// Registers an accepted socket in the table (undone if the event traps).
fn accept_socket(
    ctx: &mut ObjectCtx,
    conn: &Arc<SocketConn>,
    accept: &Accept,
) -> Result<(), String> {
    let limits = ctx.rt.config.limits.sockets();
    crate::sockets::validate_tags(&accept.tags, &limits)
        .map_err(|e| format!("invalid accept: {e:?}"))?;
    crate::sockets::validate_attachment(&accept.attachment, &limits)
        .map_err(|e| format!("invalid accept: {e:?}"))?;
    conn.use_auto_response(ctx.core.auto.clone());
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

    /// Answers with the event's result.
    fn send(self) {
        match self {
            Pending::Reply(tx, r) => {
                let _ = tx.send(r);
            }
            Pending::Call(tx, r) => {
                let _ = tx.send(r);
            }
            Pending::Admin(f) => f(None),
            Pending::Nothing => {}
        }
    }

    /// Answers with `e` instead of the event's result.
    fn fail(self, e: EventError) {
        match self {
            Pending::Reply(tx, _) => Pending::Reply(tx, Err(e)),
            Pending::Call(tx, _) => Pending::Call(tx, Err(e)),
            Pending::Admin(f) => {
                f(Some(e));
                Pending::Nothing
            }
            Pending::Nothing => Pending::Nothing,
        }
        .send();
    }
}
