//! The `sockets` interface for guests: a [`SocketsView`] over one object's
//! [`SocketTable`], the running event's [`Outbox`] and the object's
//! auto-response pair. Frames and closes go to the outbox (released once the
//! event is durable); tag, attachment and close changes are recorded so that a
//! trap undoes them.

use std::sync::Arc;

use super::frames::encode_guest_frame;
use super::{
    AutoResponse, Outbox, Output, SocketConn, SocketId, SocketLimits, SocketTable, Undo,
    validate_attachment, validate_tags,
};
use crate::bindings::Frame;
use crate::bindings::roomhost::object::sockets::{self as wit, Host, SocketError};

/// What a guest's `sockets` calls work on.
pub struct SocketsView<'a> {
    /// The object's sockets.
    pub table: &'a mut SocketTable,
    /// The running event's gated output.
    pub outbox: &'a mut Outbox,
    /// The socket the running request would create if the guest accepts the
    /// upgrade: the guest may already send to it (delivered once the upgrade
    /// completes).
    pub pending: Option<&'a Arc<SocketConn>>,
    /// The object's auto-response pair, shared with its connections.
    pub auto: &'a AutoResponse,
    /// Tag, attachment and auto-response sizes (`[limits]`).
    pub limits: SocketLimits,
}

crate::bindings::link_view!(SocketsView, wit, "sockets");

