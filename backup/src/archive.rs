//! Tar archives the way a backup tool needs them. Writing: a file that grows
//! while it is read (the chain appends a block a second) is archived at the
//! size it had when opened, so the archive never gets "write too long"; a file
//! that vanishes is skipped. Reading: every entry is checked and a hostile one
//! — absolute path, `..`, a symlink or hard link leading outside, a device
//! file — is *rejected* with its name (the `tar` crate's `unpack_in` strips or
//! silently skips those); extraction never follows a symlink.

use crate::codec::INTERRUPTED;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use tar::{EntryType, Header, HeaderMode};

/// What went into (or came out of) an archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarStats {
    /// Entries (files, directories, links).
    pub entries: u64,
    /// Regular files.
    pub files: u64,
    /// Bytes of regular-file content.
    pub file_bytes: u64,
    /// Paths left out, with the reason (vanished while reading, special file).
    pub skipped: Vec<String>,
}

fn interrupted() -> io::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "interrupted by a signal",
        ))
    } else {
        Ok(())
    }
}

/// Reads exactly `remaining` bytes: zero-fills if the file shrank.
struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.remaining as usize);
        let n = match self.inner.read(&mut buf[..max])? {
            0 => {
                buf[..max].fill(0);
                max
            }
            n => n,
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

fn append_path<W: Write>(
    b: &mut tar::Builder<W>,
    abs: &Path,
    rel: &Path,
    st: &mut TarStats,
) -> io::Result<()> {
    interrupted()?;
    let meta = match fs::symlink_metadata(abs) {
        Ok(m) => m,
        Err(e) if vanished(&e) => {
            st.skipped.push(format!("{}: vanished", rel.display()));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let ft = meta.file_type();
    let mut h = Header::new_gnu();
    if ft.is_file() {
        let f = match File::open(abs) {
            Ok(f) => f,
            Err(e) if vanished(&e) => {
                st.skipped.push(format!("{}: vanished", rel.display()));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // The size when opened is the size archived.
        let meta = f.metadata()?;
        h.set_metadata_in_mode(&meta, HeaderMode::Complete);
        let size = meta.len();
        b.append_data(
            &mut h,
            rel,
            Exact {
                inner: f.take(size),
                remaining: size,
            },
        )?;
        st.files += 1;
        st.file_bytes += size;
    } else if ft.is_dir() {
        h.set_metadata_in_mode(&meta, HeaderMode::Complete);
        h.set_size(0);
        b.append_data(&mut h, rel, io::empty())?;
        let mut children: Vec<_> = match fs::read_dir(abs) {
            Ok(rd) => rd.collect::<io::Result<Vec<_>>>()?,
            Err(e) if vanished(&e) => Vec::new(),
            Err(e) => return Err(e),
        };
        children.sort_by_key(|c| c.file_name());
        st.entries += 1;
        for c in children {
            append_path(b, &c.path(), &rel.join(c.file_name()), st)?;
        }
        return Ok(());
    } else if ft.is_symlink() {
        let target = match fs::read_link(abs) {
            Ok(t) => t,
            Err(e) if vanished(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        h.set_metadata_in_mode(&meta, HeaderMode::Complete);
        h.set_size(0);
        b.append_link(&mut h, rel, target)?;
    } else {
        st.skipped.push(format!(
            "{}: special file (socket, FIFO or device)",
            rel.display()
        ));
        return Ok(());
    }
    st.entries += 1;
    Ok(())
}

/// Archives the contents of `root` (paths relative to it, `root` itself not
/// included) into `w`; returns the writer and what was archived.
pub fn tar_dir<W: Write>(root: &Path, w: W) -> io::Result<(W, TarStats)> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    let mut st = TarStats::default();
    let mut children: Vec<_> = fs::read_dir(root)?.collect::<io::Result<Vec<_>>>()?;
    children.sort_by_key(|c| c.file_name());
    for c in children {
        append_path(&mut b, &c.path(), Path::new(&c.file_name()), &mut st)?;
    }
    Ok((b.into_inner()?, st))
}

/// Archives named files (relative to `base`, stored under those relative
/// names); a missing file is an error naming it.
pub fn tar_files<W: Write>(base: &Path, files: &[PathBuf], w: W) -> io::Result<(W, TarStats)> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    let mut st = TarStats::default();
    for f in files {
        let abs = base.join(f);
        if fs::symlink_metadata(&abs).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", abs.display()),
            ));
        }
        append_path(&mut b, &abs, f, &mut st)?;
    }
    Ok((b.into_inner()?, st))
}

/// Re-writes a tar stream (from `tar -cf -` in a container) as our own:
/// checked, normalised paths, counted. Reads `r` to its end, so a failing
/// producer's exit status surfaces: the error met at the end of the stream
/// (after a complete archive) is returned beside the result, for the caller
/// to judge (GNU tar exits 1 for files that changed while read).
pub fn retar<R: Read, W: Write>(r: &mut R, w: W) -> io::Result<(W, TarStats, Option<io::Error>)> {
    let mut b = tar::Builder::new(w);
    let mut st = TarStats::default();
    let mut checker = Checker::default();
    {
        let mut ar = tar::Archive::new(&mut *r);
        for e in ar.entries()? {
            interrupted()?;
            let mut e = e?;
            let path = e.path()?.into_owned();
            let link = e.link_name()?.map(|l| l.into_owned());
            let ty = e.header().entry_type();
            let Some(rel) = checker
                .check(&path, ty, link.as_deref())
                .map_err(io::Error::other)?
            else {
                continue;
            };
            let mut h = e.header().clone();
            match ty {
                EntryType::Symlink | EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, &rel, link.unwrap_or_default())?;
                }
                _ => {
                    if ty.is_file() {
                        st.files += 1;
                        st.file_bytes += e.header().size()?;
                    }
                    b.append_data(&mut h, &rel, &mut e)?;
                }
            }
            st.entries += 1;
        }
    }
    // Drain to EOF so the producer's exit status is read.
    let end = io::copy(r, &mut io::sink()).err();
    Ok((b.into_inner()?, st, end))
}

