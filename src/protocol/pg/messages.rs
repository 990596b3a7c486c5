//! Decoding and encoding of the PostgreSQL messages tollgate looks into.
//!
//! Every message carries its direction: `D` is Describe from a client but DataRow from a server,
//! so frontend and backend messages are separate types. Decoders work on a body already framed
//! by [`super::frame`], check every length and string against what is left, and return an
//! error rather than panic. Messages no stage looks into are never decoded: they travel as
//! their original bytes.

use super::frame::put_message;

/// Startup-phase request codes (the Int32 after the length).
pub const PROTOCOL_3_0: i32 = 196_608;
pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;

/// A body that does not hold what its tag promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what} message: {problem}")]
pub struct MessageError {
    pub what: &'static str,
    pub problem: &'static str,
}

/// A checked cursor over a message body.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn err(&self, problem: &'static str) -> MessageError {
        MessageError {
            what: self.what,
            problem,
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        if self.buf.len() < n {
            return Err(self.err("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, MessageError> {
        Ok(self.bytes(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, MessageError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, MessageError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A count that must not be negative.
    fn count16(&mut self) -> Result<usize, MessageError> {
        let n = self.i16()?;
        usize::try_from(n).map_err(|_| self.err("negative count"))
    }

    /// A NUL-terminated UTF-8 string.
    fn cstr(&mut self) -> Result<&'a str, MessageError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.err("unterminated string"))?;
        let s = std::str::from_utf8(&self.buf[..end]).map_err(|_| self.err("invalid UTF-8"))?;
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    /// An Int32 length then that many bytes; -1 is NULL.
    fn value(&mut self) -> Result<Option<&'a [u8]>, MessageError> {
        match self.i32()? {
            -1 => Ok(None),
            n if n < 0 => Err(self.err("negative value length")),
            n => Ok(Some(self.bytes(n as usize)?)),
        }
    }

    fn finish(&self) -> Result<(), MessageError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err("trailing bytes"))
        }
    }
}

/// What a client sends in the startup phase (no tag byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupRequest<'a> {
    Ssl,
    GssEnc,
    Cancel {
        process_id: i32,
        secret_key: i32,
    },
    Startup {
        /// Minor protocol version asked for (major is always 3).
        minor: u16,
        params: Vec<(&'a str, &'a str)>,
    },
}

/// Decodes a complete startup-phase packet (length included).
pub fn decode_startup(packet: &[u8]) -> Result<StartupRequest<'_>, MessageError> {
    let mut r = Reader::new(packet.get(4..).unwrap_or_default(), "startup");
    let code = r.i32()?;
    let req = match code {
        SSL_REQUEST => StartupRequest::Ssl,
        GSSENC_REQUEST => StartupRequest::GssEnc,
        CANCEL_REQUEST => StartupRequest::Cancel {
            process_id: r.i32()?,
            secret_key: r.i32()?,
        },
        code if code >> 16 == 3 => {
            let mut params = Vec::new();
            loop {
                let key = r.cstr()?;
                if key.is_empty() {
                    break;
                }
                params.push((key, r.cstr()?));
            }
            StartupRequest::Startup {
                minor: (code & 0xffff) as u16,
                params,
            }
        }
        _ => return Err(r.err("unsupported protocol version")),
    };
    r.finish()?;
    Ok(req)
}

