//! Entry point: parse, run, exit with the documented code.

fn main() -> std::process::ExitCode {
    daon_restore::main_with(std::env::args_os()).into()
}