/// Normalises an archive path: relative, no `..`, `.` removed. Errors say why.
pub fn normalize(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(x) => out.push(x),
            Component::CurDir => {}
            Component::ParentDir => return Err("has a `..` component".into()),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path".into()),
        }
    }
    Ok(out)
}

/// Checks entries one by one, remembering symlinks so that a link through
/// another link cannot lead outside either.
#[derive(Debug, Default)]
pub struct Checker {
    symlinks: HashSet<PathBuf>,
    pending: Vec<(PathBuf, PathBuf)>,
}

impl Checker {
    /// Checks one entry; returns its normalised path (`None` for the root
    /// directory entry `./`), or why it is hostile, naming it.
    pub fn check(
        &mut self,
        path: &Path,
        ty: EntryType,
        link: Option<&Path>,
    ) -> Result<Option<PathBuf>, String> {
        let name = path.display();
        let rel = normalize(path).map_err(|why| format!("hostile entry {name:?}: {why}"))?;
        match ty {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            EntryType::Symlink => {
                let target =
                    link.ok_or_else(|| format!("entry {name:?}: symlink without target"))?;
                if target.is_absolute() {
                    return Err(format!(
                        "hostile entry {name:?}: symlink to the absolute path {:?} (points outside the target)",
                        target.display()
                    ));
                }
                resolve_within(&rel, target).map_err(|why| {
                    format!(
                        "hostile entry {name:?}: symlink to {:?} {why}",
                        target.display()
                    )
                })?;
                self.symlinks.insert(rel.clone());
                self.pending.push((rel.clone(), target.to_path_buf()));
            }
            EntryType::Link => {
                let target =
                    link.ok_or_else(|| format!("entry {name:?}: hard link without target"))?;
                normalize(target).map_err(|why| {
                    format!(
                        "hostile entry {name:?}: hard link to {:?}, which {why}",
                        target.display()
                    )
                })?;
            }
            EntryType::Char | EntryType::Block => {
                return Err(format!("hostile entry {name:?}: device file"))
            }
            EntryType::Fifo => return Err(format!("hostile entry {name:?}: FIFO (named pipe)")),
            other => return Err(format!("entry {name:?}: unsupported entry type {other:?}")),
        }
        if rel.as_os_str().is_empty() {
            if ty == EntryType::Directory {
                return Ok(None);
            }
            return Err(format!(
                "hostile entry {name:?}: not a directory but names the target itself"
            ));
        }
        Ok(Some(rel))
    }

