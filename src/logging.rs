//! The log sink, the one masking point toward the log: every line tollgate writes (message,
//! fields, spans, in text or JSON) passes the masker as a whole before it reaches the writer,
//! so no call site has to remember (logs are storage too, PCI DSS 3.5.1). Dependencies' own
//! events (sqlparser's debug lines carry statement text, sqlx's carry queries) are capped at
//! `warn` whatever `TOLLGATE_LOG` asks for; tollgate's own follow it.

use std::io::Write;

use tracing::{Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

/// A [`MakeWriter`] whose writers hold a line and write it masked when dropped (the fmt
/// layer makes one writer per event).
pub struct MaskingWriter<M>(pub M);

/// One event's bytes on their way to the inner writer.
pub struct MaskedLine<W: Write> {
    inner: W,
    line: Vec<u8>,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for MaskingWriter<M> {
    type Writer = MaskedLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        MaskedLine {
            inner: self.0.make_writer(),
            line: Vec::new(),
        }
    }
}

impl<W: Write> Write for MaskedLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for MaskedLine<W> {
    fn drop(&mut self) {
        let masked = crate::mask::sink_masker().mask(&self.line);
        let _ = self.inner.write_all(&masked);
        let _ = self.inner.flush();
    }
}

/// Whether an event passes the cap on dependencies: tollgate's own at any level, others at
/// `warn` and above.
fn within_cap(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("tollgate") || *meta.level() <= Level::WARN
}

/// The subscriber tollgate logs through: `spec` in `EnvFilter` syntax (`TOLLGATE_LOG`,
/// `info` when absent or invalid), text or JSON lines, masked, to `writer`.
pub fn subscriber<M>(spec: Option<&str>, json: bool, writer: M) -> impl Subscriber + Send + Sync
where
    M: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let env = spec
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let filter = env.and(filter_fn(within_cap));
    let fmt = tracing_subscriber::fmt::layer().with_writer(MaskingWriter(writer));
    let layer = if json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    Registry::default().with(layer)
}

/// Installs the daemon's subscriber (stderr, `TOLLGATE_LOG`), and routes the `log` crate's
/// records (sqlparser and others) into it.
pub fn init(json: bool) {
    use tracing_subscriber::util::SubscriberInitExt;
    let spec = std::env::var("TOLLGATE_LOG").ok();
    let _ = subscriber(spec.as_deref(), json, std::io::stderr).try_init();
}
