//! Entry point: parse, run, exit.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(daon_reboot_guard::main_with(std::env::args_os()))
}