    /// After the last entry: no symlink may lead out through another symlink
    /// (`a -> ..` then `a/b -> ../..` looks inside but is not).
    pub fn finish(&self) -> Result<(), String> {
        for (rel, target) in &self.pending {
            let mut cur: Vec<PathBuf> = Vec::new();
            let mut path = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            for c in path.components() {
                cur.push(PathBuf::from(c.as_os_str()));
            }
            for c in target.components() {
                match c {
                    Component::ParentDir => {
                        let joined: PathBuf = cur.iter().collect();
                        if self.symlinks.contains(&joined) {
                            return Err(format!(
                                "hostile entry {:?}: symlink to {:?} goes `..` through the symlink {:?}",
                                rel.display(),
                                target.display(),
                                joined.display()
                            ));
                        }
                        cur.pop();
                    }
                    Component::Normal(x) => cur.push(PathBuf::from(x)),
                    _ => {}
                }
            }
            path.clear();
        }
        Ok(())
    }
}

fn resolve_within(rel: &Path, target: &Path) -> Result<(), String> {
    let mut depth: i64 = rel.parent().map_or(0, |p| p.components().count() as i64);
    for c in target.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err("points outside the target".into());
                }
            }
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return Err("is absolute".into()),
        }
    }
    Ok(())
}

/// An entry's path and link target, as the hostile-entry check sees them
/// (one reading for `scan` and `extract`, so the two can never disagree).
fn names<R: Read>(e: &tar::Entry<'_, R>) -> Result<(PathBuf, Option<PathBuf>), String> {
    let path = e
        .path()
        .map_err(|e| format!("bad entry name: {e}"))?
        .into_owned();
    let link = e
        .link_name()
        .map_err(|e| format!("bad link name: {e}"))?
        .map(|l| l.into_owned());
    Ok((path, link))
}

/// Reads a whole archive (all data), checking every entry; the first
/// hostile entry is an error naming it. This is what `verify` and the
/// before-touching check of `restore` run.
pub fn scan<R: Read>(r: R) -> Result<TarStats, String> {
    let mut st = TarStats::default();
    let mut checker = Checker::default();
    let mut ar = tar::Archive::new(r);
    let entries = ar
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for e in entries {
        interrupted().map_err(|e| e.to_string())?;
        let mut e = e.map_err(|e| format!("corrupt archive: {e}"))?;
        let (path, link) = names(&e)?;
        let ty = e.header().entry_type();
        if checker.check(&path, ty, link.as_deref())?.is_none() {
            continue;
        }
        let n = io::copy(&mut e, &mut io::sink())
            .map_err(|err| format!("corrupt archive at {:?}: {err}", path.display()))?;
        if ty.is_file() {
            st.files += 1;
            st.file_bytes += n;
        }
        st.entries += 1;
    }
    checker.finish()?;
    Ok(st)
}

fn ensure_parent(dest: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = dest.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(format!(
                        "entry {:?}: its parent {:?} is not a directory (a symlink or file); refusing to follow it",
                        rel.display(),
                        cur.display()
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).map_err(|e| format!("creating {}: {e}", cur.display()))?
                }
                Err(e) => return Err(format!("{}: {e}", cur.display())),
            }
        }
    }
    Ok(())
}

