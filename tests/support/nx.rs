//! An nx-27017 process for tests that stop and restart their MongoDB server
//! (`tests/mongo_outage.rs`, `tests/api/mongo_outage.rs`); included with `#[path]`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The variable `scripts/test.sh` sets to the nx-27017 executable.
pub const NX_VAR: &str = "PINV_TEST_NX_BIN";

/// One nx-27017 process; killed when dropped.
pub struct Server {
    child: Child,
}

impl Server {
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
    #[allow(dead_code)] // not every including test freezes its server
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