/// Encodes a 3.0 startup message with the given parameters.
pub fn encode_startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// A request packet with only a code (SSLRequest) or a CancelRequest.
pub fn encode_request(code: i32, extra: &[i32]) -> Vec<u8> {
    let len = 8 + 4 * extra.len();
    let mut out = (len as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    for v in extra {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

/// Whether a Close or Describe names a prepared statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Statement,
    Portal,
}

/// A decoded client message after startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frontend<'a> {
    Query {
        sql: &'a str,
    },
    Parse {
        statement: &'a str,
        sql: &'a str,
        param_types: usize,
    },
    Bind {
        portal: &'a str,
        statement: &'a str,
        params: Values<'a>,
        param_formats: Formats<'a>,
        result_formats: Formats<'a>,
    },
    Describe {
        target: Target,
        name: &'a str,
    },
    Execute {
        portal: &'a str,
        max_rows: i32,
    },
    Close {
        target: Target,
        name: &'a str,
    },
    Sync,
    Flush,
    Terminate,
    CopyData(&'a [u8]),
    CopyDone,
    CopyFail {
        message: &'a str,
    },
    FunctionCall {
        function_oid: u32,
        args: Values<'a>,
        /// The result's format: 0 text, 1 binary.
        result_format: i16,
    },
    /// PasswordMessage, SASLInitialResponse or SASLResponse: which one depends on the
    /// authentication exchange in progress.
    Password(&'a [u8]),
}

/// Format codes (0 text, 1 binary), validated, kept as the wire bytes: decoding a Bind on
/// the hot path allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats<'a>(&'a [u8]);

impl<'a> Formats<'a> {
    pub fn len(&self) -> usize {
        self.0.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = i16> + Clone + 'a {
        self.0
            .chunks_exact(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
    }

    /// The format of value `i` by the protocol's rule: none means text, one applies to all.
    pub fn of(&self, i: usize) -> i16 {
        match self.len() {
            0 => 0,
            1 => self.iter().next().unwrap_or(0),
            _ => self.iter().nth(i).unwrap_or(0),
        }
    }
}

fn formats<'a>(r: &mut Reader<'a>) -> Result<Formats<'a>, MessageError> {
    let n = r.count16()?;
    let raw = r.bytes(n * 2)?;
    let formats = Formats(raw);
    if formats.iter().any(|f| f != 0 && f != 1) {
        return Err(r.err("unknown format code"));
    }
    Ok(formats)
}

/// Parameter or argument values (Int32 length, then the bytes; -1 is NULL), validated, kept
/// as the wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Values<'a> {
    raw: &'a [u8],
    count: usize,
}

impl<'a> Values<'a> {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = Option<&'a [u8]>> + 'a {
        let mut r = Reader::new(self.raw, "values");
        // Validated when decoded, so reading again cannot fail; stop quietly if it did.
        std::iter::from_fn(move || r.value().ok()).take(self.count)
    }
}

fn values<'a>(r: &mut Reader<'a>) -> Result<Values<'a>, MessageError> {
    let count = r.count16()?;
    let start = r.buf;
    for _ in 0..count {
        r.value()?;
    }
    let raw = &start[..start.len() - r.buf.len()];
    Ok(Values { raw, count })
}

fn target(r: &mut Reader<'_>) -> Result<Target, MessageError> {
    match r.u8()? {
        b'S' => Ok(Target::Statement),
        b'P' => Ok(Target::Portal),
        _ => Err(r.err("expected 'S' or 'P'")),
    }
}

