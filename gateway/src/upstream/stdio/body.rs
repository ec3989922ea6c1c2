//! The response bodies a stdio server's answers travel in: a whole JSON document, an SSE stream
//! of one request's messages ending with its answer, or a session's GET stream.

use super::{Answering, PendingGuard, Translated};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use serde_json::Value;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A stdio server's response body.
pub enum StdioBody {
    /// A whole answer (JSON) or nothing (202).
    Full(Option<Bytes>),
    /// One request's messages as SSE events; the last is its answer.
    Request(Box<RequestStream>),
    /// A 2025-11-25 session's GET stream: notifications and questions not tied to a request.
    Session(mpsc::Receiver<Value>),
}

/// The state of one request's SSE stream.
pub struct RequestStream {
    pub(super) rx: mpsc::Receiver<Value>,
    pub(super) answering: Answering,
    pub(super) guard: PendingGuard,
    pub(super) first: Option<Value>,
    pub(super) done: bool,
}

/// One SSE event carrying `message`.
pub(super) fn event(message: &Value) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"event: message\ndata: ");
    // Serializing a `Value` cannot fail.
    let _ = serde_json::to_writer(&mut out, message);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

impl http_body::Body for StdioBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            StdioBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            StdioBody::Session(rx) => match rx.poll_recv(cx) {
                Poll::Ready(Some(m)) => Poll::Ready(Some(Ok(Frame::data(event(&m))))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            StdioBody::Request(s) => loop {
                if s.done {
                    return Poll::Ready(None);
                }
                // The first event was translated while the response was being decided.
                if let Some(first) = s.first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(event(&first)))));
                }
                let message = match s.rx.poll_recv(cx) {
                    Poll::Ready(Some(m)) => m,
                    Poll::Ready(None) => {
                        // The process went away without an answer (its failure answer could
                        // not be queued): say so rather than end silently.
                        s.done = true;
                        s.guard.disarm();
                        let m = s.answering.failure("the process ended without answering");
                        return Poll::Ready(Some(Ok(Frame::data(event(&m)))));
                    }
                    Poll::Pending => return Poll::Pending,
                };
                match s.answering.translate(message, &mut s.rx, &mut s.guard) {
                    Translated::Skip => continue,
                    Translated::Event(m) => return Poll::Ready(Some(Ok(Frame::data(event(&m))))),
                    Translated::Last(m) => {
                        s.done = true;
                        s.guard.disarm();
                        return Poll::Ready(Some(Ok(Frame::data(event(&m)))));
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            StdioBody::Full(b) => b.is_none(),
            StdioBody::Request(s) => s.done,
            StdioBody::Session(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            StdioBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            StdioBody::Full(None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
