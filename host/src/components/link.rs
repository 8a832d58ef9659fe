//! The linker: every host capability, each linked through its own
//! `add_to_linker` over a view of the store's data.
//!
//! The store's data type says how to build each view ([`Capabilities`]); the
//! capabilities themselves know nothing of objects.

use wasmtime::Engine;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::WasiView;

use crate::alarms::AlarmsView;
use crate::bindings::roomhost::object::types;
use crate::calls::ObjectsView;
use crate::guest_log::LogView;
use crate::sockets::SocketsView;
use crate::storage::StorageView;
use crate::upgrade::VersionsView;

/// A store's data that can hand each host capability its view.
pub trait Capabilities: WasiView + Send + 'static {
    /// The object's storage (`storage`).
    fn storage(&mut self) -> StorageView<'_>;
    /// The object's sockets and the event's output (`sockets`).
    fn sockets(&mut self) -> SocketsView<'_>;
    /// The object's alarm (`alarms`).
    fn alarms(&mut self) -> AlarmsView<'_>;
    /// Calls to other objects (`objects`).
    fn objects(&mut self) -> ObjectsView<'_>;
    /// The object's log (`log`).
    fn log(&mut self) -> LogView<'_>;
    /// The running version and the data's (`versions`).
    fn versions(&mut self) -> VersionsView<'_>;
}

/// The `types` interface declares types only: its host side holds nothing.
struct Types;

impl types::Host for Types {}

impl HasData for Types {
    type Data<'a> = Types;
}

/// A linker with WASI (as std needs it; see `objects::ctx`) and every
/// `roomhost:object` import.
pub fn linker<T: Capabilities>(engine: &Engine) -> wasmtime::Result<Linker<T>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    types::add_to_linker::<T, Types>(&mut linker, |_| Types)?;
    crate::storage::add_to_linker(&mut linker, T::storage)?;
    crate::sockets::add_to_linker(&mut linker, T::sockets)?;
    crate::alarms::add_to_linker(&mut linker, T::alarms)?;
    crate::calls::add_to_linker(&mut linker, T::objects)?;
    crate::guest_log::add_to_linker(&mut linker, T::log)?;
    crate::upgrade::add_to_linker(&mut linker, T::versions)?;
    Ok(linker)
}