/// Decodes a client message body by its tag.
pub fn decode_frontend(tag: u8, body: &[u8]) -> Result<Frontend<'_>, MessageError> {
    let what = frontend_name(tag);
    let mut r = Reader::new(body, what);
    let msg = match tag {
        b'Q' => Frontend::Query { sql: r.cstr()? },
        b'P' => {
            let statement = r.cstr()?;
            let sql = r.cstr()?;
            let n = r.count16()?;
            r.bytes(n * 4)?;
            Frontend::Parse {
                statement,
                sql,
                param_types: n,
            }
        }
        b'B' => {
            let portal = r.cstr()?;
            let statement = r.cstr()?;
            let param_formats = formats(&mut r)?;
            let params = values(&mut r)?;
            if param_formats.len() > 1 && param_formats.len() != params.len() {
                return Err(r.err("format count does not match parameter count"));
            }
            let result_formats = formats(&mut r)?;
            Frontend::Bind {
                portal,
                statement,
                params,
                param_formats,
                result_formats,
            }
        }
        b'D' => Frontend::Describe {
            target: target(&mut r)?,
            name: r.cstr()?,
        },
        b'E' => Frontend::Execute {
            portal: r.cstr()?,
            max_rows: r.i32()?,
        },
        b'C' => Frontend::Close {
            target: target(&mut r)?,
            name: r.cstr()?,
        },
        b'S' => Frontend::Sync,
        b'H' => Frontend::Flush,
        b'X' => Frontend::Terminate,
        b'c' => Frontend::CopyDone,
        b'd' => {
            r.buf = &[];
            Frontend::CopyData(body)
        }
        b'f' => Frontend::CopyFail { message: r.cstr()? },
        b'F' => {
            let function_oid = r.i32()? as u32;
            let arg_formats = formats(&mut r)?;
            let args = values(&mut r)?;
            if arg_formats.len() > 1 && arg_formats.len() != args.len() {
                return Err(r.err("format count does not match argument count"));
            }
            let result_format = r.i16()?;
            if result_format != 0 && result_format != 1 {
                return Err(r.err("unknown result format"));
            }
            Frontend::FunctionCall {
                function_oid,
                args,
                result_format,
            }
        }
        b'p' => {
            r.buf = &[];
            Frontend::Password(body)
        }
        _ => {
            return Err(MessageError {
                what: "client",
                problem: "unknown message type",
            });
        }
    };
    r.finish()?;
    Ok(msg)
}

fn frontend_name(tag: u8) -> &'static str {
    match tag {
        b'Q' => "Query",
        b'P' => "Parse",
        b'B' => "Bind",
        b'D' => "Describe",
        b'E' => "Execute",
        b'C' => "Close",
        b'S' => "Sync",
        b'H' => "Flush",
        b'X' => "Terminate",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'f' => "CopyFail",
        b'F' => "FunctionCall",
        b'p' => "PasswordMessage",
        _ => "client",
    }
}

/// SASLInitialResponse: mechanism name and the client's first message.
pub fn decode_sasl_initial(body: &[u8]) -> Result<(&str, &[u8]), MessageError> {
    let mut r = Reader::new(body, "SASLInitialResponse");
    let mechanism = r.cstr()?;
    let data = r.value()?.unwrap_or_default();
    r.finish()?;
    Ok((mechanism, data))
}

/// A PasswordMessage holding a cleartext password.
pub fn decode_password(body: &[u8]) -> Result<&str, MessageError> {
    let mut r = Reader::new(body, "PasswordMessage");
    let pw = r.cstr()?;
    r.finish()?;
    Ok(pw)
}

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

/// The server messages tollgate decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend<'a> {
    Authentication {
        code: i32,
        data: &'a [u8],
    },
    BackendKeyData {
        process_id: i32,
        secret_key: i32,
    },
    ReadyForQuery(TxStatus),
    ParameterStatus {
        name: &'a str,
        value: &'a str,
    },
    ErrorResponse(Fields<'a>),
    NoticeResponse(Fields<'a>),
    NegotiateProtocolVersion {
        newest_minor: i32,
    },
    /// Anything else: not looked into.
    Other,
}

/// The fields of an ErrorResponse or NoticeResponse, in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fields<'a>(pub Vec<(u8, &'a str)>);

impl<'a> Fields<'a> {
    pub fn get(&self, code: u8) -> Option<&'a str> {
        self.0.iter().find(|(c, _)| *c == code).map(|(_, v)| *v)
    }
}

fn fields<'a>(r: &mut Reader<'a>) -> Result<Fields<'a>, MessageError> {
    let mut v = Vec::new();
    loop {
        let code = r.u8()?;
        if code == 0 {
            return Ok(Fields(v));
        }
        v.push((code, r.cstr()?));
    }
}

