//! Entry point: parse, run, exit with the documented code.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(daon_snapshot::main_with(std::env::args_os()))
}