impl Host for SocketsView<'_> {
    fn send(&mut self, id: SocketId, frame: Frame) -> Result<(), SocketError> {
        let conn = match self.table.get(id) {
            Some(entry) => entry.conn.clone(),
            // The socket this very request is about to accept.
            None => self
                .pending
                .filter(|c| c.id() == id)
                .ok_or(SocketError::NotFound)?
                .clone(),
        };
        self.outbox
            .push(Output::One(conn, encode_guest_frame(&frame)));
        Ok(())
    }

    fn broadcast(&mut self, frame: Frame, tag: Option<String>, except: Vec<SocketId>) -> u32 {
        let to: Vec<Arc<SocketConn>> = self
            .table
            .live(tag.as_deref())
            .filter(|(id, _)| !except.contains(id))
            .map(|(_, e)| e.conn.clone())
            .collect();
        let n = to.len() as u32;
        if n > 0 {
            self.outbox
                .push(Output::Frame(to, encode_guest_frame(&frame)));
        }
        n
    }

    fn close(&mut self, id: SocketId, code: u16, reason: String) -> Result<(), SocketError> {
        if !(code == 1000
            || (3000..=4999).contains(&code)
            || matches!(code, 1001 | 1008 | 1009 | 1011))
        {
            return Err(SocketError::InvalidCloseCode(code));
        }
        let table = &mut *self.table;
        let entry = table.entry_mut(id)?;
        entry.closing = true;
        let conn = entry.conn.clone();
        table.undo.push(Undo::Closing(id));
        self.outbox.push(Output::Close(conn, code, reason));
        Ok(())
    }

    fn list(&mut self, tag: Option<String>) -> Vec<SocketId> {
        self.table.live(tag.as_deref()).map(|(id, _)| *id).collect()
    }

    fn tags(&mut self, id: SocketId) -> Result<Vec<String>, SocketError> {
        Ok(self
            .table
            .get(id)
            .ok_or(SocketError::NotFound)?
            .tags
            .clone())
    }

    fn set_tags(&mut self, id: SocketId, tags: Vec<String>) -> Result<(), SocketError> {
        validate_tags(&tags, &self.limits)?;
        let table = &mut *self.table;
        let old = std::mem::replace(&mut table.entry_mut(id)?.tags, tags);
        table.undo.push(Undo::Tags(id, old));
        Ok(())
    }

    fn attachment(&mut self, id: SocketId) -> Result<Option<Vec<u8>>, SocketError> {
        Ok(self
            .table
            .get(id)
            .ok_or(SocketError::NotFound)?
            .attachment
            .clone())
    }

    fn set_auto_response(&mut self, pair: Option<(String, String)>) -> Result<(), SocketError> {
        let max = self.limits.max_auto_response_bytes;
        if let Some((req, resp)) = &pair
            && (req.len() > max || resp.len() > max)
        {
            return Err(SocketError::AutoResponseTooLarge(
                u32::try_from(max).unwrap_or(u32::MAX),
            ));
        }
        self.auto.set(pair);
        Ok(())
    }

    fn get_auto_response(&mut self) -> Option<(String, String)> {
        self.auto.get()
    }

    fn auto_response_timestamp(&mut self, id: SocketId) -> Result<Option<u64>, SocketError> {
        let entry = self.table.get(id).ok_or(SocketError::NotFound)?;
        Ok(entry.conn.last_auto_response())
    }

    fn set_attachment(&mut self, id: SocketId, value: Option<Vec<u8>>) -> Result<(), SocketError> {
        validate_attachment(&value, &self.limits)?;
        let table = &mut *self.table;
        let old = std::mem::replace(&mut table.entry_mut(id)?.attachment, value);
        table.undo.push(Undo::Attachment(id, old));
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sockets::MAX_ATTACHMENT_BYTES;
    use crate::sockets::frames::OpCode;
    use crate::sockets::frames::encode_frame;

    /// One object's sockets, ids 1..=n, accepted by an earlier event.
    struct Object {
        table: SocketTable,
        outbox: Outbox,
        auto: AutoResponse,
    }

    impl Object {
        fn with_sockets(n: u64) -> Object {
            let mut table = SocketTable::default();
            for id in 1..=n {
                table.accept(SocketConn::new(id, 1 << 20), vec![format!("t{id}")], None);
            }
            table.keep_changes();
            Object {
                table,
                outbox: Vec::new(),
                auto: AutoResponse::default(),
            }
        }

        fn view(&mut self) -> SocketsView<'_> {
            SocketsView {
                table: &mut self.table,
                outbox: &mut self.outbox,
                pending: None,
                auto: &self.auto,
                limits: SocketLimits::default(),
            }
        }
    }

    #[test]
    fn tags_are_capped_in_number_and_length() {
        let mut o = Object::with_sockets(2);
        let mut v = o.view();
        let many: Vec<String> = (0..11).map(|i| format!("tag{i}")).collect();
        assert!(matches!(
            v.set_tags(1, many),
            Err(SocketError::InvalidTags(_))
        ));
        assert!(matches!(
            v.set_tags(1, vec![String::new()]),
            Err(SocketError::InvalidTags(_))
        ));
        assert!(matches!(
            v.set_tags(1, vec!["x".repeat(257)]),
            Err(SocketError::InvalidTags(_))
        ));
        // Refused changes leave the old tags.
        assert_eq!(v.tags(1).unwrap(), ["t1"]);
        let most: Vec<String> = (0..10).map(|i| format!("{i}").repeat(256)).collect();
        v.set_tags(1, most.clone()).unwrap();
        assert_eq!(v.tags(1).unwrap(), most);
        assert_eq!(v.list(Some("0".repeat(256))), [1]);
        assert_eq!(v.list(Some("t2".into())), [2]);
        assert_eq!(v.list(None), [1, 2]);
        assert!(matches!(v.tags(9), Err(SocketError::NotFound)));
    }

    #[test]
    fn attachments_over_2_kib_are_refused_and_the_old_one_kept() {
        let mut o = Object::with_sockets(1);
        let mut v = o.view();
        v.set_attachment(1, Some(vec![7; MAX_ATTACHMENT_BYTES]))
            .unwrap();
        assert_eq!(
            v.set_attachment(1, Some(vec![8; MAX_ATTACHMENT_BYTES + 1])),
            Err(SocketError::AttachmentTooLarge(2048))
        );
        assert_eq!(
            v.attachment(1).unwrap(),
            Some(vec![7; MAX_ATTACHMENT_BYTES])
        );
        v.set_attachment(1, None).unwrap();
        assert_eq!(v.attachment(1).unwrap(), None);
        assert_eq!(
            v.set_attachment(5, None),
            Err(SocketError::NotFound),
            "another object's socket, or a closed one"
        );
    }

    #[test]
    fn auto_response_texts_over_2_kib_are_refused() {
        let mut o = Object::with_sockets(1);
        let mut v = o.view();
        assert_eq!(v.get_auto_response(), None);
        v.set_auto_response(Some(("ping".into(), "pong".into())))
            .unwrap();
        let big = "x".repeat(MAX_ATTACHMENT_BYTES + 1);
        assert_eq!(
            v.set_auto_response(Some((big.clone(), "pong".into()))),
            Err(SocketError::AutoResponseTooLarge(2048))
        );
        assert_eq!(
            v.set_auto_response(Some(("ping".into(), big))),
            Err(SocketError::AutoResponseTooLarge(2048))
        );
        assert_eq!(
            v.get_auto_response(),
            Some(("ping".to_string(), "pong".to_string()))
        );
        // A long response (over 125 bytes: a longer frame header) reads back whole.
        let long = "y".repeat(MAX_ATTACHMENT_BYTES);
        v.set_auto_response(Some(("ping".into(), long.clone())))
            .unwrap();
        assert_eq!(v.get_auto_response(), Some(("ping".to_string(), long)));
        assert_eq!(v.auto_response_timestamp(1), Ok(None));
        v.set_auto_response(None).unwrap();
        assert_eq!(v.get_auto_response(), None);
    }

    #[test]
    fn frames_and_closes_wait_in_the_outbox() {
        let mut o = Object::with_sockets(3);
        let mut v = o.view();
        v.send(2, Frame::Text("hi".into())).unwrap();
        assert_eq!(
            v.send(9, Frame::Text("hi".into())),
            Err(SocketError::NotFound)
        );
        assert_eq!(v.broadcast(Frame::Text("all".into()), None, vec![1]), 2);
        assert_eq!(
            v.broadcast(Frame::Text("t3".into()), Some("t3".into()), vec![]),
            1
        );
        assert_eq!(
            v.broadcast(Frame::Text("none".into()), Some("zz".into()), vec![]),
            0
        );
        assert_eq!(
            v.close(1, 1005, String::new()),
            Err(SocketError::InvalidCloseCode(1005))
        );
        v.close(1, 4000, "bye".into()).unwrap();
        // A closing socket is no longer the guest's.
        assert_eq!(v.list(None), [2, 3]);
        assert_eq!(
            v.send(1, Frame::Text("late".into())),
            Err(SocketError::NotFound)
        );
        let out: Vec<String> = o
            .outbox
            .iter()
            .map(|out| match out {
                Output::One(c, b) => format!("one {} {:?}", c.id(), &b[..]),
                Output::Frame(to, b) => {
                    let ids: Vec<_> = to.iter().map(|c| c.id()).collect();
                    format!("frame {ids:?} {:?}", &b[..])
                }
                Output::Close(c, code, reason) => format!("close {} {code} {reason}", c.id()),
            })
            .collect();
        let text = |t: &str| format!("{:?}", &encode_frame(OpCode::Text, t.as_bytes())[..]);
        assert_eq!(
            out,
            [
                format!("one 2 {}", text("hi")),
                format!("frame [2, 3] {}", text("all")),
                format!("frame [3] {}", text("t3")),
                "close 1 4000 bye".to_string(),
            ]
        );
        // The socket the running request is about to accept can be sent to.
        let next = SocketConn::new(4, 1 << 20);
        let mut v = SocketsView {
            pending: Some(&next),
            ..o.view()
        };
        v.send(4, Frame::Binary(vec![1])).unwrap();
    }

    #[test]
    fn a_trap_undoes_tags_attachments_closes_and_accepts() {
        let mut o = Object::with_sockets(2);
        let mut v = o.view();
        v.set_tags(1, vec!["new".into()]).unwrap();
        v.set_attachment(1, Some(b"a".to_vec())).unwrap();
        v.close(2, 1000, String::new()).unwrap();
        o.table.accept(SocketConn::new(3, 1 << 20), vec![], None);
        o.table.undo_changes();
        let mut v = o.view();
        assert_eq!(v.list(None), [1, 2]);
        assert_eq!(v.tags(1).unwrap(), ["t1"]);
        assert_eq!(v.attachment(1).unwrap(), None);
        // Kept changes stay.
        v.set_tags(2, vec!["kept".into()]).unwrap();
        o.table.keep_changes();
        o.table.undo_changes();
        assert_eq!(o.view().tags(2).unwrap(), ["kept"]);
    }
}
