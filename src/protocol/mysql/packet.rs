//! MySQL packet framing: a 3-byte little-endian payload length, a 1-byte sequence id, the
//! payload. A payload of exactly 0xFFFFFF bytes continues in the next packet; the logical
//! packet ends with the first shorter one (possibly empty).
//!
//! tollgate frames both directions itself (mysql_common's codec is an endpoint's and refuses
//! sequence jumps): [`split`] is pure and fuzzed, [`PacketIo`] reads logical packets from a
//! stream into a bounded buffer and writes payloads with the sequence ids it is told.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::Stream;

/// The largest payload of one wire packet.
pub const MAX_CHUNK: usize = 0xFF_FFFF;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("packet of {0} bytes is over the limit of {1} bytes")]
    TooLarge(usize, usize),
    #[error("packet out of order: sequence id {got} where {want} was expected")]
    Sequence { got: u8, want: u8 },
    #[error("the peer closed the connection")]
    Closed,
    #[error("the peer closed the connection inside a packet")]
    Truncated,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where the first logical packet in a buffer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed {
    /// Bytes of the buffer it takes, headers included.
    pub wire_len: usize,
    /// Its payload's length, all chunks together.
    pub payload_len: usize,
    /// The sequence id of its first chunk.
    pub seq: u8,
    /// How many wire packets it spans.
    pub chunks: usize,
}

/// The first complete logical packet of `buf`, `None` while more bytes are needed. Chunks of
/// one packet must carry consecutive sequence ids; a payload over `max` is refused as soon as
/// its length is known, before it is buffered.
pub fn split(buf: &[u8], max: usize) -> Result<Option<Framed>, Error> {
    let mut at = 0usize;
    let mut payload = 0usize;
    let mut chunks = 0usize;
    let mut first_seq = 0u8;
    loop {
        let Some(header) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        let len =
            usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        let seq = header[3];
        if chunks == 0 {
            first_seq = seq;
        } else {
            let want = first_seq.wrapping_add(chunks as u8);
            if seq != want {
                return Err(Error::Sequence { got: seq, want });
            }
        }
        payload += len;
        if payload > max {
            return Err(Error::TooLarge(payload, max));
        }
        chunks += 1;
        at += 4 + len;
        if buf.len() < at {
            return Ok(None);
        }
        if len < MAX_CHUNK {
            return Ok(Some(Framed {
                wire_len: at,
                payload_len: payload,
                seq: first_seq,
                chunks,
            }));
        }
    }
}

/// Appends `payload` to `out` as wire packets starting at sequence id `seq`; returns the next
/// sequence id.
pub fn put(out: &mut Vec<u8>, mut seq: u8, payload: &[u8]) -> u8 {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_CHUNK);
        out.extend_from_slice(&[n as u8, (n >> 8) as u8, (n >> 16) as u8, seq]);
        out.extend_from_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_CHUNK {
            return seq;
        }
    }
}

/// One logical packet as read.
#[derive(Debug, Clone)]
pub struct Packet {
    /// The sequence id of its first chunk.
    pub seq: u8,
    /// The sequence id the peer's next packet should carry.
    pub next_seq: u8,
    pub payload: Bytes,
}

/// A stream that reads and writes MySQL packets, buffering at most one logical packet (plus
/// what was read past it) in, and what was queued but not flushed out.
pub struct PacketIo {
    pub io: Stream,
    buf: BytesMut,
    out: Vec<u8>,
    /// The sequence id after the last packet read or queued.
    next_seq: u8,
    /// Whether `buf` was grown for a stream of large reads, and the last read's size.
    big: bool,
    last_read: usize,
}

/// Queued output is written out once it reaches this size.
pub const FLUSH_AT: usize = 64 * 1024;

/// What an idle connection keeps to read into (docs/performance.md, "Idle sessions"); a read
/// that fills it makes the next ones 64 KiB until the stream is quiet again.
const IDLE_CHUNK: usize = 4 * 1024;

impl PacketIo {
    pub fn new(io: Stream) -> PacketIo {
        PacketIo {
            io,
            buf: BytesMut::with_capacity(IDLE_CHUNK),
            out: Vec::new(),
            next_seq: 0,
            big: false,
            last_read: 0,
        }
    }

    /// The sequence id that follows the last packet read or queued: where a packet of
    /// tollgate's own (an ERR that ends the login) fits in the exchange.
    pub fn next_seq(&self) -> u8 {
        self.next_seq
    }

    /// Bytes received and not yet taken as packets (a client must not pipeline during the
    /// login, for example).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Gives the stream back with the bytes read past the last packet (a TLS handshake that
    /// followed an SSLRequest).
    pub fn into_parts(self) -> (Stream, Bytes) {
        (self.io, self.buf.freeze())
    }

    /// Gives the stream back (to wrap it in TLS); fails if bytes were read past the last packet.
    pub fn into_stream(self) -> Result<Stream, Error> {
        if !self.buf.is_empty() {
            return Err(Error::Sequence { got: 0, want: 0 });
        }
        Ok(self.io)
    }