/// Decodes the server messages of the startup phase and those the relay tracks.
pub fn decode_backend(tag: u8, body: &[u8]) -> Result<Backend<'_>, MessageError> {
    let mut r = Reader::new(body, "server");
    let msg = match tag {
        b'R' => {
            let code = r.i32()?;
            let data = r.buf;
            r.buf = &[];
            Backend::Authentication { code, data }
        }
        b'K' => Backend::BackendKeyData {
            process_id: r.i32()?,
            secret_key: r.i32()?,
        },
        b'Z' => Backend::ReadyForQuery(match r.u8()? {
            b'I' => TxStatus::Idle,
            b'T' => TxStatus::InTransaction,
            b'E' => TxStatus::Failed,
            _ => return Err(r.err("unknown transaction status")),
        }),
        b'S' => Backend::ParameterStatus {
            name: r.cstr()?,
            value: r.cstr()?,
        },
        b'E' => Backend::ErrorResponse(fields(&mut r)?),
        b'N' => Backend::NoticeResponse(fields(&mut r)?),
        b'v' => {
            let newest_minor = r.i32()?;
            r.buf = &[];
            Backend::NegotiateProtocolVersion { newest_minor }
        }
        _ => {
            r.buf = &[];
            Backend::Other
        }
    };
    r.finish()?;
    Ok(msg)
}

/// Severity of an error tollgate raises itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

/// Appends an ErrorResponse raised by tollgate.
pub fn put_error(out: &mut Vec<u8>, severity: Severity, sqlstate: &str, message: &str) {
    let sev = match severity {
        Severity::Error => "ERROR",
        Severity::Fatal => "FATAL",
    };
    let mut body = Vec::with_capacity(32 + message.len());
    for (code, value) in [(b'S', sev), (b'V', sev), (b'C', sqlstate), (b'M', message)] {
        body.push(code);
        // A NUL inside a field would end it early; tollgate's own messages never hold one.
        body.extend(value.bytes().filter(|&b| b != 0));
        body.push(0);
    }
    body.push(0);
    put_message(out, b'E', &body);
}

/// Appends a NoticeResponse of severity NOTICE.
pub fn put_notice(out: &mut Vec<u8>, sqlstate: &str, message: &str) {
    let mut body = Vec::with_capacity(32 + message.len());
    for (code, value) in [
        (b'S', "NOTICE"),
        (b'V', "NOTICE"),
        (b'C', sqlstate),
        (b'M', message),
    ] {
        body.push(code);
        body.extend(value.bytes().filter(|&b| b != 0));
        body.push(0);
    }
    body.push(0);
    put_message(out, b'N', &body);
}

/// Appends an Authentication message (`R`) with its code and data.
pub fn put_auth(out: &mut Vec<u8>, code: i32, data: &[u8]) {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    put_message(out, b'R', &body);
}

pub fn put_backend_key(out: &mut Vec<u8>, process_id: i32, secret_key: i32) {
    let mut body = process_id.to_be_bytes().to_vec();
    body.extend_from_slice(&secret_key.to_be_bytes());
    put_message(out, b'K', &body);
}

pub fn put_ready(out: &mut Vec<u8>, status: TxStatus) {
    put_message(out, b'Z', &[status.byte()]);
}

/// NegotiateProtocolVersion: tollgate speaks 3.0 and names the options it did not take.
/// The version field is the whole version (major in the high 16 bits), as PostgreSQL sends
/// it; libpq 18 refuses anything below 3.0 there.
pub fn put_negotiate(out: &mut Vec<u8>, unrecognized: &[&str]) {
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    body.extend_from_slice(&(unrecognized.len() as i32).to_be_bytes());
    for opt in unrecognized {
        body.extend_from_slice(opt.as_bytes());
        body.push(0);
    }
    put_message(out, b'v', &body);
}

/// Frontend messages tollgate itself sends upstream.
pub fn put_password(out: &mut Vec<u8>, data: &[u8]) {
    put_message(out, b'p', data);
}

pub fn put_sasl_initial(out: &mut Vec<u8>, mechanism: &str, data: &[u8]) {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&(data.len() as i32).to_be_bytes());
    body.extend_from_slice(data);
    put_message(out, b'p', &body);
}

#[cfg(test)]
mod tests;
