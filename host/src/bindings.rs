//! The `roomhost:object` world, generated once for the host by `bindgen!`.
//! Every host capability implements the `Host` trait of its interface on
//! [`crate::objects::ObjectCtx`] in its own module.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "object",
    path: "../wit",
    imports: {
        // The only import that waits: a call into another object.
        "roomhost:object/objects.call": async,
    },
    exports: { default: async },
});

pub use self::roomhost::object::types::{
    Accept, Frame, ObjectId as WitObjectId, Reply, Request, Response,
};
