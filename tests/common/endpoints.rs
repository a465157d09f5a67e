//! Where the test stack runs: the one place the tests learn the Kafka and
//! ClickHouse endpoints. No test writes a port of its own.
//!
//! `scripts/test.sh` starts a stack of its own (its own `STACK_DIR`, free
//! ports) and exports what `scripts/stack.sh env` prints:
//!
//! | variable | meaning | unset |
//! | --- | --- | --- |
//! | `STREAMFORGE_TEST_KAFKA` | bootstrap broker, `host:port` | `127.0.0.1:9092` |
//! | `STREAMFORGE_TEST_CLICKHOUSE_URL` | ClickHouse HTTP interface | `http://127.0.0.1:8123` |
//! | `STREAMFORGE_TEST_CLICKHOUSE_TCP_PORT` | native port, for `clickhouse-client` | `9000` |
//! | `STREAMFORGE_TEST_STACK_DIR` | the `STACK_DIR` the tests hand `scripts/stack.sh` (topics, stopping and starting a service) | `scripts/stack.sh`'s own default, `<repo>/.stack` |
//!
//! Unset, they name the development stack of `scripts/stack.sh up` on its
//! default ports, for a developer who started it by hand and runs `cargo
//! test`. Another stack: `eval "$(STACK_DIR=DIR scripts/stack.sh env)"`.
//!
//! Standalone on purpose (std only): test binaries that do not include
//! `tests/common` take it with `#[path = "common/endpoints.rs"]`.

#![allow(dead_code)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The endpoints of the stack the tests run against.
#[derive(Debug, Clone)]
pub struct TestStack {
    /// Bootstrap broker, `host:port`.
    pub kafka: String,
    /// ClickHouse's HTTP interface, `http://host:port` (no trailing slash).
    pub clickhouse_url: String,
    /// ClickHouse's native port, for `clickhouse-client`.
    pub clickhouse_tcp_port: u16,
    /// The stack directory for `scripts/stack.sh`; `None`: its default.
    pub stack_dir: Option<PathBuf>,
}

/// The test stack, read from the environment once per test binary.
pub fn test_stack() -> &'static TestStack {
    static STACK: OnceLock<TestStack> = OnceLock::new();
    STACK.get_or_init(|| TestStack::from_lookup(|var| std::env::var(var).ok()))
}

impl TestStack {
    /// Reads the variables through `lookup`; an empty value counts as unset.
    /// A malformed value panics with the variable's name: a test must never
    /// run against some other stack than the one asked for.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> TestStack {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let kafka = var("STREAMFORGE_TEST_KAFKA").unwrap_or_else(|| "127.0.0.1:9092".into());
        let clickhouse_url = var("STREAMFORGE_TEST_CLICKHOUSE_URL")
            .unwrap_or_else(|| "http://127.0.0.1:8123".into())
            .trim_end_matches('/')
            .to_string();
        let clickhouse_tcp_port = var("STREAMFORGE_TEST_CLICKHOUSE_TCP_PORT")
            .map(|p| {
                p.trim().parse().unwrap_or_else(|_| {
                    panic!("STREAMFORGE_TEST_CLICKHOUSE_TCP_PORT={p} is not a port number")
                })
            })
            .unwrap_or(9000);
        let stack = TestStack {
            kafka,
            clickhouse_url,
            clickhouse_tcp_port,
            stack_dir: var("STREAMFORGE_TEST_STACK_DIR").map(PathBuf::from),
        };
        // Fail at once, naming the variable, rather than in some test later.
        stack.kafka_port();
        stack.clickhouse_http_port();
        stack
    }

    /// The broker's port (`STREAMFORGE_TEST_KAFKA` is `host:port`).
    pub fn kafka_port(&self) -> u16 {
        port_of(&self.kafka).unwrap_or_else(|| {
            panic!(
                "STREAMFORGE_TEST_KAFKA={} is not host:port (e.g. 127.0.0.1:9092)",
                self.kafka
            )
        })
    }

    /// ClickHouse's HTTP port.
    pub fn clickhouse_http_port(&self) -> u16 {
        port_of(self.clickhouse_host_port()).unwrap_or_else(|| {
            panic!(
                "STREAMFORGE_TEST_CLICKHOUSE_URL={} is not http://host:port (e.g. http://127.0.0.1:8123)",
                self.clickhouse_url
            )
        })
    }

    /// `host:port` of the ClickHouse URL.
    fn clickhouse_host_port(&self) -> &str {
        let rest = self
            .clickhouse_url
            .split_once("://")
            .map_or(self.clickhouse_url.as_str(), |(_, rest)| rest);
        rest.split('/').next().unwrap_or(rest)
    }

    /// ClickHouse's HTTP interface as a socket address (for a proxy in
    /// front of it).
    pub fn clickhouse_addr(&self) -> SocketAddr {
        self.clickhouse_host_port()
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| {
                panic!(
                    "cannot resolve the host of STREAMFORGE_TEST_CLICKHOUSE_URL={}",
                    self.clickhouse_url
                )
            })
    }

    /// `scripts/stack.sh ARGS` on this stack: its directory, and the ports
    /// the tests use, so the script and the tests never disagree (the
    /// script takes the ports the tests do not name from the stack
    /// directory's record).
    pub fn script(&self, args: &[&str]) -> Command {
        let mut cmd =
            Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/stack.sh"));
        cmd.args(args)
            .env("KAFKA_PORT", self.kafka_port().to_string())
            .env(
                "CLICKHOUSE_HTTP_PORT",
                self.clickhouse_http_port().to_string(),
            )
            .env("CLICKHOUSE_TCP_PORT", self.clickhouse_tcp_port.to_string())
            .env_remove("STACK_PORTS")
            .env_remove("KAFKA_CONTROLLER_PORT")
            .env_remove("CLICKHOUSE_INTERSERVER_PORT");
        match &self.stack_dir {
            Some(dir) => cmd.env("STACK_DIR", dir),
            None => cmd.env_remove("STACK_DIR"),
        };
        cmd
    }

    /// Points a `streamforge` command at this stack through the connectors'
    /// environment overrides (`KAFKA_BROKERS`, `CLICKHOUSE_URL`), which win
    /// over the settings files.
    pub fn point(&self, cmd: &mut Command) {
        cmd.env("KAFKA_BROKERS", &self.kafka)
            .env("CLICKHOUSE_URL", &self.clickhouse_url);
    }
}

fn port_of(host_port: &str) -> Option<u16> {
    let (host, port) = host_port.trim().rsplit_once(':')?;
    if host.is_empty() {
        return None;
    }
    port.parse().ok()
}
