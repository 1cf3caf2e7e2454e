//! Compression and hashing on streams: artifacts flow from the source through
//! a compressor and a SHA-256 hasher straight to disk (and back through a
//! hasher and a decompressor when verifying), never held whole in memory.

use daon_common::config::Compression;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT/SIGTERM: long copies stop at the next buffer with an error,
/// so cleanup guards (restart services, drop the partial set) run.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// zstd job size when multi-threaded (see [`Encoder::new`]).
pub const JOB_SIZE: u32 = 2 << 20;

/// Buffer size of our copy loops.
pub const BUF: usize = 1 << 20;

/// The file name suffix for a compression (`zst`, `gz`).
pub fn extension(c: Compression) -> &'static str {
    match c {
        Compression::Zstd => "zst",
        Compression::Gzip => "gz",
    }
}

/// The name used in manifests and messages.
pub fn name(c: Compression) -> &'static str {
    match c {
        Compression::Zstd => "zstd",
        Compression::Gzip => "gzip",
    }
}

/// A compressing writer of either kind; [`Encoder::finish`] writes the trailer.
pub enum Encoder<W: Write> {
    /// zstd, possibly multi-threaded.
    Zstd(zstd::Encoder<'static, W>),
    /// gzip.
    Gzip(flate2::write::GzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// A new encoder: zstd at `level` with `threads` workers (0: one per core),
    /// or gzip at its default level 6 (what `gzip` and `tar czf` use).
    pub fn new(w: W, c: Compression, level: i32, threads: u32) -> io::Result<Encoder<W>> {
        Ok(match c {
            Compression::Zstd => {
                let mut e = zstd::Encoder::new(w, level)?;
                let n = if threads == 0 {
                    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
                } else {
                    threads
                };
                if n > 1 {
                    e.multithread(n)?;
                    // zstd's default job is 4 windows (8 MB at level 3) and it
                    // keeps about 2 jobs per worker in flight; 2 MB jobs keep
                    // peak RSS well under 64 MB at a negligible cost in ratio.
                    e.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))?;
                }
                e.include_checksum(true)?;
                Encoder::Zstd(e)
            }
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::new(6),
            )),
        })
    }

    /// Ends the stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
        }
    }
}

/// A decompressing reader of either kind.
pub fn decoder<'a, R: Read + 'a>(r: R, c: Compression) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::Zstd => Box::new(zstd::Decoder::new(r)?),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(r))),
    })
}

/// Guesses the compression from a file name (`.zst` / `.gz`).
pub fn from_file_name(name: &str) -> Option<Compression> {
    if name.ends_with(".zst") {
        Some(Compression::Zstd)
    } else if name.ends_with(".gz") || name.ends_with(".tgz") {
        Some(Compression::Gzip)
    } else {
        None
    }
}

/// SHA-256 as lowercase hex.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that hashes and counts what passes through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    /// Bytes written so far.
    pub bytes: u64,
}

impl<W: Write> HashWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
    /// The inner writer, the hex digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what passes through it.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    /// Bytes read so far.
    pub bytes: u64,
}

impl<R: Read> HashReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
    /// Reads what is left (a decompressor may stop before a trailing
    /// padding), then returns the hex digest and byte count.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((hex(&self.hasher.finalize()), self.bytes))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Counts bytes read through it (the uncompressed size while verifying).
pub struct CountReader<R> {
    /// The wrapped reader.
    pub inner: R,
    /// Bytes read so far.
    pub bytes: u64,
}

impl<R: Read> Read for CountReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Counts bytes written through it (the uncompressed size while writing).
pub struct CountWriter<W> {
    /// The wrapped writer.
    pub inner: W,
    /// Bytes written so far.
    pub bytes: u64,
}

impl<W: Write> Write for CountWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "interrupted by a signal",
            ));
        }
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies everything with a large buffer; stops early when interrupted.
pub fn copy(r: &mut impl Read, w: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "interrupted by a signal",
            ));
        }
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    && !INTERRUPTED.load(Ordering::Relaxed) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_both_codecs_and_hashes_match() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [Compression::Zstd, Compression::Gzip] {
            let mut e = Encoder::new(HashWriter::new(Vec::new()), c, 3, 2).unwrap();
            e.write_all(&data).unwrap();
            let (buf, sha, n) = e.finish().unwrap().finish();
            assert_eq!(n as usize, buf.len());
            let mut hr = HashReader::new(&buf[..]);
            let mut back = Vec::new();
            decoder(&mut hr, c).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
            assert_eq!(hr.finish().unwrap().0, sha);
        }
    }
}
