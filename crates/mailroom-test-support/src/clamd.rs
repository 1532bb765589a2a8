//! A throwaway ClamAV daemon for tests: [`Clamd`] runs the real `clamd` on loopback (TCP and
//! a Unix socket in a temp dir) over a signature database of our own, written at start.
//!
//! No registry ships ClamAV's signatures, and tests must not download them, so the database
//! holds only test signatures: an MD5 hash signature of the EICAR test file
//! (`Hub-Test-EICAR-MD5`, made with `sigtool --md5`), a body signature of the EICAR text
//! (`Hub-Test-EICAR-Body`), and a body signature of [`MARKER`] ([`MARKER_SIGNATURE`]), which
//! can hide anywhere in a file. ClamAV reports each with `.UNOFFICIAL` appended. The daemon
//! is a child of the test, stopped by its own PID (and on drop); it never touches the
//! system's clamd service or its configuration.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::{eventually, have};

/// The EICAR anti-virus test file: harmless, and found by every scanner (here by our own
/// signatures).
pub const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// Bytes our own body signature finds anywhere in a file.
pub const MARKER: &str = "MAILROOM-TEST-MALWARE-MARKER";

/// The name of the signature of [`MARKER`] (ClamAV reports it with `.UNOFFICIAL` appended).
pub const MARKER_SIGNATURE: &str = "Mailroom-Test-Marker";

/// The daemon's `StreamMaxLength`: a longer INSTREAM is refused with an error.
pub const STREAM_MAX_BYTES: u64 = 2 * 1024 * 1024;

/// Where Debian's `clamav-daemon` puts clamd.
const SBIN_CLAMD: &str = "/usr/sbin/clamd";

/// How long the daemon may take to answer `PING` after it is started.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A clamd on 127.0.0.1:<free port> and a Unix socket in its own temp dir.
pub struct Clamd {
    dir: tempfile::TempDir,
    program: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Clamd {
    /// Writes the signature database and configuration and starts clamd, returning once it
    /// answers `PING`. `None` (after [`skip`](crate::skip), which fails under `CI`) when
    /// `clamd` or `sigtool` is not installed.
    pub async fn start() -> Option<Clamd> {
        // Debian installs clamd in /usr/sbin, which a user's PATH may lack.
        let program = if Path::new(SBIN_CLAMD).exists() {
            PathBuf::from(SBIN_CLAMD)
        } else if have("clamd") {
            PathBuf::from("clamd")
        } else {
            return None;
        };
        if !have("sigtool") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        write_database(&dir.path().join("db")).await;
        std::fs::create_dir(dir.path().join("tmp")).expect("clamd temp dir");
        // Below the ephemeral range, so no outgoing connection takes it while clamd restarts.
        let port = *crate::free_port_range(1).start();
        let mut clamd = Clamd {
            dir,
            program,
            port,
            child: None,
        };
        clamd.write_config();
        clamd.launch().await;
        Some(clamd)
    }

    /// `tcp://127.0.0.1:PORT`, the form `[check] clamd` takes.
    pub fn tcp_url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The Unix socket clamd listens on.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("clamd.sock")
    }

    /// What clamd logged, for failure messages.
    pub fn log(&self) -> String {
        let mut log =
            std::fs::read_to_string(self.dir.path().join("clamd.log")).unwrap_or_default();
        log.push_str(
            &std::fs::read_to_string(self.dir.path().join("clamd.out")).unwrap_or_default(),
        );
        log
    }

    /// Kills clamd and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts clamd again on the same port and socket, returning once it answers `PING`.
    pub async fn restart(&mut self) {
        self.stop().await;
        // The killed daemon's socket file is still there: clamd replaces a stale one itself.
        self.launch().await;
    }

