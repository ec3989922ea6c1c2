//! Server-sent events on the way back from an upstream, for the two cases where the gateway must
//! look inside: filtering a `tools/list` result and inspecting a tool result. Every other event is
//! forwarded as raw bytes the moment its terminating blank line arrives, so progress notifications
//! stream through unbuffered.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Largest single event the gateway will hold while waiting for its end.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// One event: its `data` lines joined with `\n`, plus the raw bytes to forward unchanged.
pub struct Event<'a> {
    /// The event exactly as received, terminator included.
    pub raw: &'a [u8],
    /// Joined `data:` payload, when the event has one.
    pub data: Option<String>,
    /// The `id:` field, kept when the event is rewritten.
    pub id: Option<&'a str>,
}

impl Event<'_> {
    /// Serializes a replacement for this event with new data, keeping its id.
    pub fn with_data(&self, data: &str) -> Bytes {
        let mut out = String::new();
        if let Some(id) = self.id {
            out.push_str("id: ");
            out.push_str(id);
            out.push('\n');
        }
        out.push_str("event: message\n");
        for line in data.split('\n') {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
        Bytes::from(out)
    }
}

fn parse_event(raw: &[u8]) -> Event<'_> {
    let text = std::str::from_utf8(raw).unwrap_or("");
    let mut data: Option<String> = None;
    let mut id = None;
    for line in text.lines() {
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                let d = data.get_or_insert_with(String::new);
                if !d.is_empty() {
                    d.push('\n');
                }
                d.push_str(value);
            }
            "id" => id = Some(value),
            _ => {}
        }
    }
    Event { raw, data, id }
}

/// Finds the end of the first complete event (index just past its blank line), looking from
/// `from` on; line ends may be `\n`, `\r\n` or `\r`.
fn event_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        match (buf[i], buf[i + 1]) {
            (b'\n', b'\n') => return Some(i + 2),
            (b'\n', b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
            (b'\r', b'\r') => return Some(i + 2),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Wraps an SSE body, handing each complete event to `rewrite`; `None` forwards it unchanged.
pub struct Rewrite<B, F> {
    inner: B,
    buf: BytesMut,
    /// How far `buf` has been searched for an event end (so each byte is looked at once).
    scanned: usize,
    rewrite: F,
    done: bool,
}

impl<B, F> Rewrite<B, F> {
    /// Rewrites events of `inner` with `rewrite`.
    pub fn new(inner: B, rewrite: F) -> Self {
        Rewrite {
            inner,
            buf: BytesMut::new(),
            scanned: 0,
            rewrite,
            done: false,
        }
    }
}

/// Error of a rewritten stream: the upstream's, or an event over [`MAX_EVENT_BYTES`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B, F> Body for Rewrite<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    F: FnMut(&Event<'_>) -> Option<Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(end) = event_end(&this.buf, this.scanned.saturating_sub(2)) {
                this.scanned = 0;
                let raw = this.buf.split_to(end).freeze();
                let event = parse_event(&raw);
                let out = (this.rewrite)(&event).unwrap_or_else(|| raw.clone());
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
            this.scanned = this.buf.len();
            if this.done {
                if this.buf.is_empty() {
                    return Poll::Ready(None);
                }
                // An unterminated last event still gets its rewrite.
                let raw = this.buf.split().freeze();
                let event = parse_event(&raw);
                let out = (this.rewrite)(&event).unwrap_or_else(|| raw.clone());
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.buf.extend_from_slice(&data);
                        if this.buf.len() > MAX_EVENT_BYTES {
                            return Poll::Ready(Some(Err(
                                "upstream event over the size limit".into()
                            )));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => this.done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, StreamBody};

    #[tokio::test]
    async fn events_split_across_chunks_are_rewritten_whole_and_others_pass_raw() {
        let chunks = [
            "id: 1\nevent: message\ndata: {\"a\"",
            ":1}\n\nid: 2\ndata: keep\n",
            "\n: comment\n\n",
        ];
        let stream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c)))),
        );
        let body = Rewrite::new(StreamBody::new(stream), |e: &Event<'_>| {
            (e.data.as_deref() == Some("{\"a\":1}")).then(|| e.with_data("{\"a\":2}"))
        });
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "id: 1\nevent: message\ndata: {\"a\":2}\n\nid: 2\ndata: keep\n\n: comment\n\n"
        );
    }
}
