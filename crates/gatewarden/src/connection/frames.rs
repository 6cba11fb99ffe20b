//! WebSocket frames as the connection sees them: fragments joined, text checked, sizes bounded.
//!
//! awc hands out raw frames: text is not checked for UTF-8 and a fragmented message arrives as
//! continuation items. This module turns them into whole messages with one size bound for both
//! (M5: whatever is malformed is dropped, never a panic).

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{Codec, Item, Message, ProtocolError};
use awc::ws::Frame;
use bytes::{Buf as _, Bytes, BytesMut};
use bytestring::ByteString;

/// One whole inbound message, or what to do about a control frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// A complete text message (valid UTF-8).
    Text(ByteString),
    /// A binary message (not part of the gateway protocol; dropped by the caller).
    Binary,
    /// A server ping: answer with a pong carrying the same bytes.
    Ping(Bytes),
    /// A pong (proof of life, H3).
    Pong,
    /// The server closed: its code (1005 when the close frame had none) and reason.
    Close {
        /// Close code.
        code: u16,
        /// Close reason (may be empty).
        reason: String,
    },
    /// A fragment of a message that is not complete yet.
    Partial,
    /// A message that was dropped, and why (for the log).
    Dropped(&'static str),
}

/// RFC 6455 "no status code present": what a close frame without a code means.
pub(crate) const CLOSE_NO_STATUS: u16 = 1005;

/// Joins fragmented messages, bounded by `max_bytes` per message.
#[derive(Debug)]
pub(crate) struct FrameAssembler {
    max_bytes: usize,
    partial: Option<PartialMessage>,
}

#[derive(Debug)]
struct PartialMessage {
    is_text: bool,
    bytes: Vec<u8>,
    /// The message grew past the bound: keep consuming its fragments, then drop it.
    overflowed: bool,
}

impl FrameAssembler {
    /// An assembler that drops messages larger than `max_bytes`.
    pub(crate) fn new(max_bytes: usize) -> Self {
        FrameAssembler {
            max_bytes,
            partial: None,
        }
    }

    /// Take one frame; a whole message comes out once its last fragment is in.
    pub(crate) fn accept(&mut self, frame: Frame) -> Received {
        match frame {
            Frame::Text(bytes) => self.finish_text(bytes),
            Frame::Binary(_) => Received::Binary,
            Frame::Ping(bytes) => Received::Ping(bytes),
            Frame::Pong(_) => Received::Pong,
            Frame::Close(reason) => match reason {
                Some(reason) => Received::Close {
                    code: u16::from(reason.code),
                    reason: reason.description.unwrap_or_default(),
                },
                None => Received::Close {
                    code: CLOSE_NO_STATUS,
                    reason: String::new(),
                },
            },
            Frame::Continuation(item) => self.continuation(item),
        }
    }

    fn continuation(&mut self, item: Item) -> Received {
        match item {
            Item::FirstText(bytes) => self.start(true, &bytes),
            Item::FirstBinary(bytes) => self.start(false, &bytes),
            Item::Continue(bytes) => {
                self.append(&bytes);
                Received::Partial
            }
            Item::Last(bytes) => {
                self.append(&bytes);
                match self.partial.take() {
                    None => Received::Dropped("continuation without a first fragment"),
                    Some(message) if message.overflowed => {
                        Received::Dropped("fragmented message larger than max_frame_bytes")
                    }
                    Some(message) if message.is_text => {
                        self.finish_text(Bytes::from(message.bytes))
                    }
                    Some(_) => Received::Binary,
                }
            }
        }
    }

