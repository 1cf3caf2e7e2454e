//! The restore drill the runbooks ask for monthly, automated: verify the set,
//! restore its dump into a throwaway PostgreSQL container (no network, removed
//! afterwards) and compare every table's row count with the manifest, extract
//! the chain archive into a temporary directory and compare file count and
//! bytes. The live stack is never touched.

use crate::{RestoreError, Settings};
use daon_backup::archive;
use daon_backup::set::Kind;
use daon_backup::verify;
use daon_common::docker::Docker;
use daon_common::notify::Report;
use daon_common::ExitCode;
use serde_json::json;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Removes the throwaway container on drop.
struct Throwaway<'a> {
    docker: &'a Docker,
    name: String,
}

impl Drop for Throwaway<'_> {
    fn drop(&mut self) {
        let _ = self
            .docker
            .cmd()
            .timeout(Duration::from_secs(60))
            .args(["rm", "-f", "-v", &self.name])
            .run();
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    daon_backup::codec::hex(&b)
}

/// Runs the drill.
pub fn run(
    s: &Settings,
    out: &mut impl Write,
    notice: &mut Report,
) -> Result<ExitCode, RestoreError> {
    let io = |e: std::io::Error| {
        RestoreError::Common(daon_common::Error::io("writing", "standard output", e))
    };
    let started = Instant::now();
    let _lock = daon_backup::take_lock(&s.config, s.lock_wait, "daon-restore drill")?;
    let (st, manifest) = crate::resolve_and_verify(s)?;
    notice.subject = format!("restore drill of {}", st.name);
    notice.set("set", st.name.clone());
    let m = manifest.ok_or_else(|| RestoreError::Refused {
        set: st.name.clone(),
        problems: vec!["a set without a manifest has nothing to compare with".into()],
    })?;
    let c = &s.config;
    let docker = Docker::new(c);
    let mut problems = Vec::new();
    let report =
        |out: &mut dyn Write, part: &str, ok: bool, detail: String| -> Result<(), RestoreError> {
            if s.json {
                daon_common::output::json_line(
                    &mut &mut *out,
                    "check",
                    json!({"part": part, "ok": ok, "detail": detail}),
                )
                .map_err(io)?;
            } else {
                writeln!(
                    out,
                    "{:<8} {:<5} {detail}",
                    part,
                    if ok { "ok" } else { "FAIL" }
                )
                .map_err(io)?;
            }
            Ok(())
        };

    if let (true, Some(a)) = (s.only.contains(&Kind::Database), m.artifact(Kind::Database)) {
        let name = format!("daon-restore-drill-{}", std::process::id());
        let user = &c.postgres.user;
        let db = &c.postgres.database;
        let password = random_hex();
        let mut run = docker
            .cmd()
            .timeout(Duration::from_secs(120))
            .args(["run", "-d", "--network", "none", "--name", &name])
            .args(["-e", &format!("POSTGRES_USER={user}")])
            .args(["-e", &format!("POSTGRES_DB={db}")])
            .args(["-e", &format!("POSTGRES_PASSWORD={password}")]);
        if let Some((first, rest)) = c.backup.drill_entrypoint.split_first() {
            run = run.args(["--entrypoint", first]);
            run = run.arg(&c.backup.drill_image).args(rest);
        } else {
            run = run.arg(&c.backup.drill_image);
        }
        s.say(&format!(
            "starting a throwaway PostgreSQL ({}) as {name}",
            c.backup.drill_image
        ));
        let guard = Throwaway {
            docker: &docker,
            name: name.clone(),
        };
        run.run().map_err(|e| {
            RestoreError::Failed(format!(
                "starting the drill database: {}",
                docker.classify(e)
            ))
        })?;
        // Ready when it answers on TCP: the init-time server listens on the socket only.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ok = docker
                .cmd()
                .args([
                    "exec",
                    "-e",
                    &format!("PGPASSWORD={password}"),
                    &name,
                    "psql",
                    "-X",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    user,
                    "-d",
                    db,
                    "-c",
                    "select 1",
                ])
                .run()
                .is_ok();
            if ok {
                break;
            }
            if Instant::now() >= deadline {
                let logs = docker
                    .cmd()
                    .args(["logs", "--tail", "20", &name])
                    .run_unchecked()
                    .map(|o| o.stderr_str())
                    .unwrap_or_default();
                return Err(RestoreError::Failed(format!(
                    "the drill database did not start within 2 min:\n{logs}"
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        s.say(&format!("restoring {} into it", a.file));
        match crate::restore::psql_restore(&docker, &name, user, db, &st.path, a, "") {
            Err(e) => {
                problems.push(format!("database: the dump does not restore: {e}"));
                report(out, "database", false, format!("psql failed: {e}"))?;
            }
            Ok(()) => {
                let want = a.tables.clone().unwrap_or_default();
                let mut bad = Vec::new();
                for (t, n) in &want {
                    let got = docker
                        .exec(
                            &name,
                            &[
                                "psql".into(),
                                "-X".into(),
                                "-At".into(),
                                "-U".into(),
                                user.clone(),
                                "-d".into(),
                                db.clone(),
                                "-c".into(),
                                format!("SELECT count(*) FROM {t}"),
                            ],
                        )
                        .run()
                        .map(|o| o.stdout_str().trim().parse::<u64>().unwrap_or(u64::MAX));
                    match got {
                        Ok(g) if g == *n => {}
                        Ok(g) => bad.push(format!(
                            "table {t}: {g} rows restored, the manifest says {n}"
                        )),
                        Err(e) => bad.push(format!("table {t}: cannot count rows: {e}")),
                    }
                }
                let ok = bad.is_empty();
                let rows: u64 = want.values().sum();
                report(
                    out,
                    "database",
                    ok,
                    if ok {
                        format!(
                            "{} tables, {rows} rows, counts match the manifest",
                            want.len()
                        )
                    } else {
                        bad.join("; ")
                    },
                )?;
                problems.extend(bad.into_iter().map(|b| format!("database: {b}")));
            }
        }
        drop(guard);
    }

    if let (true, Some(a)) = (s.only.contains(&Kind::Chain), m.artifact(Kind::Chain)) {
        let dir = tempfile::Builder::new()
            .prefix(".daon-restore-drill-")
            .tempdir_in(&c.paths.backup_dir)
            .map_err(|e| {
                daon_common::Error::io("creating a temporary directory in", &c.paths.backup_dir, e)
            })?;
        let r = verify::open(&st.path, a)
            .map_err(|e| daon_common::Error::io("reading", st.path.join(&a.file), e))?;
        match archive::extract(r, dir.path(), false) {
            Ok(x) if Some(x.files) == a.files && Some(x.file_bytes) == a.file_bytes => {
                report(
                    out,
                    "chain",
                    true,
                    format!(
                        "{} files, {} bytes extracted, as the manifest says",
                        x.files, x.file_bytes
                    ),
                )?;
            }
            Ok(x) => {
                let d = format!(
                    "extracted {} files / {} bytes, the manifest says {:?} / {:?}",
                    x.files, x.file_bytes, a.files, a.file_bytes
                );
                report(out, "chain", false, d.clone())?;
                problems.push(format!("chain: {d}"));
            }
            Err(e) => {
                report(out, "chain", false, e.clone())?;
                problems.push(format!("chain: {e}"));
            }
        }
    }
    if let (true, Some(a)) = (s.only.contains(&Kind::Config), m.artifact(Kind::Config)) {
        report(
            out,
            "config",
            true,
            format!("{} verified ({} files)", a.file, a.files.unwrap_or(0)),
        )?;
    }
    if s.json {
        daon_common::output::json_line(
            out,
            "summary",
            json!({"set": st.name, "ok": problems.is_empty(), "problems": problems, "duration_ms": started.elapsed().as_millis() as u64}),
        )
        .map_err(io)?;
    }
    notice.set("duration_ms", started.elapsed().as_millis() as u64);
    notice.set("problems", problems.clone());
    if problems.is_empty() {
        notice.subject = format!("restore drill of {} passed", st.name);
        s.say(&format!(
            "drill of {} passed in {:.1} s",
            st.name,
            started.elapsed().as_secs_f64()
        ));
        Ok(ExitCode::Ok)
    } else {
        Err(RestoreError::Drill(problems))
    }
}
