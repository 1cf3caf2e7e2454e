//! Entry point: parse, run, exit.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(daon_wipe_reset::main_with(std::env::args_os()))
}
