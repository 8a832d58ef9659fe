//! The `roomhost:object` world, generated once for the host by `bindgen!`.
//! Every host capability implements the `Host` trait of its interface on a
//! view type of its own, in its own module, and links it with its own
//! `add_to_linker` (see [`crate::components::link`]).

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "object",
    path: "../wit",
    imports: {
        // The only import that waits: a call into another object.
        "roomhost:object/objects.call": async,
    },
    exports: { default: async },
    // Host errors are compared in the capabilities' unit tests.
    additional_derives: [PartialEq],
});

pub use self::roomhost::object::types::{
    Accept, Frame, ObjectId as WitObjectId, Reply, Request, Response,
};

/// Gives a capability module its `add_to_linker`, over its view type: the
/// `HasData` marker that tells wasmtime what the interface's `Host` impl
/// borrows, and the function that links the interface with a getter from the
/// store's data to the view.
macro_rules! link_view {
    ($view:ident, $wit:ident, $interface:literal) => {
        struct HasView;

        impl wasmtime::component::HasData for HasView {
            type Data<'a> = $view<'a>;
        }

        #[doc = concat!("Links the `", $interface, "` interface; `view` builds the view from the store's data.")]
        pub fn add_to_linker<T: Send + 'static>(
            linker: &mut wasmtime::component::Linker<T>,
            view: fn(&mut T) -> $view<'_>,
        ) -> wasmtime::Result<()> {
            $wit::add_to_linker::<T, HasView>(linker, view)
        }
    };
}
pub(crate) use link_view;
