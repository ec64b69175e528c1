//! Output helpers shared by the subcommands.

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

pub use peerguard_filter::schema::PolicySummary;

/// Where an mTLS mode came from, for people.
pub fn mode_source(from: Option<&str>) -> String {
    from.map(|f| format!("set by {f}"))
        .unwrap_or_else(|| "nothing configured: Istio's default".into())
}
