//! Unit tests on the SDK's in-memory host: no host, no wasm build, and the
//! host's semantics (transactions, hibernation) all the same.

use roomhost_sdk::testing::TestObject;
use serde_json::{Value, json};

use super::Counter;

fn value(response: roomhost_sdk::Response) -> (u16, Value) {
    let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, body)
}

#[test]
fn increments_add_up_and_survive_an_eviction() {
    let mut c = TestObject::<Counter>::new("counter", "c");
    assert_eq!(value(c.post("/counter/c/increment", b"")), (200, json!({"value": 1})));
    assert_eq!(value(c.post("/counter/c/increment?by=5", b"")), (200, json!({"value": 6})));
    // The host drops idle instances; storage stays and init reads it back.
    c.evict();
    assert_eq!(value(c.get("/counter/c/value")), (200, json!({"value": 6})));
    assert_eq!(c.instances(), 2);
}

#[test]
fn watchers_hear_every_change() {
    let mut c = TestObject::<Counter>::new("counter", "c");
    let watcher = c.connect("/counter/c/watch");
    c.post("/counter/c/increment", b"");
    c.post("/counter/c/increment", b"");
    assert_eq!(
        c.received_json(watcher),
        [json!({"value": 0}), json!({"value": 1}), json!({"value": 2})]
    );
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let mut c = TestObject::<Counter>::new("counter", "c");
    assert_eq!(c.post("/counter/c/increment?by=two", b"").status, 400);
    assert_eq!(c.get("/counter/c/nothing").status, 404);
    c.post(&format!("/counter/c/increment?by={}", i64::MAX), b"");
    assert_eq!(c.post("/counter/c/increment", b"").status, 400);
    assert_eq!(c.stored::<i64>("value"), Some(i64::MAX));
}
