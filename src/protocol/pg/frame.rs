//! Framing of the PostgreSQL protocol: where one message ends and the next begins.
//!
//! Pure functions over byte slices, no IO, so they are unit-tested, property-tested and fuzzed
//! on their own. Every length is validated here before anything decodes a body: a negative or
//! too small length, or one over the configured maximum, is an error, never a panic or a huge
//! allocation.

/// Bytes of a regular message header: one tag byte and an Int32 length.
pub const HEADER_LEN: usize = 5;

/// Largest startup-phase packet PostgreSQL itself accepts (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;

/// Why a frame cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("invalid message length {len} for message type {tag:?}")]
    BadLength { tag: char, len: i32 },
    #[error("message of type {tag:?} is {len} bytes, over the limit of {max}")]
    Oversize { tag: char, len: usize, max: usize },
    #[error("invalid startup packet length {0}")]
    BadStartupLength(i32),
}

/// The length of the complete regular message (tag + Int32 length + body) at the start of
/// `buf`, `Ok(None)` while more bytes are needed.
///
/// `max` bounds the whole message, header included.
pub fn message_len(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let tag = header[0];
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len < 4 {
        return Err(FrameError::BadLength {
            tag: tag as char,
            len,
        });
    }
    let total = len as usize + 1;
    if total > max {
        return Err(FrameError::Oversize {
            tag: tag as char,
            len: total,
            max,
        });
    }
    Ok((buf.len() >= total).then_some(total))
}

/// The length of the complete startup-phase packet (Int32 length, then a body starting with an
/// Int32 code) at the start of `buf`, `Ok(None)` while more bytes are needed.
pub fn startup_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if len < 8 || len as usize > MAX_STARTUP_LEN {
        return Err(FrameError::BadStartupLength(len));
    }
    let total = len as usize;
    Ok((buf.len() >= total).then_some(total))
}

/// A complete regular message, borrowed from the buffer it was framed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub tag: u8,
    /// The body after the length field.
    pub body: &'a [u8],
}

impl<'a> Message<'a> {
    /// Splits a complete frame (as sized by [`message_len`]) into tag and body.
    pub fn from_frame(frame: &'a [u8]) -> Message<'a> {
        Message {
            tag: frame[0],
            body: &frame[HEADER_LEN..],
        }
    }
}

/// Appends a message with a correct length field.
pub fn put_message(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn message_len_cases() {
        let max = 1024;
        type Case<'a> = (&'a [u8], Result<Option<usize>, FrameError>);
        let cases: &[Case] = &[
            (b"", Ok(None)),
            (b"Q\0\0", Ok(None)),
            (b"S\0\0\0\x04", Ok(Some(5))),
            (b"S\0\0\0\x04rest", Ok(Some(5))),
            (b"Q\0\0\0\x06x", Ok(None)),
            (b"Q\0\0\0\x06x\0", Ok(Some(7))),
            (
                b"B\0\0\0\0",
                Err(FrameError::BadLength { tag: 'B', len: 0 }),
            ),
            (
                b"B\0\0\0\x03",
                Err(FrameError::BadLength { tag: 'B', len: 3 }),
            ),
            (
                b"B\xff\xff\xff\xff",
                Err(FrameError::BadLength { tag: 'B', len: -1 }),
            ),
            (
                b"d\0\0\x04\0",
                Err(FrameError::Oversize {
                    tag: 'd',
                    len: 1025,
                    max,
                }),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(&message_len(input, max), expected, "{input:?}");
        }
    }

    #[test]
    fn startup_len_cases() {
        assert_eq!(startup_len(b"\0\0\0"), Ok(None));
        assert_eq!(startup_len(b"\0\0\0\x08\x04\xd2\x16\x2f"), Ok(Some(8)));
        assert_eq!(startup_len(b"\0\0\0\x09\x04\xd2"), Ok(None));
        assert_eq!(
            startup_len(b"\0\0\0\x07"),
            Err(FrameError::BadStartupLength(7))
        );
        assert_eq!(
            startup_len(b"\0\x01\0\0"),
            Err(FrameError::BadStartupLength(65536))
        );
    }

    fn frames() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
        proptest::collection::vec(
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)),
            0..20,
        )
    }

    proptest! {
        /// Encoded messages split anywhere frame back into exactly the same messages.
        #[test]
        fn framing_round_trips_at_any_split(msgs in frames(), cut in 0usize..6000) {
            let mut wire = Vec::new();
            for (tag, body) in &msgs {
                put_message(&mut wire, *tag, body);
            }
            let cut = cut.min(wire.len());
            // Feed the first `cut` bytes, take what frames, then the rest.
            let mut buf: Vec<u8> = wire[..cut].to_vec();
            let mut rest = &wire[cut..];
            let mut got = Vec::new();
            loop {
                while let Some(n) = message_len(&buf, 4096).unwrap() {
                    let m = Message::from_frame(&buf[..n]);
                    got.push((m.tag, m.body.to_vec()));
                    buf.drain(..n);
                }
                if rest.is_empty() { break; }
                let take = rest.len().min(7);
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, msgs);
        }

        /// Arbitrary bytes never panic the framer, and a frame it returns is within bounds.
        #[test]
        fn arbitrary_input_is_framed_or_refused(input in proptest::collection::vec(any::<u8>(), 0..64), max in 5usize..100) {
            if let Ok(Some(n)) = message_len(&input, max) {
                prop_assert!(n >= HEADER_LEN && n <= input.len() && n <= max);
            }
            if let Ok(Some(n)) = startup_len(&input) {
                prop_assert!((8..=input.len()).contains(&n));
            }
        }
    }
}
