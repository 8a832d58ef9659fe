//! # command — a `wasi:cli` command, not a room object
//!
//! A component of another world: deploying it as a class must be refused
//! with a message that says what it lacks.

fn main() {
    println!("hello from a wasi:cli command");
}
