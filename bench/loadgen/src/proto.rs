//! The chat protocol as the load generator sees it: the frames it sends, a
//! cheap classification of the frames it receives (one borrowed
//! `serde_json::from_str`, no `Value` tree), and the stamp it embeds in every
//! message text: `t=<ns since the process epoch>;s=<sender id>;n=<seq>`.
//!
//! All clients live in one process, so one `Instant` epoch is shared and
//! receive − send is a true one-way latency.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Instant;

use serde::Deserialize;

/// The substring of the host's rate-limit error.
pub const RATE_LIMITED: &str = "rate-limited";

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The process-wide time base of every stamp.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
#[inline]
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// What a message text carries: when it was sent, by whom, which one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Send time, ns since [`epoch`].
    pub t_ns: u64,
    /// The sending client's id.
    pub sender: u32,
    /// The sender's sequence number (or the round, in `wake`).
    pub seq: u32,
}

impl Stamp {
    /// `t=<t>;s=<sender>;n=<seq>` (at most 50 characters, no JSON escaping
    /// needed).
    pub fn encode(&self) -> String {
        format!("t={};s={};n={}", self.t_ns, self.sender, self.seq)
    }

    /// Parses [`Stamp::encode`]'s output; `None` for anything else. (A
    /// hand-rolled scan: this runs once per received frame.)
    pub fn decode(text: &str) -> Option<Stamp> {
        let b = text.as_bytes();
        let (t_ns, i) = digits(b, 2, b"t=")?;
        let (sender, i) = digits(b, i + 3, b";s=")?;
        let (seq, i) = digits(b, i + 3, b";n=")?;
        if i != b.len() {
            return None;
        }
        Some(Stamp {
            t_ns,
            sender: u32::try_from(sender).ok()?,
            seq: u32::try_from(seq).ok()?,
        })
    }

    /// The whole frame: `{"message":"t=..;s=..;n=.."}`.
    pub fn message_frame(&self) -> String {
        format!(
            "{{\"message\":\"t={};s={};n={}\"}}",
            self.t_ns, self.sender, self.seq
        )
    }
}

/// Checks that `b[start - tag.len()..start]` is `tag`, then parses the
/// decimal digits from `start`; returns the number and the index after it.
fn digits(b: &[u8], start: usize, tag: &[u8]) -> Option<(u64, usize)> {
    if b.get(start.checked_sub(tag.len())?..start)? != tag {
        return None;
    }
    let mut v: u64 = 0;
    let mut i = start;
    while let Some(&c) = b.get(i) {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        i += 1;
    }
    (i > start).then_some((v, i))
}

/// The joining frame `{"name":"<name>"}`.
pub fn name_frame(name: &str) -> String {
    serde_json::json!({ "name": name }).to_string()
}

/// A received frame, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// `{"name","message","timestamp"}`: the message text.
    Chat(Cow<'a, str>),
    /// `{"joined": X}`.
    Joined,
    /// `{"quit": X}`.
    Quit,
    /// `{"ready": true}`.
    Ready,
    /// `{"error": text}`.
    Error(Cow<'a, str>),
    /// Anything else (not JSON, `pong`, unknown shapes).
    Other,
}

/// A string borrowed from the frame when it has no escapes, else owned
/// (serde's own `Cow<str>` always allocates inside an `Option`).
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// The fields we look at; everything else (`name`, `timestamp`) is skipped.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    message: Option<Text<'a>>,
    #[serde(borrow, default)]
    error: Option<Text<'a>>,
    #[serde(default)]
    ready: Option<bool>,
    #[serde(default)]
    joined: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    quit: Option<serde::de::IgnoredAny>,
}

/// The fast path for the frame that dominates every run, a broadcast
/// `{"name":"…","message":"…","timestamp":N}` (the room's wire order) whose
/// strings have no escapes: slices the message out without a parser. `None`
/// means "not exactly that shape", and the caller parses properly.
fn chat_fast(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("{\"name\":\"")?;
    let end = rest.find(['"', '\\'])?;
    let rest = rest[end..].strip_prefix("\",\"message\":\"")?;
    let end = rest.find(['"', '\\'])?;
    let (message, tail) = rest.split_at(end);
    let ts = tail.strip_prefix("\",\"timestamp\":")?.strip_suffix('}')?;
    (!ts.is_empty() && ts.bytes().all(|c| c.is_ascii_digit())).then_some(message)
}