fn remove_non_dir(p: &Path) -> Result<(), String> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_dir() => Err(format!(
            "{} exists as a directory and the archive has a file there",
            p.display()
        )),
        Ok(_) => fs::remove_file(p).map_err(|e| format!("removing {}: {e}", p.display())),
        Err(_) => Ok(()),
    }
}

/// Extracts an archive into the existing directory `dest` (a staging
/// directory, never live data), checking every entry as [`scan`] does and
/// never following a symlink. Ownership is kept when `owners` (root).
pub fn extract<R: Read>(r: R, dest: &Path, owners: bool) -> Result<TarStats, String> {
    extract_under(r, dest, owners, Path::new(""))
}

/// [`extract`], taking only what is under `prefix` inside the archive and
/// dropping the prefix (the runbooks' `tar czf - /daon/.daon` stores
/// `daon/.daon/...`). Directory entries above the prefix are skipped; any
/// other entry outside it is an error naming it.
pub fn extract_under<R: Read>(
    r: R,
    dest: &Path,
    owners: bool,
    prefix: &Path,
) -> Result<TarStats, String> {
    let mut st = TarStats::default();
    let mut checker = Checker::default();
    let mut dirs: Vec<(PathBuf, u32, u64, u64, u64)> = Vec::new();
    let mut ar = tar::Archive::new(r);
    let entries = ar
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for e in entries {
        interrupted().map_err(|e| e.to_string())?;
        let mut e = e.map_err(|e| format!("corrupt archive: {e}"))?;
        let (path, link) = names(&e)?;
        let h = e.header();
        let ty = h.entry_type();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
        let mtime = h.mtime().unwrap_or(0);
        let Some(rel) = checker.check(&path, ty, link.as_deref())? else {
            continue;
        };
        let Some(rel) = under(&rel, ty, prefix)? else {
            continue;
        };
        let link = match (ty, link) {
            (EntryType::Link, Some(l)) => {
                let l = normalize(&l)?;
                Some(l.strip_prefix(prefix).map(Path::to_path_buf).map_err(|_| {
                    format!(
                        "entry {:?}: hard link to {:?}, outside {:?}",
                        rel.display(),
                        l.display(),
                        prefix.display()
                    )
                })?)
            }
            (_, l) => l,
        };
        ensure_parent(dest, &rel)?;
        let target = dest.join(&rel);
        let io_err = |what: &str, e: io::Error| format!("{what} {}: {e}", target.display());
        match ty {
            EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.file_type().is_dir() => {}
                    Ok(_) => {
                        remove_non_dir(&target)?;
                        fs::create_dir(&target).map_err(|e| io_err("creating", e))?
                    }
                    Err(_) => fs::create_dir(&target).map_err(|e| io_err("creating", e))?,
                }
                dirs.push((target.clone(), mode, uid, gid, mtime));
            }
            EntryType::Symlink => {
                remove_non_dir(&target)?;
                std::os::unix::fs::symlink(link.unwrap_or_default(), &target)
                    .map_err(|e| io_err("creating symlink", e))?;
                if owners {
                    let _ = std::os::unix::fs::lchown(&target, Some(uid as u32), Some(gid as u32));
                }
            }
            EntryType::Link => {
                let src = dest.join(normalize(&link.unwrap_or_default())?);
                match fs::symlink_metadata(&src) {
                    Ok(m) if m.file_type().is_file() => {}
                    _ => {
                        return Err(format!(
                        "entry {:?}: hard link to {:?}, which is not a file extracted before it",
                        rel.display(),
                        src.display()
                    ))
                    }
                }
                remove_non_dir(&target)?;
                fs::hard_link(&src, &target).map_err(|e| io_err("creating hard link", e))?;
            }
            _ => {
                remove_non_dir(&target)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(rustix_nofollow())
                    .open(&target)
                    .map_err(|e| io_err("creating", e))?;
                let n = crate::codec::copy(&mut e, &mut f).map_err(|e| io_err("writing", e))?;
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|e| io_err("setting mode of", e))?;
                let _ = f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime));
                if owners {
                    let _ = std::os::unix::fs::fchown(&f, Some(uid as u32), Some(gid as u32));
                }
                st.files += 1;
                st.file_bytes += n;
            }
        }
        st.entries += 1;
    }
    checker.finish()?;
    for (d, mode, uid, gid, mtime) in dirs.into_iter().rev() {
        if owners {
            let _ = std::os::unix::fs::chown(&d, Some(uid as u32), Some(gid as u32));
        }
        let _ = fs::set_permissions(&d, fs::Permissions::from_mode(mode));
        if let Ok(f) = File::open(&d) {
            let _ = f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime));
        }
    }
    Ok(st)
}

