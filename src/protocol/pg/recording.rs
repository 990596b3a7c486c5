//! What the record stage keeps of PostgreSQL frames: each relay batch becomes one
//! `client_frames` or `server_frames` event listing its frames in order.
//!
//! Values are recorded as the client saw them, after masking, and the masker runs once more
//! over everything recorded (idempotent on masked text), so bind parameters, COPY data and
//! text that never went through the transform stage are masked too. A value that is not
//! clean UTF-8 text is recorded by its length only (`{"binary": n}`): binary encodings can
//! hold a card number the text scanner cannot see (a binary `bigint` parameter, say), so
//! their content is not kept, except binary `bigint` result values, decoded and masked. Statement texts are in the
//! `statement` events, so Query and Parse frames here carry only their shape; password
//! messages never reach the relay.

use serde_json::{Value, json};

use super::messages::{Frontend, Target};
use super::results::Column;
use crate::mask::Masker;

/// One value as recorded.
fn value(v: Option<&[u8]>, masker: &Masker) -> Value {
    let Some(v) = v else { return Value::Null };
    let masked = masker.mask(v);
    match std::str::from_utf8(&masked) {
        Ok(text)
            if !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') =>
        {
            Value::String(text.to_owned())
        }
        _ => json!({ "binary": v.len() }),
    }
}

/// A result value whose column is known: binary `bigint` decoded (then masked as text),
/// other binary values by length, text values as text.
fn column_value(v: Option<&[u8]>, column: Option<&Column>, masker: &Masker) -> Value {
    match (v, column) {
        (Some(v), Some(c)) if c.format == 1 => match (c.type_oid, <[u8; 8]>::try_from(v)) {
            (20, Ok(b)) => value(Some(i64::from_be_bytes(b).to_string().as_bytes()), masker),
            (25 | 1043 | 1042 | 19 | 705, _) => value(Some(v), masker),
            _ => json!({ "binary": v.len() }),
        },
        _ => value(v, masker),
    }
}

fn text(t: &str, masker: &Masker) -> Value {
    Value::String(String::from_utf8_lossy(&masker.mask(t.as_bytes())).into_owned())
}

fn target(t: Target) -> &'static str {
    match t {
        Target::Statement => "statement",
        Target::Portal => "portal",
    }
}

/// A client frame, or `None` for what is not recorded here.
pub fn client_frame(msg: &Frontend<'_>, masker: &Masker, full: bool) -> Option<Value> {
    Some(match msg {
        Frontend::Query { .. } => json!({"t": "Q"}),
        Frontend::Parse {
            statement,
            param_types,
            ..
        } => json!({"t": "P", "statement": text(statement, masker), "param_types": param_types}),
        Frontend::Bind {
            portal,
            statement,
            params,
            ..
        } => json!({
            "t": "B",
            "portal": text(portal, masker),
            "statement": text(statement, masker),
            "params": params.iter().map(|p| value(p, masker)).collect::<Vec<_>>(),
        }),
        Frontend::Describe { target: t, name } => {
            json!({"t": "D", "target": target(*t), "name": text(name, masker)})
        }
        Frontend::Execute { portal, max_rows } => {
            json!({"t": "E", "portal": text(portal, masker), "max_rows": max_rows})
        }
        Frontend::Close { target: t, name } => {
            json!({"t": "C", "target": target(*t), "name": text(name, masker)})
        }
        Frontend::Sync => json!({"t": "S"}),
        Frontend::Flush => json!({"t": "H"}),
        Frontend::Terminate => json!({"t": "X"}),
        Frontend::CopyData(data) if full => json!({"t": "d", "data": value(Some(data), masker)}),
        Frontend::CopyData(data) => json!({"t": "d", "bytes": data.len()}),
        Frontend::CopyDone => json!({"t": "c"}),
        Frontend::CopyFail { message } => json!({"t": "f", "message": text(message, masker)}),
        Frontend::FunctionCall {
            function_oid, args, ..
        } => json!({
            "t": "F",
            "oid": function_oid,
            "args": args.iter().map(|a| value(a, masker)).collect::<Vec<_>>(),
        }),
        Frontend::Password(_) => return None,
    })
}

/// A server batch being recorded.
pub struct ServerBatch {
    pub frames: Vec<Value>,
    /// Rows (and COPY lines) in the batch, their bytes, and frames the masker changed.
    pub rows: u64,
    pub bytes: u64,
    pub masked: u64,
    /// Rows not listed one by one (summary mode) since the last listed frame.
    summarised_rows: u64,
    summarised_bytes: u64,
    full: bool,
}

impl ServerBatch {
    pub fn new(full: bool) -> ServerBatch {
        ServerBatch {
            frames: Vec::new(),
            rows: 0,
            bytes: 0,
            masked: 0,
            summarised_rows: 0,
            summarised_bytes: 0,
            full,
        }
    }

    fn push(&mut self, frame: Value) {
        self.close_summary();
        self.frames.push(frame);
    }

    fn close_summary(&mut self) {
        if self.summarised_rows > 0 {
            self.frames.push(
                json!({"t": "D", "rows": self.summarised_rows, "bytes": self.summarised_bytes}),
            );
            self.summarised_rows = 0;
            self.summarised_bytes = 0;
        }
    }

