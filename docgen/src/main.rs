//! daon-docgen: writes the man pages and shell completions of every daon-ops
//! tool from the tool's own clap `command()`, so docs never drift from flags
//! (uutils' uudoc does the same). Used by `scripts/package`.
//!
//! Usage: daon-docgen OUT_DIR   → OUT_DIR/man/man1/*.1, OUT_DIR/completions/{bash,zsh,fish}/*

use clap_complete::Shell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Every tool's command, by binary name.
fn tools() -> Vec<clap::Command> {
    vec![
        daon_health_check::command(),
        daon_backup::command(),
        daon_restore::command(),
        daon_rolling_deploy::command(),
        daon_reboot_guard::command(),
        daon_snapshot::command(),
        daon_wipe_reset::command(),
    ]
}

fn man_pages(
    cmd: &clap::Command,
    prefix: &str,
    dir: &Path,
    out: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let name = if prefix.is_empty() {
        cmd.get_name().to_string()
    } else {
        format!("{prefix}-{}", cmd.get_name())
    };
    let page = cmd.clone().name(name.clone());
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf)?;
    out.push(path);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        man_pages(sub, &name, dir, out)?;
    }
    Ok(())
}

/// Writes everything under `out`; returns the files written.
pub fn generate(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let man = out.join("man/man1");
    std::fs::create_dir_all(&man)?;
    let mut written = Vec::new();
    for mut cmd in tools() {
        cmd.build();
        man_pages(&cmd, "", &man, &mut written)?;
        let bin = cmd.get_name().to_string();
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let dir = out.join("completions").join(shell.to_string());
            std::fs::create_dir_all(&dir)?;
            let file = match shell {
                Shell::Zsh => format!("_{bin}"),
                Shell::Fish => format!("{bin}.fish"),
                _ => bin.clone(),
            };
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, &bin, &mut buf);
            let path = dir.join(file);
            std::fs::write(&path, buf)?;
            written.push(path);
        }
    }
    Ok(written)
}

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: daon-docgen OUT_DIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(&out)) {
        Ok(files) => {
            eprintln!(
                "daon-docgen: wrote {} files under {}",
                files.len(),
                Path::new(&out).display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "daon-docgen: error: writing under {}: {e}",
                Path::new(&out).display()
            );
            ExitCode::from(74)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_gets_a_man_page_with_exit_codes_and_three_completions() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path()).unwrap();
        for t in tools() {
            let name = t.get_name().to_string();
            let page =
                std::fs::read_to_string(dir.path().join(format!("man/man1/{name}.1"))).unwrap();
            assert!(page.contains(".TH"), "{name}: not a man page");
            assert!(
                page.to_lowercase().contains("exit"),
                "{name}: man page lacks the exit codes"
            );
            for f in [
                format!("bash/{name}"),
                format!("zsh/_{name}"),
                format!("fish/{name}.fish"),
            ] {
                assert!(
                    dir.path().join("completions").join(&f).exists(),
                    "{f} missing"
                );
            }
        }
        assert!(files.len() >= 6 * 4);
    }
}
