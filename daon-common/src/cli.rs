//! The command-line plumbing every tool shares, so that `--help` always shows
//! what the man page shows: parse with the tool's full `command()` (examples,
//! exit codes, config search path), give every subcommand's `--help` the
//! exit-code table too, and map clap's outcome to an exit code.

use clap::FromArgMatches;

/// Parses `args` with `cmd` (the tool's `command()`). On `--help` or
/// `--version` prints them and returns `Err(0)`; on a usage error prints it
/// and returns `Err(usage_code)` (2, or 3 for Nagios-style tools).
pub fn parse<C: FromArgMatches>(
    cmd: clap::Command,
    args: impl IntoIterator<Item = std::ffi::OsString>,
    usage_code: u8,
) -> Result<C, u8> {
    match cmd
        .try_get_matches_from(args)
        .and_then(|m| C::from_arg_matches(&m))
    {
        Ok(c) => Ok(c),
        Err(e) => {
            let _ = e.print();
            Err(if e.use_stderr() { usage_code } else { 0 })
        }
    }
}

/// Adds `text` (the exit-code table, a pointer to the examples) to the long
/// help of every subcommand of `cmd`, at any depth.
pub fn subcommands_after(cmd: clap::Command, text: &str) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    names.into_iter().fold(cmd, |cmd, name| {
        cmd.mut_subcommand(name, |sub| {
            let sub = subcommands_after(sub, text);
            let before = sub
                .get_after_long_help()
                .map(|h| format!("{h}\n\n"))
                .unwrap_or_default();
            sub.after_long_help(format!("{before}{text}"))
        })
    })
}

/// [`subcommands_after`] with the shared exit-code table and a pointer to
/// the tool's own `--help` for examples.
pub fn with_subcommand_help(cmd: clap::Command) -> clap::Command {
    let text = format!(
        "Examples: `{} --help`.\n\n{}",
        cmd.get_name(),
        crate::exit::EXIT_CODES_HELP
    );
    subcommands_after(cmd, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> clap::Command {
        clap::Command::new("daon-x")
            .after_long_help("Examples:\n  daon-x go")
            .subcommand(clap::Command::new("go").subcommand(clap::Command::new("deeper")))
    }

    #[test]
    fn every_subcommand_gets_the_exit_codes() {
        let mut c = with_subcommand_help(cmd());
        let help = c
            .find_subcommand_mut("go")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            help.contains("Exit codes:") && help.contains("daon-x --help"),
            "{help}"
        );
        let deeper = c
            .find_subcommand_mut("go")
            .unwrap()
            .find_subcommand_mut("deeper")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(deeper.contains("75  temporary failure"), "{deeper}");
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[arg(long)]
        n: u8,
    }

    #[test]
    fn help_is_zero_and_usage_errors_take_the_given_code() {
        use clap::CommandFactory;
        let args = |a: &[&str]| {
            a.iter()
                .map(Into::into)
                .collect::<Vec<std::ffi::OsString>>()
        };
        assert_eq!(
            parse::<Cli>(Cli::command(), args(&["x", "--help"]), 2).unwrap_err(),
            0
        );
        assert_eq!(
            parse::<Cli>(Cli::command(), args(&["x", "--bogus"]), 3).unwrap_err(),
            3
        );
        assert_eq!(
            parse::<Cli>(Cli::command(), args(&["x", "--n", "4"]), 2)
                .unwrap()
                .n,
            4
        );
    }
}