    /// Reads the next logical packet, at most `max` bytes of payload.
    pub async fn read(&mut self, max: usize) -> Result<Packet, Error> {
        loop {
            if let Some(f) = split(&self.buf, max)? {
                let next_seq = f.seq.wrapping_add(f.chunks as u8);
                self.next_seq = next_seq;
                let payload = if f.chunks == 1 {
                    self.buf.advance(4);
                    self.buf.split_to(f.payload_len).freeze()
                } else {
                    let mut whole = BytesMut::with_capacity(f.payload_len);
                    let mut wire = self.buf.split_to(f.wire_len);
                    while !wire.is_empty() {
                        let len = usize::from(wire[0])
                            | usize::from(wire[1]) << 8
                            | usize::from(wire[2]) << 16;
                        wire.advance(4);
                        whole.extend_from_slice(&wire.split_to(len));
                    }
                    whole.freeze()
                };
                // One large packet must not keep a large buffer for the connection's life.
                if self.buf.is_empty() && self.buf.capacity() > 1024 * 1024 {
                    self.buf = BytesMut::with_capacity(IDLE_CHUNK);
                    self.big = false;
                }
                return Ok(Packet {
                    seq: f.seq,
                    next_seq,
                    payload,
                });
            }
            if self.buf.is_empty() && self.last_read < IDLE_CHUNK {
                if self.big {
                    // Drops the large allocation (a reserve would reclaim it).
                    self.buf = BytesMut::with_capacity(IDLE_CHUNK);
                    self.big = false;
                } else {
                    self.buf.reserve(IDLE_CHUNK);
                }
            } else if self.buf.capacity() - self.buf.len() < 8192 {
                self.buf.reserve(64 * 1024);
                self.big = true;
            }
            let n = self.io.read_buf(&mut self.buf).await?;
            self.last_read = n;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    Error::Closed
                } else {
                    Error::Truncated
                });
            }
        }
    }

    /// Queues `payload` at sequence id `seq`; returns the next id. The caller flushes (the
    /// relay records what it queued first, and flushes at [`FLUSH_AT`]).
    pub fn queue(&mut self, seq: u8, payload: &[u8]) -> u8 {
        self.next_seq = put(&mut self.out, seq, payload);
        self.next_seq
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Drops queued output that was never written (it could not be recorded); returns the
    /// sequence id its first packet had, which the next packet takes instead.
    pub fn discard(&mut self) -> Option<u8> {
        let first = self.out.get(3).copied();
        self.out.clear();
        first
    }

    /// Whether queued output is waiting.
    pub fn pending(&self) -> bool {
        !self.out.is_empty()
    }

    pub async fn flush(&mut self) -> Result<(), Error> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            // A small write ends an exchange: an idle connection keeps no large output buffer.
            let small = self.out.len() < IDLE_CHUNK;
            self.out.clear();
            if self.out.capacity() > 1024 * 1024 || (small && self.out.capacity() > 16 * 1024) {
                self.out = Vec::new();
            }
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Queues and flushes one packet.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) -> Result<u8, Error> {
        let next = self.queue(seq, payload);
        self.flush().await?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_and_joins_large_payloads() {
        let payload = vec![7u8; MAX_CHUNK * 2 + 5];
        let mut wire = Vec::new();
        let next = put(&mut wire, 3, &payload);
        assert_eq!(next, 6);
        let f = split(&wire, usize::MAX).unwrap().unwrap();
        assert_eq!(f.payload_len, payload.len());
        assert_eq!(f.chunks, 3);
        assert_eq!(f.wire_len, wire.len());
        // Exactly one chunk's worth ends with an empty packet.
        let mut wire = Vec::new();
        assert_eq!(put(&mut wire, 0, &vec![1u8; MAX_CHUNK]), 2);
        assert_eq!(wire.len(), MAX_CHUNK + 8);
        assert_eq!(split(&wire, usize::MAX).unwrap().unwrap().chunks, 2);
    }

    #[test]
    fn refuses_oversize_and_bad_sequences() {
        let mut wire = Vec::new();
        put(&mut wire, 0, &vec![0u8; 2000]);
        assert!(matches!(
            split(&wire, 1024),
            Err(Error::TooLarge(2000, 1024))
        ));
        // Only a header: the size is refused before the payload arrives.
        assert!(matches!(split(&wire[..4], 1024), Err(Error::TooLarge(..))));
        let mut wire = vec![0xff, 0xff, 0xff, 0];
        wire.extend(std::iter::repeat_n(0, MAX_CHUNK));
        wire.extend_from_slice(&[0, 0, 0, 5]);
        assert!(matches!(
            split(&wire, usize::MAX),
            Err(Error::Sequence { got: 5, want: 1 })
        ));
    }

    proptest! {
        /// Whatever prefix of valid packets is given, split never panics, never claims more
        /// than the buffer holds, and finds the packet once it is complete.
        #[test]
        fn any_prefix(payload in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..400) {
            let mut wire = Vec::new();
            put(&mut wire, 9, &payload);
            let cut = cut.min(wire.len());
            match split(&wire[..cut], 1 << 20).unwrap() {
                Some(f) => { prop_assert_eq!(cut, wire.len()); prop_assert_eq!(f.payload_len, payload.len()); }
                None => prop_assert!(cut < wire.len()),
            }
        }

        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some(f)) = split(&bytes, 1 << 20) {
                prop_assert!(f.wire_len <= bytes.len());
            }
        }
    }
}