    /// A frame as sent to the client (after the transform stage); `masked` says whether the
    /// transform changed it.
    pub fn frame(
        &mut self,
        tag: u8,
        body: &[u8],
        columns: Option<&[Column]>,
        masker: &Masker,
        masked: bool,
    ) {
        if masked {
            self.masked += 1;
        }
        match tag {
            b'D' | b'd' => {
                self.rows += 1;
                self.bytes += body.len() as u64;
                if !self.full {
                    self.summarised_rows += 1;
                    self.summarised_bytes += body.len() as u64;
                } else if tag == b'd' {
                    self.push(json!({"t": "d", "data": value(Some(body), masker)}));
                } else {
                    let values = super::transform::split_row(body)
                        .map(|vs| {
                            Value::Array(
                                vs.into_iter()
                                    .enumerate()
                                    .map(|(i, v)| {
                                        column_value(v, columns.and_then(|c| c.get(i)), masker)
                                    })
                                    .collect(),
                            )
                        })
                        .unwrap_or_else(|| json!({ "unreadable_row": body.len() }));
                    self.push(json!({"t": "D", "values": values}));
                }
            }
            b'T' => self.push(json!({"t": "T", "columns": column_names(body, masker)})),
            b'C' => self.push(json!({"t": "C", "tag": text(&cstr(body), masker)})),
            b'E' | b'N' => {
                let mut f = serde_json::Map::new();
                f.insert("t".into(), json!((tag as char).to_string()));
                let decoded = match super::messages::decode_backend(tag, body) {
                    Ok(super::messages::Backend::ErrorResponse(f))
                    | Ok(super::messages::Backend::NoticeResponse(f)) => f.0,
                    _ => Vec::new(),
                };
                for (code, v) in decoded {
                    let key = match code {
                        b'S' => "severity",
                        b'C' => "sqlstate",
                        b'M' => "message",
                        b'D' => "detail",
                        b'H' => "hint",
                        b'W' => "where",
                        b's' => "schema",
                        b't' => "table",
                        b'c' => "column",
                        b'n' => "constraint",
                        _ => continue,
                    };
                    f.insert(key.into(), text(v, masker));
                }
                self.push(Value::Object(f));
            }
            b'A' => {
                // NotificationResponse: process id, channel, payload (masked like any text).
                let mut parts = body.get(4..).unwrap_or_default().splitn(3, |&b| b == 0);
                let mut part = || {
                    text(
                        &String::from_utf8_lossy(parts.next().unwrap_or_default()),
                        masker,
                    )
                };
                let channel = part();
                let payload = part();
                self.push(json!({"t": "A", "channel": channel, "payload": payload}));
            }
            b'Z' => self
                .push(json!({"t": "Z", "status": body.first().map(|b| (*b as char).to_string())})),
            b'G' | b'H' | b'W' => self.push(json!({"t": (tag as char).to_string()})),
            b'V' => self.push(json!({"t": "V", "result": value(body.get(4..), masker)})),
            b'I' => self.push(json!({"t": "I"})),
            b's' => self.push(json!({"t": "s"})),
            b'1' | b'2' | b'3' | b'n' | b't' | b'S' | b'K' | b'c' => {
                // Protocol bookkeeping (ParseComplete, BindComplete…): listed by tag.
                self.push(json!({"t": (tag as char).to_string()}));
            }
            _ => self.push(json!({"t": (tag as char).to_string()})),
        }
    }

    /// The event detail, or `None` for an empty batch.
    pub fn finish(mut self) -> Option<Value> {
        self.close_summary();
        if self.frames.is_empty() {
            return None;
        }
        Some(
            json!({"frames": self.frames, "rows": self.rows, "bytes": self.bytes, "masked": self.masked}),
        )
    }
}

fn cstr(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

fn column_names(body: &[u8], masker: &Masker) -> Vec<Value> {
    let mut out = Vec::new();
    let Some(count) = body.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
        return out;
    };
    let mut rest = &body[2..];
    for _ in 0..count.max(0) {
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            break;
        };
        out.push(text(&String::from_utf8_lossy(&rest[..end]), masker));
        rest = rest.get(end + 1 + 18..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::Format;

    #[test]
    fn rows_are_recorded_masked_and_binary_as_base64() {
        let masker = Masker::new(Format::BinLast4, None);
        let mut body = vec![0, 3];
        for v in [&b"4111111111111111"[..], b"\x00\x01"] {
            body.extend_from_slice(&(v.len() as i32).to_be_bytes());
            body.extend_from_slice(v);
        }
        body.extend_from_slice(&(-1i32).to_be_bytes());
        let mut batch = ServerBatch::new(true);
        batch.frame(b'D', &body, None, &masker, false);
        let detail = batch.finish().unwrap();
        assert_eq!(
            detail["frames"][0]["values"],
            json!(["411111******1111", {"binary": 2}, null])
        );
        // A binary bigint column: decoded, then masked like text.
        let mut body = vec![0, 1];
        body.extend_from_slice(&8i32.to_be_bytes());
        body.extend_from_slice(&4111111111111111i64.to_be_bytes());
        let cols = [Column {
            type_oid: 20,
            format: 1,
            masked: false,
            source: (0, 0),
        }];
        let mut batch = ServerBatch::new(true);
        batch.frame(b'D', &body, Some(&cols), &masker, false);
        assert_eq!(
            batch.finish().unwrap()["frames"][0]["values"],
            json!(["411111******1111"])
        );
        assert_eq!(detail["rows"], 1);
    }

    #[test]
    fn summary_mode_counts_rows() {
        let masker = Masker::new(Format::BinLast4, None);
        let mut batch = ServerBatch::new(false);
        batch.frame(b'D', &[0, 0], None, &masker, false);
        batch.frame(b'D', &[0, 0], None, &masker, false);
        batch.frame(b'C', b"SELECT 2\0", None, &masker, false);
        let detail = batch.finish().unwrap();
        assert_eq!(
            detail["frames"][0],
            json!({"t": "D", "rows": 2, "bytes": 4})
        );
        assert_eq!(detail["frames"][1], json!({"t": "C", "tag": "SELECT 2"}));
    }
}
