//! What the MongoDB tests need from their environment, and an nx-27017 process for the tests
//! that stop and restart their server (`tests/mongo_outage.rs`, `tests/api/mongo_outage.rs`).
//!
//! Those tests are `#[ignore]`d, so plain `cargo test` lists them as ignored;
//! `scripts/test.sh` starts nx-27017, exports the variables below and runs them with
//! `--include-ignored`. A test that runs without its variable fails: it was asked to run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::store::mongo::MongoOptions;

/// The test server's URI (`mongodb://127.0.0.1:PORT/?directConnection=true` from
/// `scripts/test.sh`, or a MongoDB replica set).
pub const URI_VAR: &str = "PINV_TEST_MONGODB_URI";
/// Set (to anything but `0`) when the test server is nx-27017, whose concurrent
/// transactions are not isolated: the store then runs one call at a time.
pub const ONE_AT_A_TIME_VAR: &str = "PINV_TEST_MONGODB_ONE_AT_A_TIME";
/// The nx-27017 executable, for the tests that start their own server.
pub const NX_VAR: &str = "PINV_TEST_NX_BIN";

/// Whether the flag variable `name` is set to anything but empty or `0`.
pub fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The test server's URI; panics, saying how to run the test, when [`URI_VAR`] is not set.
pub fn uri() -> String {
    match std::env::var(URI_VAR) {
        Ok(uri) if !uri.trim().is_empty() => uri,
        _ => panic!(
            "{URI_VAR} is not set: this test needs a MongoDB wire-protocol server. Run it with \
             ./scripts/test.sh (starts nx-27017), or set {URI_VAR} to a MongoDB replica set."
        ),
    }
}

/// Options for tests: acknowledged by one node, as the test server is a single node; one
/// call at a time when [`ONE_AT_A_TIME_VAR`] says the server is nx-27017.
pub fn options() -> MongoOptions {
    MongoOptions {
        w: "1".to_owned(),
        timeout: Duration::from_secs(10),
        one_at_a_time: flag(ONE_AT_A_TIME_VAR),
        ..MongoOptions::default()
    }
}

/// The nx-27017 executable; panics, saying how to run the test, when [`NX_VAR`] is not set.
pub fn nx_bin() -> PathBuf {
    match std::env::var_os(NX_VAR) {
        Some(bin) if !bin.is_empty() => PathBuf::from(bin),
        _ => panic!(
            "{NX_VAR} is not set: this test starts its own nx-27017 server. Run it with \
             ./scripts/test.sh (installs nx-27017 into ./.venv and sets {NX_VAR})."
        ),
    }
}

/// One nx-27017 process; killed when dropped.
pub struct NxServer {
    child: Child,
}

impl NxServer {
    /// Starts `bin` on `127.0.0.1:port` with its database in `db_file`; its output and pid
    /// file go to `dir`. Panics when it cannot be started.
    pub fn start(bin: &Path, db_file: &Path, port: u16, dir: &Path) -> Self {
        let log = std::fs::File::create(dir.join(format!("nx-{port}.out"))).expect("log file");
        let child = Command::new(bin)
            .arg("--db")
            .arg(db_file)
            .args(["--host", "127.0.0.1", "-p", &port.to_string()])
            .arg("--pid-file")
            .arg(dir.join("nx.pid"))
            .arg("--log-file")
            .arg(dir.join("nx.log"))
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{NX_VAR}={} could not be started: {e}", bin.display()));
        Self { child }
    }

    /// Sends `signal` (`STOP`, `CONT`...) to the server: `STOP` freezes it with its
    /// connections open, as a stalled or overloaded server looks to a client.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Kills the server and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NxServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nobody listens on (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
