//! The plugin configuration text, read from the host in pieces: at 10,000 policies it is
//! megabytes of JSON, and the VM's memory never shrinks, so holding the whole text next to
//! the configuration parsed from it would raise every worker's memory for good. Pieces of
//! [`PIECE`] bytes are hashed (to find an engine another root already built) and then
//! parsed as a stream; no more than one piece and the parser's buffer are in the VM at once.

use super::seam::Host;
use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::io;

/// Bytes read per host call: ~40 calls for a 10,000-policy configuration.
pub(crate) const PIECE: usize = 64 * 1024;

/// Identifies configuration bytes without keeping them: length and two independent 64-bit
/// SipHashes (fixed keys, separated by a different prefix), 136 bits in all. The bytes come
/// from the control plane, not from traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfigKey(usize, u64, u64);

/// What a first pass over the text found.
pub(crate) enum Scan {
    /// No configuration, or only whitespace.
    Empty,
    Text(ConfigKey),
}

/// The `size` bytes of the plugin configuration (`on_configure`'s argument).
pub(crate) struct ConfigText<'h, H> {
    host: &'h H,
    size: usize,
}

impl<'h, H: Host> ConfigText<'h, H> {
    pub fn new(host: &'h H, size: usize) -> Self {
        ConfigText { host, size }
    }

    /// One pass: the key, or that there is nothing but whitespace.
    pub fn scan(&self) -> Result<Scan, String> {
        let mut a = DefaultHasher::new();
        let mut b = DefaultHasher::new();
        a.write_u8(0x5a);
        b.write_u8(0xa5);
        let mut blank = true;
        let mut reader = self.reader();
        let mut piece = vec![0u8; PIECE.min(self.size)];
        loop {
            let n = io::Read::read(&mut reader, &mut piece).map_err(|e| e.to_string())?;
            let Some(read) = piece.get(..n).filter(|r| !r.is_empty()) else {
                break;
            };
            a.write(read);
            b.write(read);
            blank = blank && read.iter().all(u8::is_ascii_whitespace);
        }
        Ok(match blank {
            true => Scan::Empty,
            false => Scan::Text(ConfigKey(self.size, a.finish(), b.finish())),
        })
    }

    /// The text as a stream, for `serde_json::from_reader` (through a `BufReader`: the
    /// parser reads byte by byte).
    pub fn reader(&self) -> Reader<'h, H> {
        Reader {
            host: self.host,
            at: 0,
            size: self.size,
        }
    }
}

pub(crate) struct Reader<'h, H> {
    host: &'h H,
    at: usize,
    size: usize,
}

impl<H: Host> io::Read for Reader<'_, H> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.size.saturating_sub(self.at)).min(PIECE);
        if want == 0 {
            return Ok(0);
        }
        let piece = self
            .host
            .plugin_configuration_part(self.at, want)
            .map_err(io::Error::other)?;
        let n = piece.len().min(want);
        // Fewer bytes than `on_configure` announced: a truncated text must not parse.
        let (Some(to), Some(from)) = (buf.get_mut(..n), piece.get(..n)) else {
            return Err(io::Error::other("the plugin configuration ended early"));
        };
        if n == 0 {
            return Err(io::Error::other(format!(
                "the plugin configuration ended at byte {} of {}",
                self.at, self.size
            )));
        }
        to.copy_from_slice(from);
        self.at += n;
        Ok(n)
    }
}
