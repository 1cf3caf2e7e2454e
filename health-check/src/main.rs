//! Entry point: parse, run, exit with the Nagios-style code.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(daon_health_check::main_with(std::env::args_os()))
}