/// Classifies a text frame from the chat room.
pub fn classify(text: &str) -> Incoming<'_> {
    if let Some(m) = chat_fast(text) {
        return Incoming::Chat(Cow::Borrowed(m));
    }
    let Ok(f) = serde_json::from_str::<Fields<'_>>(text) else {
        return Incoming::Other;
    };
    if let Some(m) = f.message {
        Incoming::Chat(m.0)
    } else if let Some(e) = f.error {
        Incoming::Error(e.0)
    } else if f.ready == Some(true) {
        Incoming::Ready
    } else if f.joined.is_some() {
        Incoming::Joined
    } else if f.quit.is_some() {
        Incoming::Quit
    } else {
        Incoming::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trip() {
        let s = Stamp {
            t_ns: u64::MAX,
            sender: u32::MAX,
            seq: 7,
        };
        let text = s.encode();
        assert!(text.len() <= 256);
        assert_eq!(Stamp::decode(&text), Some(s));
        let s = Stamp {
            t_ns: 123_456_789,
            sender: 42,
            seq: 0,
        };
        assert_eq!(s.encode(), "t=123456789;s=42;n=0");
        assert_eq!(Stamp::decode("t=123456789;s=42;n=0"), Some(s));
    }

    #[test]
    fn foreign_texts_are_not_stamps() {
        for t in [
            "",
            "hello",
            "t=1;s=2",
            "t=x;s=2;n=3",
            "t=1;s=2;n=3;extra",
            "t=-1;s=2;n=3",
            "s=2;t=1;n=3",
        ] {
            assert_eq!(Stamp::decode(t), None, "{t:?}");
        }
    }

    #[test]
    fn message_frame_is_valid_json_carrying_the_stamp() {
        let s = Stamp {
            t_ns: 99,
            sender: 3,
            seq: 4,
        };
        let v: serde_json::Value = serde_json::from_str(&s.message_frame()).expect("valid JSON");
        assert_eq!(v["message"], "t=99;s=3;n=4");
        let v: serde_json::Value = serde_json::from_str(&name_frame("a\"b")).expect("JSON");
        assert_eq!(v["name"], "a\"b");
    }

    #[test]
    fn classify_every_host_frame() {
        let chat = r#"{"name":"c1","message":"t=5;s=1;n=2","timestamp":1700000000000}"#;
        match classify(chat) {
            Incoming::Chat(m) => {
                assert!(matches!(m, Cow::Borrowed(_)), "no allocation");
                assert_eq!(
                    Stamp::decode(&m),
                    Some(Stamp {
                        t_ns: 5,
                        sender: 1,
                        seq: 2
                    })
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(classify(r#"{"joined":"c2"}"#), Incoming::Joined);
        assert_eq!(classify(r#"{"quit":"c2"}"#), Incoming::Quit);
        assert_eq!(classify(r#"{"ready":true}"#), Incoming::Ready);
        assert_eq!(
            classify(r#"{"error":"Your IP is being rate-limited, please try again later."}"#),
            Incoming::Error(Cow::Borrowed(
                "Your IP is being rate-limited, please try again later."
            ))
        );
        assert_eq!(classify("pong"), Incoming::Other);
        assert_eq!(classify("{}"), Incoming::Other);
        assert_eq!(classify(r#"{"joined":{"odd":1}}"#), Incoming::Joined);
        match classify(r#"{"name":"x","message":"with \"escapes\"","timestamp":1}"#) {
            Incoming::Chat(m) => assert_eq!(m, "with \"escapes\""),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fast_path_agrees_with_the_parser() {
        let cases = [
            r#"{"name":"c1","message":"t=5;s=1;n=2","timestamp":1700000000000}"#,
            r#"{"name":"c1","message":"","timestamp":1}"#,
            r#"{"name":"","message":"x","timestamp":1}"#,
            r#"{"name":"a\"b","message":"x","timestamp":1}"#,
            r#"{"name":"a","message":"x\"y","timestamp":1}"#,
            r#"{"name":"a","message":"x","timestamp":1,"extra":2}"#,
            r#"{"name":"a","message":"x","timestamp":}"#,
            r#"{"message":"x","name":"a","timestamp":1}"#,
            r#"{"name":"a","message":5,"timestamp":1}"#,
        ];
        for c in cases {
            let parsed = serde_json::from_str::<Fields<'_>>(c)
                .ok()
                .and_then(|f| f.message)
                .map(|m| m.0.into_owned());
            if let Some(fast) = chat_fast(c) {
                assert_eq!(Some(fast.to_string()), parsed, "{c}");
            }
            match classify(c) {
                Incoming::Chat(m) => assert_eq!(Some(m.into_owned()), parsed, "{c}"),
                _ => assert_eq!(parsed, None, "{c}"),
            }
        }
        assert_eq!(chat_fast(cases[0]), Some("t=5;s=1;n=2"));
        assert_eq!(chat_fast(cases[3]), None, "escapes go to the parser");
    }

    #[test]
    fn clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}
