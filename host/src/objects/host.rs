//! The `objects`, `log` and `types` interfaces for guests.

use crate::bindings::WitObjectId;
use crate::bindings::roomhost::object::log::Level;
use crate::bindings::roomhost::object::objects::CallError;
use crate::bindings::roomhost::object::{log, objects, types};
use crate::error::EventError;
use crate::ids::{ObjectId, unique_id, validate_name};
use crate::objects::ObjectCtx;

/// The one place call failures become guest-visible errors.
fn to_wit(e: EventError) -> CallError {
    match e {
        EventError::NoSuchClass(c) => CallError::NoSuchClass(c),
        EventError::InvalidName(m) => CallError::InvalidName(m),
        EventError::Cycle(_) => CallError::Cycle,
        EventError::Timeout(_) => CallError::Timeout,
        other => CallError::Failed(other.to_string()),
    }
}

impl objects::Host for ObjectCtx {
    async fn call(
        &mut self,
        class: String,
        name: String,
        method: String,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, CallError> {
        validate_name(&name).map_err(CallError::InvalidName)?;
        let target = ObjectId::new(class, name);
        let rt = self.core.rt.clone();
        match rt.call(&target, method, payload, self.chain.clone()).await {
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
            class: self.core.id.class.clone(),
            name: self.core.id.name.clone(),
        }
    }
}

impl log::Host for ObjectCtx {
    fn log(&mut self, level: Level, message: String) {
        let object = &self.core.id;
        match level {
            Level::Trace => tracing::trace!(%object, "{message}"),
            Level::Debug => tracing::debug!(%object, "{message}"),
            Level::Info => tracing::info!(%object, "{message}"),
            Level::Warn => tracing::warn!(%object, "{message}"),
            Level::Error => tracing::error!(%object, "{message}"),
        }
    }
}

impl types::Host for ObjectCtx {}