    fn write_config(&self) {
        let dir = self.dir.path();
        let mut config = format!(
            "Foreground yes\n\
             DatabaseDirectory {db}\n\
             TemporaryDirectory {tmp}\n\
             TCPSocket {port}\n\
             TCPAddr 127.0.0.1\n\
             LocalSocket {socket}\n\
             PidFile {dir}/clamd.pid\n\
             LogFile {dir}/clamd.log\n\
             StreamMaxLength {max}\n",
            db = dir.join("db").display(),
            tmp = dir.join("tmp").display(),
            port = self.port,
            socket = self.socket_path().display(),
            dir = dir.display(),
            max = STREAM_MAX_BYTES,
        );
        // clamd changes to `User` only when started as root; naming root keeps it able to
        // read our temp dir whatever user a build of clamd would otherwise default to.
        if running_as_root() {
            config.push_str("User root\n");
        }
        std::fs::write(dir.join("clamd.conf"), config).expect("write clamd.conf");
    }

    async fn launch(&mut self) {
        let dir = self.dir.path();
        let out = std::fs::File::create(dir.join("clamd.out")).expect("clamd.out");
        let err = out.try_clone().expect("clamd.out");
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(dir.join("clamd.conf"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn clamd");
        let child = self.child.insert(child);
        let port = self.port;
        let mut exited = None;
        let up = eventually(START_LIMIT, async || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            ping(port).await
        })
        .await;
        if let Some(status) = exited {
            panic!("clamd exited at start ({status}):\n{}", self.log());
        }
        assert!(
            up,
            "clamd did not answer PING within {} s:\n{}",
            START_LIMIT.as_secs(),
            self.log()
        );
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Whether clamd on `port` answers `zPING` with `PONG`.
async fn ping(port: u16) -> bool {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"zPING\0").await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        std::io::Result::Ok(reply)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), exchange).await,
        Ok(Ok(reply)) if reply.starts_with(b"PONG")
    )
}

/// The test signatures in `db`: `test.hdb` (hashes, from `sigtool --md5`) and `test.ndb`
/// (bodies, as hex). ClamAV's own test files join the hashes when installed
/// (`clamav-testfiles`), so that archives can be tested too.
async fn write_database(db: &Path) {
    std::fs::create_dir(db).expect("db dir");
    let eicar = db.join("eicar.com");
    std::fs::write(&eicar, EICAR).expect("write eicar.com");
    let mut hashes = md5_signature(&eicar, "Hub-Test-EICAR-MD5").await;
    std::fs::remove_file(&eicar).expect("remove eicar.com");
    let clam_exe = Path::new("/usr/share/clamav-testfiles/clam.exe");
    if clam_exe.exists() {
        hashes.push_str(&md5_signature(clam_exe, "Hub-Test-ClamExe").await);
    }
    std::fs::write(db.join("test.hdb"), hashes).expect("write test.hdb");
    let bodies = format!(
        "Hub-Test-EICAR-Body:0:*:{}\n{MARKER_SIGNATURE}:0:*:{}\n",
        hex::encode("EICAR-STANDARD-ANTIVIRUS-TEST-FILE"),
        hex::encode(MARKER),
    );
    std::fs::write(db.join("test.ndb"), bodies).expect("write test.ndb");
}

/// `sigtool --md5 file` (`md5:size:file`) with the file's name replaced by `name`.
async fn md5_signature(file: &Path, name: &str) -> String {
    let mut command = Command::new("sigtool");
    command.arg("--md5").arg(file);
    let output = crate::run(command).await;
    assert!(
        output.status.success(),
        "sigtool --md5 failed: {}",
        crate::text(&output)
    );
    let line = String::from_utf8_lossy(&output.stdout);
    let mut fields = line.trim().splitn(3, ':');
    let (Some(md5), Some(size)) = (fields.next(), fields.next()) else {
        panic!("sigtool --md5 printed {line:?}");
    };
    format!("{md5}:{size}:{name}\n")
}

/// Whether this process runs as root (the owner of `/proc/self` is its effective user).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}
