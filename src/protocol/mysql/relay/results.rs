//! The server's answers streamed back: OK / ERR, result sets (column definitions and rows,
//! text or binary, through the masker), prepared-statement metadata, COM_FIELD_LIST, and a
//! LOCAL INFILE request.

use super::*;

impl Relay<'_> {
    /// A one-packet answer (OK, ERR, EOF, or COM_STATISTICS's text). Returns whether it was
    /// not an error.
    pub(super) async fn single_reply(&mut self, text: bool) -> Result<bool, End> {
        let p = self.next_server().await?;
        let ok = p.payload.first() != Some(&0xFF);
        self.server_packet(&p.payload, text).await?;
        self.finish().await?;
        Ok(ok)
    }

    /// Passes on an OK, EOF, ERR or text packet outside a result set.
    pub(super) async fn server_packet(&mut self, payload: &[u8], text: bool) -> Result<(), End> {
        match payload.first() {
            Some(0xFF) => {
                let masked = match wire::mask_err(payload, &self.masker) {
                    Ok(m) => m,
                    Err(e) => return Err(self.server_broke(e.to_string()).await),
                };
                let out = masked.as_deref().unwrap_or(payload);
                if let Ok(e) = wire::parse_err(out) {
                    self.frames.push(json!({"t": "err", "code": e.code, "message": String::from_utf8_lossy(e.message)}));
                }
                self.send_client(out).await
            }
            Some(0x00 | 0xFE) if !text => {
                if let Ok(st) = wire::status(payload) {
                    self.status = st.status;
                }
                let (affected, last_id) = wire::ok_counts(payload).unwrap_or((0, 0));
                self.frames
                    .push(json!({"t": "ok", "affected": affected, "last_insert_id": last_id}));
                match wire::mask_ok_info(payload, &self.masker) {
                    Some(masked) => self.send_client(&masked).await,
                    None => self.send_client(payload).await,
                }
            }
            _ => {
                let masked = self.masker.mask(payload);
                self.frames
                    .push(json!({"t": "text", "text": String::from_utf8_lossy(&masked)}));
                let masked = masked.into_owned();
                self.send_client(&masked).await
            }
        }
    }

    /// The answer to COM_QUERY or COM_STMT_EXECUTE: OK, ERR, or result sets, as many as the
    /// server says follow. Returns `false` when the answer ended with an ERR packet (the
    /// statement, or one of several, failed).
    pub(super) async fn results(
        &mut self,
        binary: bool,
        statement: Option<u32>,
    ) -> Result<bool, End> {
        loop {
            let p = self.next_server().await?;
            let payload = &p.payload[..];
            match payload.first() {
                Some(0x00) | Some(0xFF) => {
                    let err = payload[0] == 0xFF;
                    self.server_packet(payload, false).await?;
                    if err || self.status & wire::SERVER_MORE_RESULTS_EXISTS == 0 {
                        self.finish().await?;
                        return Ok(!err);
                    }
                }
                Some(0xFB) if !binary => {
                    self.local_infile(payload).await?;
                }
                _ => {
                    let count = match wire::Reader::new(payload, "column count").lenenc() {
                        Ok(Some(n)) if n > 0 && n < 65536 => n as usize,
                        _ => return Err(self.server_broke("bad column count".into()).await),
                    };
                    self.send_client(payload).await?;
                    let columns = self.column_defs(count).await?;
                    let mut cursor = false;
                    if self.caps & caps::DEPRECATE_EOF == 0 {
                        let eof = self.next_server().await?;
                        if !wire::is_eof(&eof.payload, false) {
                            return Err(self
                                .server_broke("no EOF after the column definitions".into())
                                .await);
                        }
                        if let Ok(st) = wire::status(&eof.payload) {
                            cursor = st.status & SERVER_STATUS_CURSOR_EXISTS != 0;
                        }
                        self.send_client(&eof.payload).await?;
                    }
                    if let Some(id) = statement
                        && let Some(st) = self.statements.get_mut(&id)
                    {
                        st.columns = columns.clone();
                        st.sources = self.sources.clone();
                    }
                    if cursor {
                        // Rows come later, through COM_STMT_FETCH.
                        self.finish().await?;
                        return Ok(true);
                    }
                    let more = self.rows(&columns, binary).await?;
                    if !more {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// Column definitions: masked, passed on, and their masks returned.
    pub(super) async fn column_defs(&mut self, count: usize) -> Result<Vec<ColumnMask>, End> {
        let rules = &self.ctx.column_rules;
        let mut masks = Vec::with_capacity(count);
        let mut names = Vec::with_capacity(count);
        let mut sources = Vec::with_capacity(count);
        for _ in 0..count {
            let p = self.next_server().await?;
            let def = match wire::parse_column(&p.payload) {
                Ok(d) => d,
                Err(e) => return Err(self.server_broke(e.to_string()).await),
            };
            if matches!(def.charset, 35 | 54..=56 | 60 | 61 | 90 | 101..=124 | 128..=151 | 159..=183)
            {
                // UCS-2, UTF-16 and UTF-32 text: digits the masker cannot see. (The session is
                // pinned to utf8mb4, so only a CONVERT … USING could produce this.)
                return Err(self
                    .server_broke(format!(
                        "a column in a wide character set ({})",
                        def.charset
                    ))
                    .await);
            }
            let forced = !rules.is_empty()
                && (rules.output_name(&def.name)
                    || rules.source(&crate::mask::columns::SourceColumn {
                        schema: def.schema.clone(),
                        table: def.org_table.clone(),
                        column: def.org_name.clone(),
                    }));
            masks.push(ColumnMask::of(&def, forced));
            // A column of a table (not computed): its values can promote it.
            sources.push(
                (!forced && !def.org_table.is_empty() && !def.org_name.is_empty()).then(|| {
                    Arc::from(format!("{}.{}.{}", def.schema, def.org_table, def.org_name))
                }),
            );
            let masked = match wire::mask_column_def(&p.payload, &self.masker) {
                Ok(m) => m,
                Err(e) => return Err(self.server_broke(e.to_string()).await),
            };
            names.push(Value::String(
                String::from_utf8_lossy(&self.masker.mask(def.name.as_bytes())).into_owned(),
            ));
            self.send_client(masked.as_deref().unwrap_or(&p.payload))
                .await?;
        }
        self.frames.push(json!({"t": "columns", "names": names}));
        self.sources = sources;
        Ok(masks)
    }

    /// Rows up to their terminator; returns whether another result set follows.
    pub(super) async fn rows(&mut self, columns: &[ColumnMask], binary: bool) -> Result<bool, End> {
        let deprecate_eof = self.caps & caps::DEPRECATE_EOF != 0;
        let mut count: u64 = 0;
        loop {
            let p = self.next_server().await?;
            let payload = &p.payload[..];
            if payload.first() == Some(&0xFF) {
                if count > 0 {
                    self.frames.push(json!({"t": "rows", "n": count}));
                }
                self.server_packet(payload, false).await?;
                self.finish().await?;
                return Ok(false);
            }
            if wire::is_eof(payload, deprecate_eof) {
                if let Ok(st) = wire::status(payload) {
                    self.status = st.status;
                }
                self.frames.push(json!({"t": "end", "rows": count}));
                self.send_client(payload).await?;
                let more = self.status & wire::SERVER_MORE_RESULTS_EXISTS != 0;
                if !more {
                    self.finish().await?;
                }
                return Ok(more);
            }
            let masked = if binary {
                wire::mask_binary_row(payload, columns, &self.masker)
            } else {
                wire::mask_text_row(payload, columns, &self.masker)
            };
            let masked = match masked {
                Ok(m) => m,
                // A row tollgate cannot decode cannot be masked: fail closed.
                Err(e) => return Err(self.server_broke(e.to_string()).await),
            };
            if let Some(m) = &masked {
                metrics::counter!(crate::metrics::MASKED).increment(1);
                let found = found_in(payload, m, columns, binary);
                self.promote(found).await;
            }
            if self.counting.is_some() && self.count_row(payload.len()).await? {
                // The cap: the statement was killed, its answer drained, the client told.
                self.frames
                    .push(json!({"t": "rows", "n": count, "capped": true}));
                return Ok(false);
            }
            let out = masked.as_deref().unwrap_or(payload);
            count += 1;
            self.frame_rows += 1;
            self.frame_masked += u64::from(masked.is_some());
            if self.full && self.recorder.is_some() {
                let values = row_values(out, columns, binary, &self.masker);
                self.frames.push(json!({"t": "row", "v": values}));
            }
            self.send_client(out).await?;
        }
    }

    /// A card number was found in these result columns: the table columns they come from are
    /// promoted for the target (`conn::promotion`), logged and recorded.
    async fn promote(&mut self, found: Vec<usize>) {
        for i in found {
            let Some(Some(name)) = self.sources.get(i).cloned() else {
                continue;
            };
            if !self.promoted_here.insert(Arc::clone(&name)) {
                continue;
            }
            let Some(target) = self.ctx.mysql_targets.get(&self.info.target) else {
                continue;
            };
            if !target.promoted.promote(&name) {
                continue;
            }
            warn!(target = %self.info.target, column = %name, "a card number was found in a column no rule protects: computing over it is refused from now on");
            if let Some(recorder) = self.recorder {
                let event = Event::new(
                    audit::kind::COLUMN_PROMOTED,
                    Outcome::Info,
                    self.info.who.clone(),
                    json!({"column": &*name, "target": self.info.target}),
                );
                let _ = recorder.record_wait(event).await;
            }
        }
    }

    /// COM_STMT_PREPARE's answer: OK with the statement id, then parameter and column
    /// definitions; or ERR.
    pub(super) async fn prepare_reply(&mut self) -> Result<(), End> {
        let p = self.next_server().await?;
        let payload = &p.payload[..];
        if payload.first() != Some(&0x00) {
            self.server_packet(payload, false).await?;
            return self.finish().await;
        }
        let mut r = wire::Reader::new(payload, "COM_STMT_PREPARE_OK");
        let parsed = (|| {
            r.u8()?;
            Ok::<_, wire::Malformed>((r.u32()?, r.u16()?, r.u16()?))
        })();
        let Ok((id, columns, params)) = parsed else {
            return Err(self.server_broke("bad COM_STMT_PREPARE_OK".into()).await);
        };
        self.frames
            .push(json!({"t": "prepared", "statement": id, "columns": columns, "params": params}));
        self.send_client(payload).await?;
        let deprecate_eof = self.caps & caps::DEPRECATE_EOF != 0;
        for n in [params, columns] {
            if n == 0 {
                continue;
            }
            self.column_defs(usize::from(n)).await?;
            if !deprecate_eof {
                let eof = self.next_server().await?;
                self.send_client(&eof.payload).await?;
            }
        }
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(
            id,
            Prepared {
                columns: Vec::new(),
                sources: Vec::new(),
                params,
                param_types: Vec::new(),
                cap: self.last_cap.take(),
                counted: (0, 0),
            },
        );
        self.finish().await
    }

    /// COM_FIELD_LIST's answer: column definitions up to EOF, or ERR.
    pub(super) async fn field_list(&mut self) -> Result<(), End> {
        loop {
            let p = self.next_server().await?;
            let payload = &p.payload[..];
            if payload.first() == Some(&0xFF) || wire::is_eof(payload, true) {
                self.server_packet(payload, false).await?;
                return self.finish().await;
            }
            let masked = match wire::mask_column_def(payload, &self.masker) {
                Ok(m) => m,
                Err(e) => return Err(self.server_broke(e.to_string()).await),
            };
            self.send_client(masked.as_deref().unwrap_or(payload))
                .await?;
        }
    }

    /// The server asks for a local file (LOAD DATA LOCAL INFILE). Passed to the client only
    /// when the statement in flight is a LOAD DATA LOCAL the policy let through; the file's
    /// packets then stream to the server (recorded by size, not content). Otherwise the server
    /// gets an empty file and answers with its error.
    pub(super) async fn local_infile(&mut self, request: &[u8]) -> Result<(), End> {
        if !self.local_infile || self.caps & caps::LOCAL_FILES == 0 {
            warn!(conn = %self.info.id, "the server asked for a local file outside an allowed LOAD DATA LOCAL; refused");
            self.frames
                .push(json!({"t": "local_infile", "refused": true}));
            // An empty packet: "no file".
            self.server.send(2, &[]).await.map_err(io)?;
            return Ok(());
        }
        self.frames.push(json!({"t": "local_infile", "file": String::from_utf8_lossy(&self.masker.mask(&request[1..]))}));
        self.send_client(request).await?;
        self.finish().await?;
        let mut sseq: u8 = 2;
        let mut bytes: u64 = 0;
        let max = self.ctx.config.limits.max_client_frame;
        loop {
            let p = match self.client.read(max).await {
                Ok(p) => p,
                Err(e) => return Err(End::ClientProtocol(e.to_string())),
            };
            if p.seq != self.cseq {
                let e = packet::Error::Sequence {
                    got: p.seq,
                    want: self.cseq,
                };
                return Err(self
                    .close(
                        1156,
                        "08S01",
                        &format!("Got packets out of order: {e}"),
                        End::ClientProtocol(e.to_string()),
                    )
                    .await);
            }
            self.cseq = p.next_seq;
            bytes += p.payload.len() as u64;
            sseq = self.server.send(sseq, &p.payload).await.map_err(io)?;
            if p.payload.is_empty() {
                break;
            }
        }
        self.frames
            .push(json!({"t": "local_infile_data", "bytes": bytes}));
        Ok(())
    }
}

/// The parameters of a COM_STMT_EXECUTE (after the statement id) as a binary row, with their
/// types (sent now, or `known` from the last execute), for the record stage.
pub(super) fn execute_params(
    body: &[u8],
    params: usize,
    known: Vec<ColumnMask>,
) -> Option<(Vec<ColumnMask>, Vec<u8>)> {
    let mut r = wire::Reader::new(body, "COM_STMT_EXECUTE");
    r.bytes(4 + 1 + 4).ok()?;
    let bitmap = r.bytes(params.div_ceil(8)).ok()?.to_vec();
    let bound = r.u8().ok()?;
    let types = if bound == 1 {
        let mut t = Vec::with_capacity(params);
        for _ in 0..params {
            let ty = r.u8().ok()?;
            let flags = r.u8().ok()?;
            t.push(ColumnMask {
                ty,
                unsigned: flags & 0x80 != 0,
                numeric: false,
                forced: false,
            });
        }
        t
    } else {
        known
    };
    if types.len() != params {
        return None;
    }
    // Re-frame as a binary row (header, NULL bitmap at offset 2) so the row walker reads it.
    let mut row = vec![0x00];
    let mut shifted = vec![0u8; (params + 7 + 2) / 8];
    for i in 0..params {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            shifted[(i + 2) / 8] |= 1 << ((i + 2) % 8);
        }
    }
    row.extend_from_slice(&shifted);
    row.extend_from_slice(r.rest());
    wire::binary_values(&row, types.iter().map(|c| c.ty)).ok()?;
    Some((types, row))
}

/// The columns whose values masking changed (`masked` is `original` masked).
fn found_in(original: &[u8], masked: &[u8], columns: &[ColumnMask], binary: bool) -> Vec<usize> {
    let values = |row| -> Vec<Option<&[u8]>> {
        if binary {
            return wire::binary_values(row, columns.iter().map(|c| c.ty)).unwrap_or_default();
        }
        let mut r = wire::Reader::new(row, "text row");
        columns
            .iter()
            .map(|_| r.lenenc_bytes().ok().flatten())
            .collect()
    };
    let (before, after) = (values(original), values(masked));
    (0..columns.len())
        .filter(|&i| !columns[i].forced && before.get(i) != after.get(i))
        .collect()
}

/// A row's values as recorded: text as text, binary integers decoded, other binary values
/// by length.
pub(super) fn row_values(
    payload: &[u8],
    columns: &[ColumnMask],
    binary: bool,
    masker: &Masker,
) -> Vec<Value> {
    let text = |v: &[u8]| -> Value {
        let m = masker.mask(v);
        match std::str::from_utf8(&m) {
            Ok(s)
                if !s
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') =>
            {
                Value::String(s.to_owned())
            }
            _ => json!({"binary": v.len()}),
        }
    };
    if !binary {
        let mut r = wire::Reader::new(payload, "text row");
        return columns
            .iter()
            .map(|_| match r.lenenc_bytes() {
                Ok(Some(v)) => text(v),
                _ => Value::Null,
            })
            .collect();
    }
    let Ok(values) = wire::binary_values(payload, columns.iter().map(|c| c.ty)) else {
        return Vec::new();
    };
    use wire::types::*;
    values
        .iter()
        .zip(columns)
        .map(|(v, c)| match v {
            None => Value::Null,
            Some(v) => match (c.ty, v.len()) {
                (LONGLONG, 8) => {
                    let b: [u8; 8] = (*v).try_into().unwrap_or([0; 8]);
                    let n = if c.unsigned {
                        u64::from_le_bytes(b).to_string()
                    } else {
                        i64::from_le_bytes(b).to_string()
                    };
                    text(n.as_bytes())
                }
                (LONG | INT24, 4) => {
                    Value::from(i32::from_le_bytes((*v).try_into().unwrap_or([0; 4])))
                }
                (SHORT | YEAR, 2) => {
                    Value::from(i16::from_le_bytes((*v).try_into().unwrap_or([0; 2])))
                }
                (TINY, 1) => Value::from(v[0]),
                (FLOAT | DOUBLE | DATE | DATETIME | TIMESTAMP | TIME | NULL, _) => {
                    json!({"binary": v.len()})
                }
                _ => text(v),
            },
        })
        .collect()
}
