//! daon-common against the real local stack: Compose v1 and v2 give the same
//! structured answer, inspect tells missing from present, and exec streams a
//! real pg_dump and reports a failed one with its stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use daon_common::config::{ComposeCommand, Config};
use daon_common::docker::{Compose, Docker, Flavor, Health};
use daon_testkit as kit;
use std::io::Read;

fn stack_config(test: &str) -> Option<Config> {
    let stack = kit::stack(test)?;
    Some(
        Config::load_with(Some(&stack.config), &[], &[])
            .unwrap()
            .config,
    )
}

#[test]
fn compose_v1_and_v2_list_the_same_containers() {
    let Some(mut cfg) = stack_config("compose_v1_v2") else {
        return;
    };
    let _l = kit::lock();
    let docker = Docker::new(&cfg);
    let mut seen = Vec::new();
    for (cmd, flavor) in [
        (ComposeCommand::V2, Flavor::V2),
        (ComposeCommand::V1, Flavor::V1),
    ] {
        cfg.compose.command = cmd;
        let compose = Compose::detect(&cfg, &docker).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert_eq!(compose.flavor, flavor);
        let mut names: Vec<String> = compose
            .containers()
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        names.sort();
        seen.push(names);
    }
    assert_eq!(seen[0], seen[1], "v1 and v2 disagree");
    for want in [
        "daon-api-1",
        "daon-api-2",
        "daon-api-3",
        "daon-postgres",
        "daon-redis",
        "daon-blockchain",
        "daon-caddy",
    ] {
        assert!(
            seen[0].iter().any(|n| n == want),
            "{want} missing from {:?}",
            seen[0]
        );
    }
}

#[test]
fn inspect_reads_health_exactly_and_reports_missing_names() {
    let Some(cfg) = stack_config("inspect") else {
        return;
    };
    let _l = kit::lock();
    let docker = Docker::new(&cfg);
    let got = docker
        .inspect(&[
            "daon-postgres".to_string(),
            "daon-no-such-container".to_string(),
        ])
        .unwrap();
    assert_eq!(got.missing, ["daon-no-such-container"]);
    let pg = &got.found[0];
    assert_eq!(pg.name, "daon-postgres");
    assert!(pg.is_running());
    assert_eq!(pg.health, Health::Healthy);
    assert!(pg.image_id.starts_with("sha256:"));
    assert_eq!(pg.compose_service, "daon-postgres");
    assert!(docker.ping().unwrap().contains('.'));
}

#[test]
fn exec_streams_pg_dump_and_a_failed_dump_is_an_error_with_stderr() {
    let Some(cfg) = stack_config("exec_pg_dump") else {
        return;
    };
    let docker = Docker::new(&cfg);
    let argv = |db: &str| -> Vec<String> {
        ["pg_dump", "-U", "daon", db]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let mut sql = String::new();
    docker
        .exec_reader("daon-postgres", &argv("daon"))
        .unwrap()
        .read_to_string(&mut sql)
        .unwrap();
    assert!(
        sql.contains("PostgreSQL database dump"),
        "{}",
        &sql[..sql.len().min(300)]
    );

    let mut buf = Vec::new();
    let err = docker
        .exec_reader("daon-postgres", &argv("no_such_db"))
        .unwrap()
        .read_to_end(&mut buf)
        .unwrap_err();
    assert!(err.to_string().contains("no_such_db"), "{err}");
}

/// `docker.host` (an endpoint, not a context) reaches another daemon — the
/// second Docker host — with the docker CLI and both Compose versions, and an
/// unreachable endpoint is "Docker unreachable" (69) naming it.
#[test]
fn an_endpoint_targets_another_daemon_with_docker_and_compose_v1_v2() {
    let Some(mut cfg) = stack_config("endpoint") else {
        return;
    };
    let Some(h2) = kit::host2("endpoint") else {
        return;
    };
    let _l = kit::lock();
    cfg.docker.host = h2.docker.clone();
    let docker = Docker::new(&cfg);
    assert_eq!(docker.target(), h2.docker);
    let got = docker
        .inspect(&["daon-caddy".to_string(), "daon-postgres".to_string()])
        .unwrap();
    // The second host runs Caddy but no PostgreSQL: this is not the main daemon.
    assert_eq!(got.missing, ["daon-postgres"]);
    assert_eq!(got.found[0].health, Health::Healthy);
    for (cmd, flavor) in [
        (ComposeCommand::V2, Flavor::V2),
        (ComposeCommand::V1, Flavor::V1),
    ] {
        cfg.compose.command = cmd;
        let compose = Compose::detect(&cfg, &docker).unwrap();
        assert_eq!(compose.flavor, flavor);
        let mut names: Vec<String> = compose
            .containers()
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "daon-api-1",
                "daon-api-2",
                "daon-api-3",
                "daon-blockchain",
                "daon-caddy"
            ],
            "{cmd:?}"
        );
    }
    cfg.docker.host = "unix:///run/daon-no-such-daemon.sock".into();
    let err = Docker::new(&cfg).ping().unwrap_err();
    assert_eq!(err.exit_code(), daon_common::ExitCode::Unavailable, "{err}");
    assert!(err.to_string().contains("daon-no-such-daemon"), "{err}");
}