fn under(rel: &Path, ty: EntryType, prefix: &Path) -> Result<Option<PathBuf>, String> {
    if prefix.as_os_str().is_empty() {
        return Ok(Some(rel.to_path_buf()));
    }
    match rel.strip_prefix(prefix) {
        Ok(x) if x.as_os_str().is_empty() => Ok(None),
        Ok(x) => Ok(Some(x.to_path_buf())),
        Err(_) if ty == EntryType::Directory && prefix.starts_with(rel) => Ok(None),
        Err(_) => Err(format!(
            "entry {:?} is outside {:?}, the folder this archive should hold",
            rel.display(),
            prefix.display()
        )),
    }
}

/// The longest folder every non-directory entry of an archive lies in
/// (`daon/.daon` for the runbooks' chain archive), or empty. Reads the whole archive.
pub fn common_prefix<R: Read>(r: R) -> Result<PathBuf, String> {
    let mut ar = tar::Archive::new(r);
    let mut prefix: Option<PathBuf> = None;
    for e in ar
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?
    {
        let e = e.map_err(|e| format!("corrupt archive: {e}"))?;
        let p = normalize(&e.path().map_err(|e| format!("bad entry name: {e}"))?)?;
        // Directory entries above the data (`daon/`) do not narrow it.
        if e.header().entry_type() == EntryType::Directory {
            continue;
        }
        let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
        prefix = Some(match prefix {
            None => dir,
            Some(cur) => cur
                .components()
                .zip(dir.components())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a.as_os_str())
                .collect(),
        });
    }
    Ok(prefix.unwrap_or_default())
}

fn rustix_nofollow() -> i32 {
    // O_NOFOLLOW: the final component is never a symlink we follow.
    0o400000
}