    fn start(&mut self, is_text: bool, bytes: &[u8]) -> Received {
        let replaced = self.partial.is_some();
        self.partial = Some(PartialMessage {
            is_text,
            bytes: Vec::new(),
            overflowed: false,
        });
        self.append(bytes);
        if replaced {
            Received::Dropped("new fragmented message before the previous one ended")
        } else {
            Received::Partial
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let max_bytes = self.max_bytes;
        if let Some(message) = self.partial.as_mut() {
            if message.overflowed {
                return;
            }
            if message.bytes.len().saturating_add(bytes.len()) > max_bytes {
                // Free what was gathered at once: the bound is about memory.
                message.bytes = Vec::new();
                message.overflowed = true;
                return;
            }
            message.bytes.extend_from_slice(bytes);
        }
    }

    /// The frame's own bytes become the text (checked, not copied: this runs once per reply).
    fn finish_text(&self, bytes: Bytes) -> Received {
        if bytes.len() > self.max_bytes {
            return Received::Dropped("text message larger than max_frame_bytes");
        }
        match ByteString::try_from(bytes) {
            Ok(text) => Received::Text(text),
            Err(_) => Received::Dropped("text message is not valid UTF-8"),
        }
    }
}

/// The WebSocket codec with a memory bound: a frame whose header declares more than `max_bytes`
/// of payload is rejected as soon as its header is in, and its payload is discarded as it
/// arrives.
///
/// awc's own limit (`max_frame_size`) checks the length only once the whole frame is buffered,
/// so a gateway declaring a 1 GiB frame would make the supervisor hold 1 GiB before the frame
/// is dropped. This wrapper keeps the same outcome (one `Overflow` error per oversize frame, the
/// socket stays usable) without the buffering.
pub(crate) struct BoundedCodec {
    inner: Codec,
    max_bytes: usize,
    /// Payload bytes of a rejected frame still to discard.
    skipping: u64,
}

impl BoundedCodec {
    pub(crate) fn new(inner: Codec, max_bytes: usize) -> Self {
        BoundedCodec {
            inner,
            max_bytes,
            skipping: 0,
        }
    }
}

/// RFC 6455 §5.2: header length and declared payload length, once the header is complete.
fn frame_header(src: &[u8]) -> Option<(usize, u64)> {
    let second = *src.get(1)?;
    let masked = second & 0x80 != 0;
    let (extended, length) = match second & 0x7f {
        126 => (
            2,
            u64::from(u16::from_be_bytes(src.get(2..4)?.try_into().ok()?)),
        ),
        127 => (8, u64::from_be_bytes(src.get(2..10)?.try_into().ok()?)),
        short => (0, u64::from(short)),
    };
    let header = 2 + extended + if masked { 4 } else { 0 };
    (src.len() >= header).then_some((header, length))
}

impl Decoder for BoundedCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if self.skipping > 0 {
            let now = usize::try_from(self.skipping)
                .unwrap_or(usize::MAX)
                .min(src.len());
            src.advance(now);
            self.skipping -= now as u64;
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        if let Some((header, length)) = frame_header(src) {
            if length > self.max_bytes as u64 {
                src.advance(header);
                self.skipping = length;
                let now = usize::try_from(length).unwrap_or(usize::MAX).min(src.len());
                src.advance(now);
                self.skipping -= now as u64;
                return Err(ProtocolError::Overflow);
            }
        }
        self.inner.decode(src)
    }
}

