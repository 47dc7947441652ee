//! Log set-up shared by the binaries. Without TLS every line says so.

use std::io::Write;

/// Marks each formatted line: a field for JSON lines, a prefix for text lines.
struct Marked<W> {
    inner: W,
    json: bool,
}

impl<W: Write> Write for Marked<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // tracing-subscriber's fmt layer writes each event as one buffer.
        let line = if self.json && buf.first() == Some(&b'{') {
            [
                &br#"{"insecure":"PLAINTEXT, loopback only","#[..],
                &buf[1..],
            ]
            .concat()
        } else if self.json {
            buf.to_vec()
        } else {
            [&b"INSECURE (plaintext, loopback only) "[..], buf].concat()
        };
        self.inner.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Logs to stderr, as JSON lines or text; `insecure` marks every line.
pub fn init(json: bool, insecure: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let writer = move || -> Box<dyn Write> {
        if insecure {
            Box::new(Marked {
                inner: std::io::stderr(),
                json,
            })
        } else {
            Box::new(std::io::stderr())
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
