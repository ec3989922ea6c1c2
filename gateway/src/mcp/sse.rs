//! Server-sent events on the way back from an upstream, for the two cases where the gateway must
//! look inside: filtering a `tools/list` result and inspecting a tool result. Every other event is
//! forwarded as raw bytes the moment its terminating blank line arrives, so progress notifications
//! stream through unbuffered.

use bytes::{Buf as _, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Largest single event the gateway will hold while waiting for its end.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// After the answer, how long and how much of the rest of an upstream stream is read (and
/// dropped) so its connection can go back to the pool; past either, the connection is closed.
const DRAIN_TIME: Duration = Duration::from_secs(1);
const DRAIN_BYTES: usize = 64 * 1024;

/// Longest the headers of an answer stream wait for its first event (see [`primed`]).
pub const FIRST_EVENT_WAIT: Duration = Duration::from_millis(50);

/// What the relay does with one event.
#[derive(Debug)]
pub struct Step {
    /// Bytes sent instead of the event; `None` forwards the event as received.
    pub replacement: Option<Bytes>,
    /// The event answers the request the stream was opened for, so the stream ends with it (the
    /// server ends it there too), and the last data and the end go out in one write.
    pub last: bool,
}

impl Step {
    /// Forward the event as received and go on.
    pub const PASS: Step = Step {
        replacement: None,
        last: false,
    };

    /// Send `bytes` instead of the event.
    pub fn replace(bytes: Bytes) -> Step {
        Step {
            replacement: Some(bytes),
            last: false,
        }
    }

    /// This step, ending the stream.
    pub fn last(self) -> Step {
        Step { last: true, ..self }
    }
}

impl From<Option<Bytes>> for Step {
    fn from(replacement: Option<Bytes>) -> Step {
        Step {
            replacement,
            last: false,
        }
    }
}

/// One event: its `data` lines joined with `\n`, plus the raw bytes to forward unchanged.
pub struct Event<'a> {
    /// The event exactly as received, terminator included.
    pub raw: &'a [u8],
    /// Joined `data:` payload, when the event has one: borrowed from `raw` when it is one line
    /// (the usual case), joined into a new string when it spans several.
    pub data: Option<Cow<'a, str>>,
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
    let mut data: Option<Cow<'_, str>> = None;
    let mut id = None;
    for line in text.lines() {
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut data {
                None => data = Some(Cow::Borrowed(value)),
                Some(d) => {
                    let d = d.to_mut();
                    d.push('\n');
                    d.push_str(value);
                }
            },
            "id" => id = Some(value),
            _ => {}
        }
    }
    Event { raw, data, id }
}

/// The complete events of a whole SSE body read at once (an answer the gateway collected), in
/// order; a trailing event without its blank line counts too.
pub fn events(body: &[u8]) -> impl Iterator<Item = Event<'_>> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = event_end(rest, 0).unwrap_or(rest.len());
        let (event, tail) = rest.split_at(end);
        rest = tail;
        Some(parse_event(event))
    })
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

/// Wraps an SSE body, handing each complete event to `rewrite`, which says what goes out instead
/// and whether the event ends the stream.
pub struct Rewrite<B, F> {
    /// The upstream body; `None` once it has been handed to [`drain`] after the answer.
    inner: Option<B>,
    buf: BytesMut,
    /// How far `buf` has been searched for an event end (so each byte is looked at once).
    scanned: usize,
    rewrite: F,
    /// The upstream body has ended.
    done: bool,
    /// The answer has gone out: the stream is over.
    answered: bool,
}

impl<B, F> Rewrite<B, F> {
    /// Rewrites events of `inner` with `rewrite`.
    pub fn new(inner: B, rewrite: F) -> Self {
        Rewrite {
            inner: Some(inner),
            buf: BytesMut::new(),
            scanned: 0,
            rewrite,
            done: false,
            answered: false,
        }
    }
}

