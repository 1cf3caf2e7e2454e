//! `fake-hcloud`: the fake Hetzner Cloud API as a program, for trying the
//! official `hcloud` CLI or daon-snapshot by hand. Prints the endpoint, then
//! serves until killed.
//!
//!   fake-hcloud [--listen 127.0.0.1:0] [--token T] [--server NAME]...
//!   HCLOUD_ENDPOINT=<printed> HCLOUD_TOKEN=T hcloud server list

fn main() -> std::process::ExitCode {
    let mut listen = "127.0.0.1:0".to_string();
    let mut token = std::env::var("FAKE_HCLOUD_TOKEN").unwrap_or_else(|_| "fake-token".into());
    let mut servers = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v,
            ("--token", Some(v)) => token = v,
            ("--server", Some(v)) => servers.push(v),
            _ => {
                eprintln!("usage: fake-hcloud [--listen ADDR] [--token T] [--server NAME]...");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let fake = match fake_hcloud::Fake::start_on(&listen, &token) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake-hcloud: cannot listen on {listen}: {e}");
            return std::process::ExitCode::from(69);
        }
    };
    for s in &servers {
        fake.add_server(s);
    }
    println!("{}", fake.endpoint());
    loop {
        std::thread::park();
    }
}
