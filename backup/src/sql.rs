//! Reads a plain-SQL `pg_dump` as it streams past: rows per table (one line
//! per row between `COPY … FROM stdin;` and `\.`) and whether pg_dump wrote its
//! closing line. The counts come from the dump itself, so they are exactly
//! what a restore must bring back — no second query racing the writers.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// The last line pg_dump writes on success.
pub const DUMP_COMPLETE: &str = "-- PostgreSQL database dump complete";

/// Counts rows per table in a dump written through it.
#[derive(Debug, Default)]
pub struct DumpScanner {
    line: Vec<u8>,
    line_len: usize,
    copying: Option<String>,
    /// Rows per table.
    pub tables: BTreeMap<String, u64>,
    /// Bytes seen.
    pub bytes: u64,
    /// Whether the closing comment was seen.
    pub complete: bool,
}

const KEEP: usize = 4096;

impl DumpScanner {
    fn end_line(&mut self) {
        let line = &self.line[..];
        if let Some(t) = &self.copying {
            if line == b"\\." {
                self.copying = None;
            } else {
                *self.tables.entry(t.clone()).or_default() += 1;
            }
        } else if line.starts_with(b"COPY ") && line.ends_with(b" FROM stdin;") {
            let s = String::from_utf8_lossy(&line[5..]);
            let name = s.split([' ', '(']).next().unwrap_or("").to_string();
            self.tables.entry(name.clone()).or_default();
            self.copying = Some(name);
        } else if line.starts_with(DUMP_COMPLETE.as_bytes()) {
            self.complete = true;
        }
        self.line.clear();
        self.line_len = 0;
    }
}

impl Write for DumpScanner {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes += buf.len() as u64;
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let take = (KEEP.saturating_sub(self.line.len())).min(i);
            self.line.extend_from_slice(&rest[..take]);
            self.line_len += i;
            self.end_line();
            rest = &rest[i + 1..];
        }
        let take = (KEEP.saturating_sub(self.line.len())).min(rest.len());
        self.line.extend_from_slice(&rest[..take]);
        self.line_len += rest.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes to two writers.
pub struct Tee<A, B>(pub A, pub B);

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        self.1.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.1.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_rows_per_table_across_chunk_boundaries() {
        let dump = "SET x;\nCOPY public.a (id, v) FROM stdin;\n1\tone\n2\ttwo\n\\.\n\nCOPY public.\"B\" (id) FROM stdin;\n\\.\nCOPY public.c (id) FROM stdin;\n7\n\\.\n-- PostgreSQL database dump complete\n\n";
        for chunk in [1, 3, 7, 1000] {
            let mut s = DumpScanner::default();
            for c in dump.as_bytes().chunks(chunk) {
                s.write_all(c).unwrap();
            }
            assert_eq!(s.tables["public.a"], 2);
            assert_eq!(s.tables["public.\"B\""], 0);
            assert_eq!(s.tables["public.c"], 1);
            assert!(s.complete);
        }
        let mut s = DumpScanner::default();
        s.write_all(b"COPY public.a (id) FROM stdin;\n1\n").unwrap();
        assert!(!s.complete);
    }
}
