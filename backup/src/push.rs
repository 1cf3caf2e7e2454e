//! Off-site copies: a verified set handed to `rclone` (so every rclone backend
//! works), artifacts first and `manifest.json` last — a half-pushed set has no
//! manifest and is recognisably incomplete. With `--encrypt-to`, each artifact
//! is streamed through `age` (the config archive holds the `.env` secrets)
//! and uploaded as `<file>.age` with `rclone rcat`, never staged in clear.

use crate::{codec, io_out, set, verify, BackupError, Settings};
use daon_common::process::Cmd;
use daon_common::{output, ExitCode};
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};

/// Uploads are as long as they need; a day is the backstop.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

fn join(remote: &str, parts: &[&str]) -> String {
    let mut r = remote.trim_end_matches('/').to_string();
    for p in parts {
        r.push('/');
        r.push_str(p);
    }
    r
}

/// Pushes the set `which` to `to`.
pub fn push(
    s: &Settings,
    which: &str,
    to: &str,
    recipients: &[String],
    out: &mut impl Write,
) -> Result<ExitCode, BackupError> {
    let st = set::resolve(&s.dest, which).map_err(BackupError::NotFound)?;
    let m = st.manifest().ok_or_else(|| {
        BackupError::NotFound(format!(
            "{} has no manifest: only complete sets are pushed",
            st.name
        ))
    })?;
    let problems: Vec<String> = verify::set(&st.path, m, &[])
        .into_iter()
        .flat_map(|c| c.problems)
        .collect();
    if !problems.is_empty() {
        return Err(BackupError::Mismatch(problems));
    }
    let start = Instant::now();
    let mut pushed = Vec::new();
    for a in &m.artifacts {
        let src = st.path.join(&a.file);
        let dst_name = if recipients.is_empty() {
            a.file.clone()
        } else {
            format!("{}.age", a.file)
        };
        let dst = join(to, &[&st.name, &dst_name]);
        if recipients.is_empty() {
            Cmd::new("rclone")
                .args(["copyto", "--no-traverse"])
                .arg(&src)
                .arg(&dst)
                .timeout(UPLOAD_TIMEOUT)
                .run()
                .map_err(|e| BackupError::Failed(vec![format!("{}: {e}", a.file)]))?;
        } else {
            let mut age = Cmd::new("age");
            for r in recipients {
                age = age.args(["-r", r]);
            }
            let mut reader = age
                .arg(&src)
                .reader()
                .map_err(|e| BackupError::Failed(vec![format!("{}: {e}", a.file)]))?;
            let rcat = Cmd::new("rclone").args(["rcat", &dst]);
            let (o, feed_err) = rcat
                .run_feeding(|w| codec::copy(&mut reader, &mut &mut *w).map(|_| ()))
                .map_err(|e| BackupError::Failed(vec![format!("{}: {e}", a.file)]))?;
            if let Some(e) = feed_err {
                return Err(BackupError::Failed(vec![format!(
                    "{}: encrypting with age failed: {e}; the remote copy of {} is incomplete (no manifest was pushed)",
                    a.file, st.name
                )]));
            }
            rcat.check(&o)
                .map_err(|e| BackupError::Failed(vec![format!("{}: {e}", a.file)]))?;
        }
        if !s.quiet && !s.json {
            eprintln!("daon-backup: pushed {} to {dst}", a.file);
        }
        pushed.push(dst_name);
    }
    // Last: the manifest marks the remote copy complete.
    let dst = join(to, &[&st.name, set::MANIFEST]);
    Cmd::new("rclone")
        .args(["copyto", "--no-traverse"])
        .arg(st.path.join(set::MANIFEST))
        .arg(&dst)
        .timeout(UPLOAD_TIMEOUT)
        .run()
        .map_err(|e| BackupError::Failed(vec![format!("{}: {e}", set::MANIFEST)]))?;
    pushed.push(set::MANIFEST.to_string());
    let secs = start.elapsed().as_secs_f64();
    if s.json {
        output::json_line(
            out,
            "summary",
            json!({"set": st.name, "to": join(to, &[&st.name]), "files": pushed, "encrypted": !recipients.is_empty(), "size": m.size(), "seconds": secs}),
        )
        .map_err(io_out)?;
    } else {
        writeln!(out, "{}", join(to, &[&st.name])).map_err(io_out)?;
    }
    Ok(ExitCode::Ok)
}