/// True when the current user is root (ownership can be restored).
pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn raw_tar(entries: &[(&str, EntryType, &str, &[u8])]) -> Vec<u8> {
        // Build headers by hand so hostile names survive (the builder refuses some).
        let mut out = Vec::new();
        for (name, ty, link, data) in entries {
            let mut h = Header::new_gnu();
            {
                let raw = h.as_old_mut();
                raw.name[..name.len()].copy_from_slice(name.as_bytes());
                raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_entry_type(*ty);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    #[test]
    fn hostile_entries_are_rejected_by_name() {
        for (entries, want) in [
            (
                vec![("../escape", EntryType::Regular, "", &b"x"[..])],
                "../escape",
            ),
            (
                vec![("/etc/passwd", EntryType::Regular, "", &b"x"[..])],
                "/etc/passwd",
            ),
            (
                vec![("ok/../../x", EntryType::Regular, "", &b"x"[..])],
                "ok/../../x",
            ),
            (vec![("evil", EntryType::Symlink, "/etc", &b""[..])], "evil"),
            (
                vec![("a/evil", EntryType::Symlink, "../../etc", &b""[..])],
                "a/evil",
            ),
            (vec![("hl", EntryType::Link, "../outside", &b""[..])], "hl"),
            (vec![("dev", EntryType::Char, "", &b""[..])], "device"),
            (
                vec![
                    ("sub/l", EntryType::Symlink, "..", &b""[..]),
                    ("sub/m", EntryType::Symlink, "l/..", &b""[..]),
                ],
                "sub/m",
            ),
        ] {
            let t = raw_tar(&entries);
            let err = scan(&t[..]).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
            let d = tempfile::tempdir().unwrap();
            let stage = d.path().join("stage");
            fs::create_dir(&stage).unwrap();
            let err = extract(&t[..], &stage, false).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
            assert!(!d.path().join("escape").exists());
        }
    }

    #[test]
    fn the_runbooks_absolute_chain_archive_extracts_under_its_prefix() {
        // `tar czf - /daon/.daon` stores daon/.daon/...
        let t = raw_tar(&[
            ("daon/", EntryType::Directory, "", b""),
            ("daon/.daon/", EntryType::Directory, "", b""),
            (
                "daon/.daon/data/blocks.log",
                EntryType::Regular,
                "",
                b"1 2 3",
            ),
            (
                "daon/.daon/config/genesis.json",
                EntryType::Regular,
                "",
                b"{}",
            ),
        ]);
        assert_eq!(common_prefix(&t[..]).unwrap(), Path::new("daon/.daon"));
        let d = tempfile::tempdir().unwrap();
        let x = extract_under(&t[..], d.path(), false, Path::new("daon/.daon")).unwrap();
        assert_eq!(x.files, 2);
        assert_eq!(
            fs::read(d.path().join("data/blocks.log")).unwrap(),
            b"1 2 3"
        );
        let outside = raw_tar(&[("etc/x", EntryType::Regular, "", b"x")]);
        let d2 = tempfile::tempdir().unwrap();
        let err =
            extract_under(&outside[..], d2.path(), false, Path::new("daon/.daon")).unwrap_err();
        assert!(err.contains("etc/x"), "{err}");
    }

    #[test]
    fn writing_through_an_archived_symlink_is_refused() {
        let t = raw_tar(&[
            ("link", EntryType::Symlink, ".", b""),
            ("link/file", EntryType::Regular, "", b"x"),
        ]);
        let d = tempfile::tempdir().unwrap();
        let err = extract(&t[..], d.path(), false).unwrap_err();
        assert!(err.contains("link/file"), "{err}");
    }

    #[test]
    fn dir_round_trip_keeps_content_modes_and_links() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("data/sub")).unwrap();
        fs::write(src.join("data/sub/a"), b"hello").unwrap();
        fs::write(src.join("top"), vec![7u8; 100_000]).unwrap();
        fs::set_permissions(src.join("top"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("data/sub/a", src.join("ln")).unwrap();
        let (buf, st) = tar_dir(&src, Vec::new()).unwrap();
        assert_eq!((st.files, st.file_bytes), (2, 100_005));
        assert_eq!(scan(&buf[..]).unwrap().files, 2);
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        let x = extract(&buf[..], &out, false).unwrap();
        assert_eq!(x.file_bytes, 100_005);
        assert_eq!(fs::read(out.join("data/sub/a")).unwrap(), b"hello");
        assert_eq!(
            fs::read_link(out.join("ln")).unwrap(),
            Path::new("data/sub/a")
        );
        let mode = fs::metadata(out.join("top")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_file_growing_while_archived_keeps_the_archive_valid() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("grow");
        fs::write(&f, vec![1u8; 1000]).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut st = TarStats::default();
        // Open, then grow, as the chain does between stat and read.
        let file = File::open(&f).unwrap();
        let mut h = Header::new_gnu();
        h.set_metadata_in_mode(&file.metadata().unwrap(), HeaderMode::Complete);
        fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .unwrap()
            .write_all(&[2u8; 5000])
            .unwrap();
        b.append_data(
            &mut h,
            "grow",
            Exact {
                inner: file.take(1000),
                remaining: 1000,
            },
        )
        .unwrap();
        st.files += 1;
        let buf = b.into_inner().unwrap();
        assert_eq!(scan(&buf[..]).unwrap().file_bytes, 1000);
    }
}