/// Error of a rewritten stream: the upstream's, or an event over [`MAX_EVENT_BYTES`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads what is left of an upstream body after the answer, bounded in time and bytes, so a
/// well-behaved upstream's connection is reused; a body that is already over costs nothing.
fn drain<B>(mut body: B, cx: &mut Context<'_>)
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    let mut left = DRAIN_BYTES;
    // What is ready now is read here (the end usually is), within the same byte bound.
    loop {
        match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                left = left.saturating_sub(frame.data_ref().map_or(0, |d| d.remaining()));
                if left == 0 {
                    return;
                }
            }
            Poll::Ready(None | Some(Err(_))) => return,
            Poll::Pending => break,
        }
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let rest = async {
            while let Some(Ok(frame)) = body.frame().await {
                left = left.saturating_sub(frame.data_ref().map_or(0, |d| d.remaining()));
                if left == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, rest).await;
    });
}

impl<B, F> Rewrite<B, F>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    F: FnMut(&Event<'_>) -> Step + Unpin,
{
    /// Runs `rewrite` on one event and turns its step into the frame that goes out.
    fn step(&mut self, raw: Bytes, cx: &mut Context<'_>) -> Frame<Bytes> {
        let event = parse_event(&raw);
        let step = (self.rewrite)(&event);
        if step.last {
            self.answered = true;
            self.buf.clear();
            if let Some(inner) = self.inner.take() {
                drain(inner, cx);
            }
        }
        Frame::data(step.replacement.unwrap_or(raw))
    }
}

impl<B, F> Body for Rewrite<B, F>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    F: FnMut(&Event<'_>) -> Step + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.answered {
                return Poll::Ready(None);
            }
            if let Some(end) = event_end(&this.buf, this.scanned.saturating_sub(2)) {
                this.scanned = 0;
                let raw = this.buf.split_to(end).freeze();
                return Poll::Ready(Some(Ok(this.step(raw, cx))));
            }
            this.scanned = this.buf.len();
            if this.done {
                if this.buf.is_empty() {
                    return Poll::Ready(None);
                }
                // An unterminated last event still gets its rewrite.
                let raw = this.buf.split().freeze();
                return Poll::Ready(Some(Ok(this.step(raw, cx))));
            }
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(inner).poll_frame(cx) {
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

    fn is_end_stream(&self) -> bool {
        // Asked right after each frame: true after the answer lets the server write the answer
        // and the end of the body together.
        self.answered || (self.done && self.buf.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A body whose first frame has already been read.
pub struct Primed<B: Body> {
    first: Option<Result<Frame<B::Data>, B::Error>>,
    rest: B,
}

/// Waits up to `wait` for the first frame of an answer stream before its response goes out: a
/// server writes the headers and the frames ready with them together, so for a quick call the
/// headers, the answer and the end of the body leave in one write instead of two or three. A
/// slower first frame lets the headers go at `wait`.
pub async fn primed<B>(mut body: B, wait: Duration) -> Primed<B>
where
    B: Body + Unpin,
{
    let first = tokio::time::timeout(wait, body.frame())
        .await
        .ok()
        .flatten();
    Primed { first, rest: body }
}

impl<B: Body> Primed<B> {
    /// The upstream stream failed before its first event: nothing has gone to the client yet, so
    /// the caller can still answer with an error of its own.
    pub fn failed(&self) -> Option<&B::Error> {
        match &self.first {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }
}

impl<B> Body for Primed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        match this.first.take() {
            Some(first) => Poll::Ready(Some(first)),
            None => Pin::new(&mut this.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // A stream that was over with its first frame has a known length, so it needs no chunked
        // framing.
        match &self.first {
            Some(Ok(frame)) if self.rest.is_end_stream() => frame
                .data_ref()
                .map_or_else(SizeHint::default, |d| SizeHint::with_exact(d.len() as u64)),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;
    use http_body_util::StreamBody;

    #[test]
    fn data_lines_join_and_one_line_is_borrowed() {
        let e = parse_event(b"id: 7\ndata: {\"a\":\ndata:1}\r\nevent: message\n\n");
        assert_eq!((e.id, e.data.as_deref()), (Some("7"), Some("{\"a\":\n1}")));
        let e = parse_event(b"data: {\"a\":1}\n\n");
        assert!(matches!(e.data, Some(Cow::Borrowed("{\"a\":1}"))));
        assert!(parse_event(b": comment\n\n").data.is_none());
    }

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
            (e.data.as_deref() == Some("{\"a\":1}"))
                .then(|| e.with_data("{\"a\":2}"))
                .into()
        });
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "id: 1\nevent: message\ndata: {\"a\":2}\n\nid: 2\ndata: keep\n\n: comment\n\n"
        );
    }

    #[tokio::test]
    async fn the_stream_ends_with_the_answer_even_when_the_upstream_does_not() {
        let chunks = ["data: progress\n\ndata: answer\n\ndata: af", "ter\n\n"];
        let stream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c)))),
        )
        .chain(futures_util::stream::pending());
        let mut body = Rewrite::new(StreamBody::new(stream), |e: &Event<'_>| {
            let last = e.data.as_deref() == Some("answer");
            Step { last, ..Step::PASS }
        });
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"data: progress\n\n");
        assert!(!body.is_end_stream());
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&second[..], b"data: answer\n\n");
        assert!(body.is_end_stream(), "the answer ends the stream");
        assert!(body.frame().await.is_none(), "nothing after the answer");
    }

    #[tokio::test]
    async fn an_upstream_that_keeps_sending_after_the_answer_is_read_no_further_than_the_bound() {
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = sent.clone();
        let endless = futures_util::stream::repeat(Bytes::from(vec![b':'; 1024])).map(move |b| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, std::convert::Infallible>(Frame::data(b))
        });
        let stream = futures_util::stream::iter([Ok(Frame::data(Bytes::from("data: answer\n\n")))])
            .chain(endless);
        let mut body = Rewrite::new(StreamBody::new(stream), |e: &Event<'_>| Step {
            last: e.data.as_deref() == Some("answer"),
            ..Step::PASS
        });
        let answer = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&answer[..], b"data: answer\n\n");
        assert!(body.is_end_stream());
        let read = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            read <= DRAIN_BYTES / 1024 + 1,
            "read {read} KiB after the answer"
        );
    }

    #[tokio::test]
    async fn a_primed_stream_over_with_its_first_event_has_an_exact_length() {
        let answer = |chunks: &'static [&'static str]| {
            let stream = futures_util::stream::iter(
                chunks
                    .iter()
                    .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(*c)))),
            );
            Rewrite::new(StreamBody::new(stream), |e: &Event<'_>| Step {
                last: e.data.as_deref() == Some("answer"),
                ..Step::PASS
            })
        };
        let quick = primed(answer(&["data: answer\n\n"]), FIRST_EVENT_WAIT).await;
        assert_eq!(quick.size_hint().exact(), Some(14));
        assert_eq!(
            &quick.collect().await.unwrap().to_bytes()[..],
            b"data: answer\n\n"
        );

        let streaming = primed(
            answer(&["data: progress\n\n", "data: answer\n\n"]),
            FIRST_EVENT_WAIT,
        )
        .await;
        assert_eq!(streaming.size_hint().exact(), None);
        assert_eq!(
            &streaming.collect().await.unwrap().to_bytes()[..],
            b"data: progress\n\ndata: answer\n\n"
        );

        let silent = StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, std::convert::Infallible>,
        >());
        let started = std::time::Instant::now();
        let waited = primed(
            Rewrite::new(silent, |_: &Event<'_>| Step::PASS),
            FIRST_EVENT_WAIT,
        )
        .await;
        assert!(
            started.elapsed() >= FIRST_EVENT_WAIT,
            "waits for the first event"
        );
        assert!(
            !waited.is_end_stream(),
            "a silent stream goes out as a stream"
        );
    }
}