impl Encoder<Message> for BoundedCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        self.inner.encode(item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awc::ws::{CloseCode, CloseReason};

    /// An unmasked server frame with `payload`, as the gateway sends it.
    fn server_frame(opcode: u8, payload: &[u8]) -> BytesMut {
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0x80 | opcode]);
        match payload.len() {
            short @ 0..=125 => frame.extend_from_slice(&[short as u8]),
            medium @ 126..=65_535 => {
                frame.extend_from_slice(&[126]);
                frame.extend_from_slice(&(medium as u16).to_be_bytes());
            }
            long => {
                frame.extend_from_slice(&[127]);
                frame.extend_from_slice(&(long as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn m5_an_oversize_frame_is_rejected_from_its_header_and_never_buffered() {
        let mut codec = BoundedCodec::new(Codec::new().max_size(1 << 20).client_mode(), 16);
        // The header declares 1 GiB; only its first bytes ever arrive in one piece.
        let mut src = BytesMut::new();
        src.extend_from_slice(&[0x81, 127]);
        src.extend_from_slice(&(1u64 << 30).to_be_bytes());
        src.extend_from_slice(&[b'x'; 100]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(ProtocolError::Overflow)
        ));
        assert!(src.is_empty(), "the payload is discarded, not kept");
        // The rest of the payload is discarded as it arrives, chunk by chunk.
        let mut left = (1u64 << 30) - 100;
        while left > 0 {
            let chunk = left.min(1 << 16) as usize;
            src.extend_from_slice(&vec![b'x'; chunk]);
            assert!(matches!(codec.decode(&mut src), Ok(None)));
            assert!(src.is_empty());
            left -= chunk as u64;
        }
        // Then the socket is usable again: the next frame decodes.
        src.extend_from_slice(&server_frame(0x1, b"ok"));
        match codec.decode(&mut src) {
            Ok(Some(Frame::Text(text))) => assert_eq!(&text[..], b"ok"),
            other => panic!("{other:?}"),
        }
        // A frame within the bound, split anywhere, goes to the inner codec unchanged.
        let whole = server_frame(0x1, b"0123456789abcdef");
        let mut src = BytesMut::from(&whole[..3]);
        assert!(matches!(codec.decode(&mut src), Ok(None)));
        src.extend_from_slice(&whole[3..]);
        assert!(matches!(codec.decode(&mut src), Ok(Some(Frame::Text(_)))));
    }

    #[test]
    fn m5_fragments_are_joined_and_bounded() {
        let mut assembler = FrameAssembler::new(8);
        assert_eq!(
            assembler.accept(Frame::Continuation(Item::FirstText(Bytes::from_static(
                b"ab"
            )))),
            Received::Partial
        );
        assert_eq!(
            assembler.accept(Frame::Continuation(Item::Continue(Bytes::from_static(
                b"cd"
            )))),
            Received::Partial
        );
        assert_eq!(
            assembler.accept(Frame::Continuation(Item::Last(Bytes::from_static(b"e")))),
            Received::Text("abcde".into())
        );
        assembler.accept(Frame::Continuation(Item::FirstText(Bytes::from_static(
            b"abcdef",
        ))));
        assembler.accept(Frame::Continuation(Item::Continue(Bytes::from_static(
            b"ghij",
        ))));
        assert!(matches!(
            assembler.accept(Frame::Continuation(Item::Last(Bytes::new()))),
            Received::Dropped(_)
        ));
        assert!(matches!(
            assembler.accept(Frame::Continuation(Item::Last(Bytes::new()))),
            Received::Dropped(_)
        ));
    }

    #[test]
    fn m5_invalid_utf8_and_oversize_text_are_dropped() {
        let mut assembler = FrameAssembler::new(4);
        assert!(matches!(
            assembler.accept(Frame::Text(Bytes::from_static(&[0xff, 0xfe]))),
            Received::Dropped(_)
        ));
        assert!(matches!(
            assembler.accept(Frame::Text(Bytes::from_static(b"12345"))),
            Received::Dropped(_)
        ));
        assert_eq!(
            assembler.accept(Frame::Text(Bytes::from_static(b"1234"))),
            Received::Text("1234".into())
        );
    }

    #[test]
    fn close_frames_carry_their_code_or_1005() {
        let mut assembler = FrameAssembler::new(4);
        assert_eq!(
            assembler.accept(Frame::Close(Some(CloseReason {
                code: CloseCode::Restart,
                description: Some("service restart".into())
            }))),
            Received::Close {
                code: 1012,
                reason: "service restart".into()
            }
        );
        assert_eq!(
            assembler.accept(Frame::Close(None)),
            Received::Close {
                code: CLOSE_NO_STATUS,
                reason: String::new()
            }
        );
    }
}
