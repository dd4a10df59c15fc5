//! A participant's signalling socket as the relay sees it: an [`Outbox`] the relay queues
//! messages in, in order, and the [`OutboxReader`] the socket's writer takes them from. A
//! client that stops reading is disconnected rather than left with a gap in what it was told.

use tokio::sync::{mpsc, watch};

/// The close code of a participant whose socket fell an [`Outbox`]'s capacity behind.
pub const CLOSE_TOO_SLOW: u16 = 4008;

/// What the relay sends a participant's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// A JSON message.
    Text(String),
    /// Close the socket with this code and reason.
    Close(u16, String),
}

/// The relay's side of a participant's signalling socket: messages wait, in order, for the
/// socket's writer ([`OutboxReader`]). No message is dropped while the participant is
/// connected: a client that stops reading until the queue is full is disconnected at once
/// ([`CLOSE_TOO_SLOW`]) rather than left in the call with a gap in what it was told (a roster,
/// an offer, the end), and a close the relay asks for comes after the messages queued before
/// it. Neither close can fail, full queue or not.
pub struct Outbox {
    queue: mpsc::Sender<String>,
    close: watch::Sender<Option<Closing>>,
}

/// The socket writer's side of an [`Outbox`].
pub struct OutboxReader {
    queue: mpsc::Receiver<String>,
    close: watch::Receiver<Option<Closing>>,
}

#[derive(Debug, Clone)]
struct Closing {
    code: u16,
    reason: String,
    /// Before the messages still queued (the queue overflowed), not after them.
    at_once: bool,
}

/// An outbox for at most `capacity` waiting messages, and its reader.
pub fn outbox(capacity: usize) -> (Outbox, OutboxReader) {
    let (tx, rx) = mpsc::channel(capacity);
    let (close_tx, close_rx) = watch::channel(None);
    (
        Outbox {
            queue: tx,
            close: close_tx,
        },
        OutboxReader {
            queue: rx,
            close: close_rx,
        },
    )
}

impl Outbox {
    /// Queues a message; once the socket is being closed, nothing more is. A full queue closes
    /// the socket with [`CLOSE_TOO_SLOW`]: the client rejoins, and is then told the visit as it
    /// is.
    pub fn send(&self, text: String) {
        if self.close.borrow().is_some() {
            return;
        }
        match self.queue.try_send(text) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.close_with(Closing {
                code: CLOSE_TOO_SLOW,
                reason:
                    "too slow: the visit's messages were not read in time; rejoin from your link"
                        .into(),
                at_once: true,
            }),
            // The socket's writer has ended: the participant is leaving.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Closes the socket with `code` once the messages queued before are written. The first
    /// close asked for is the one sent.
    pub fn close(&self, code: u16, reason: &str) {
        self.close_with(Closing {
            code,
            reason: reason.to_owned(),
            at_once: false,
        });
    }

    fn close_with(&self, closing: Closing) {
        self.close.send_if_modified(|c| {
            if c.is_some() {
                return false;
            }
            *c = Some(closing);
            true
        });
    }
}

impl OutboxReader {
    /// A queued message, if one is waiting now (for tests that read what was queued).
    #[cfg(test)]
    pub(crate) fn try_text(&mut self) -> Option<String> {
        self.queue.try_recv().ok()
    }

    /// What to write next: a queued message, or the close (after the messages queued before it,
    /// unless the queue overflowed). `None` when the outbox was dropped without a close.
    pub async fn recv(&mut self) -> Option<Out> {
        loop {
            let closing = self.close.borrow_and_update().clone();
            if let Some(c) = closing {
                if !c.at_once
                    && let Ok(text) = self.queue.try_recv()
                {
                    return Some(Out::Text(text));
                }
                return Some(Out::Close(c.code, c.reason));
            }
            tokio::select! {
                biased;
                text = self.queue.recv() => match text {
                    Some(text) => return Some(Out::Text(text)),
                    // The outbox is gone; a close asked for just before still counts.
                    None => {
                        return self.close.borrow().clone().map(|c| Out::Close(c.code, c.reason));
                    }
                },
                changed = self.close.changed() => {
                    if changed.is_err() && self.close.borrow().is_none() {
                        return self.queue.recv().await.map(Out::Text);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A close comes after the messages queued before it, full queue or not, and nothing is
    /// queued after it; an overflow closes at once, and the first close is the one sent.
    #[tokio::test]
    async fn a_close_follows_what_was_queued_and_cannot_be_lost() {
        let text = |t: &str| Some(Out::Text(t.to_owned()));
        let (out, mut reader) = outbox(2);
        out.send("a".into());
        out.send("b".into());
        out.close(4011, "kicked");
        out.send("c".into());
        drop(out);
        assert_eq!(reader.recv().await, text("a"));
        assert_eq!(reader.recv().await, text("b"));
        assert_eq!(reader.recv().await, Some(Out::Close(4011, "kicked".into())));

        let (out, mut reader) = outbox(1);
        out.send("a".into());
        out.send("b".into());
        out.close(1000, "the visit has ended");
        assert!(matches!(
            reader.recv().await,
            Some(Out::Close(CLOSE_TOO_SLOW, _))
        ));

        // A reader waiting on an empty queue wakes for a close.
        let (out, mut reader) = outbox(2);
        let waiting = tokio::spawn(async move { reader.recv().await });
        tokio::task::yield_now().await;
        out.close(1000, "the visit has ended");
        assert_eq!(
            waiting.await.unwrap(),
            Some(Out::Close(1000, "the visit has ended".into()))
        );

        // Dropped without a close: the writer ends once the queue is read.
        let (out, mut reader) = outbox(2);
        out.send("a".into());
        drop(out);
        assert_eq!(reader.recv().await, text("a"));
        assert_eq!(reader.recv().await, None);
    }
}
