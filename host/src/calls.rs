//! The `objects` interface for guests: calls into other objects
//! (`objects.call`), fresh unique ids, and the object's own id.
//!
//! An [`ObjectsView`] reaches other objects only through [`ObjectCalls`],
//! which the object directory implements.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::bindings::WitObjectId;
use crate::bindings::roomhost::object::objects::{self as wit, CallError, Host};
use crate::budget::GuestClock;
use crate::error::EventError;
use crate::ids::{ObjectId, unique_id, validate_name};

/// What a call returns: the callee's answer (`Err`: it rejected the call), or
/// why the call could not be made.
pub type CallResult = Result<Result<Vec<u8>, String>, EventError>;

/// A call under way.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = CallResult> + Send + 'a>>;

/// Calls `on-call` of other objects: the object directory.
pub trait ObjectCalls: Send + Sync {
    /// Calls `target` on behalf of the objects in `chain` (outermost first,
    /// the caller last) and waits for its answer.
    fn call(
        &self,
        target: ObjectId,
        method: String,
        payload: Vec<u8>,
        chain: Arc<Vec<ObjectId>>,
    ) -> CallFuture<'_>;
}

/// Refuses every call: for a store that is bound to no object (a deploy's
/// trial run of a new version's `init`).
pub struct NoCalls;

impl ObjectCalls for NoCalls {
    fn call(
        &self,
        target: ObjectId,
        _method: String,
        _payload: Vec<u8>,
        _chain: Arc<Vec<ObjectId>>,
    ) -> CallFuture<'_> {
        Box::pin(async move {
            Err(EventError::Refused {
                object: target,
                why: "no calls while a new version is tried out",
            })
        })
    }
}

/// What a guest's `objects` calls work on.
pub struct ObjectsView<'a> {
    /// The calling object.
    pub object: &'a ObjectId,
    /// The call chain of the running event (this object last).
    pub chain: &'a Arc<Vec<ObjectId>>,
    /// The running event's clock: stopped while the call waits.
    pub clock: &'a GuestClock,
    /// The other objects.
    pub calls: &'a dyn ObjectCalls,
}

crate::bindings::link_view!(ObjectsView, wit, "objects");

/// The one place call failures become guest-visible errors.
fn to_wit(e: EventError) -> CallError {
    match e {
        EventError::NoSuchClass(c) => CallError::NoSuchClass(c),
        EventError::InvalidName(m) => CallError::InvalidName(m),
        EventError::Cycle(_) => CallError::Cycle,
        EventError::Timeout(_) => CallError::Timeout,
        other => CallError::Failed(crate::error::Report(&other).to_string()),
    }
}

impl Host for ObjectsView<'_> {
    async fn call(
        &mut self,
        class: String,
        name: String,
        method: String,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, CallError> {
        validate_name(&name).map_err(CallError::InvalidName)?;
        let target = ObjectId::new(class, name);
        // Waiting for the callee is not this guest's time, and a long event
        // must not hold the long lane while its callee needs it.
        self.clock.pause();
        let answer = self
            .calls
            .call(target, method, payload, self.chain.clone())
            .await;
        self.clock.resume();
        match answer {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(message)) => Err(CallError::Rejected(message)),
            Err(e) => Err(to_wit(e)),
        }
    }

    fn unique_id(&mut self) -> String {
        unique_id()
    }

    fn self_id(&mut self) -> WitObjectId {
        WitObjectId {
            class: self.object.class.clone(),
            name: self.object.name.clone(),
        }
    }
}
