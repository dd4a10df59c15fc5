//! What `vigil-sim bench` runs beside Vigil, as child processes: a Mosquitto broker, the
//! physical ceiling (`mosquitto_sub` draining the stream, storing nothing) and the typical
//! alternative (`peers/paho_sqlite.py`, a paho-mqtt subscriber writing SQLite).
//!
//! This module owns starting, watching and stopping those processes, and reading a process's
//! memory and CPU time from `/proc` (for Vigil's process too). It measures nothing itself and
//! never decides what a figure means: that is the bench's job.
//!
//! Each start returns only once the process is ready for the stream — the broker accepts
//! connections, a subscriber's subscription is acknowledged — so that whatever is published
//! afterwards reaches every contender and the clock can start.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The topic every contender subscribes to: the JSON readings of every device.
const READINGS: &str = "vigil/v1/devices/+/readings";

/// The Python peer, embedded so that the `vigil-sim` binary runs from anywhere.
const PAHO_SQLITE: &str = include_str!("../peers/paho_sqlite.py");

/// How long a process may take to get ready (start, connect, subscribe).
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a process may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps at most this much of a child's error output for error messages.
const STDERR_KEEP: usize = 8 * 1024;

/// What went wrong with a peer process.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot run {program} (is it installed?): {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{what}: not done within {timeout:?}{}", detail(.output))]
    Timeout {
        what: String,
        timeout: Duration,
        output: String,
    },
    #[error("{what}: {program} exited ({status}){}", detail(.output))]
    Exited {
        what: String,
        program: &'static str,
        status: String,
        output: String,
    },
}

fn detail(output: &str) -> String {
    let output = output.trim();
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

/// A Mosquitto broker on `127.0.0.1:port`, configured for benchmarking; killed on drop.
///
/// Its configuration (`dir/mosquitto.conf`) is, in this order:
/// - `listener port 127.0.0.1`, `user root` (ignored unless started as root, where it keeps the
///   0600 password files readable), `log_dest stderr` (into `dir/mosquitto.log`),
///   `persistence_location dir/`;
/// - `include_dir` if given: Vigil's generated `vigil.conf` with its password and ACL files;
/// - then, so that every broker of a bench run is tuned alike: `allow_anonymous false`,
///   `persistence false` (nothing is written to disk; sessions live in memory while it runs),
///   `max_inflight_messages 0` and `max_queued_messages 0` (both unlimited: a contender that
///   falls behind shows as slow, not as messages the broker dropped);
/// - without `include_dir`: `password_file dir/passwd` and `acl_file dir/acl`, fresh, whose ACL
///   has Vigil's device patterns (a user named after a device writes its own topics).
///
/// Users are added while it runs ([`Broker::add_reader`], [`Broker::add_writer`]): to the
/// password and ACL files in use (Vigil's, with `include_dir`), then SIGHUP, and the call
/// returns once the broker accepts the new credentials.
pub struct Broker {
    port: u16,
    child: Child,
    passwd: PathBuf,
    acl: PathBuf,
    log: PathBuf,
    /// Serialises edits of the password and ACL files.
    edits: tokio::sync::Mutex<()>,
}

impl Broker {
    /// Writes the configuration into `dir`, starts Mosquitto and waits until it accepts
    /// connections.
    pub async fn start(
        dir: &Path,
        port: u16,
        include_dir: Option<&Path>,
    ) -> Result<Broker, PeerError> {
        let dir = create_dir(dir).await?;
        // Vigil's generated files when given (an `include_dir` may not repeat `password_file`
        // or `acl_file`), else fresh ones; the tuning comes after, so it wins either way.
        let (passwd, acl, include) = match include_dir {
            Some(inc) => {
                let (passwd, acl) = included_security_files(inc).await?;
                let inc = tokio::fs::canonicalize(inc)
                    .await
                    .map_err(|source| PeerError::File {
                        path: inc.to_path_buf(),
                        source,
                    })?;
                (passwd, acl, format!("include_dir {}\n", inc.display()))
            }
            None => {
                let (passwd, acl) = (dir.join("passwd"), dir.join("acl"));
                write_private(&passwd, "").await?;
                write_private(&acl, BENCH_ACL).await?;
                (passwd, acl, String::new())
            }
        };
        let own_files = if include_dir.is_none() {
            format!(
                "password_file {}\nacl_file {}\n",
                passwd.display(),
                acl.display()
            )
        } else {
            String::new()
        };
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "# Written by vigil-sim for a benchmark run on loopback: not a production setup.\n\
             listener {port} 127.0.0.1\n\
             user root\n\
             log_dest stderr\n\
             persistence_location {dir}/\n\
             {include}\
             allow_anonymous false\n\
             persistence false\n\
             max_inflight_messages 0\n\
             max_queued_messages 0\n\
             {own_files}",
            dir = dir.display(),
        );
        write_file(&conf, &text).await?;
        let log = dir.join("mosquitto.log");
        let log_file = std::fs::File::create(&log).map_err(|source| PeerError::File {
            path: log.clone(),
            source,
        })?;
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| PeerError::Spawn {
                program: "mosquitto",
                source,
            })?;
        // Ready when its log says it runs (so a port taken by another program is not mistaken
        // for ours) and the port accepts a connection.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if file_tail(&log).await.contains(" running")
                && tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(PeerError::Exited {
                    what: format!("starting mosquitto on port {port}"),
                    program: "mosquitto",
                    status: status.to_string(),
                    output: file_tail(&log).await,
                });
            }
            if Instant::now() >= deadline {
                return Err(PeerError::Timeout {
                    what: format!("mosquitto listening on port {port}"),
                    timeout: READY_TIMEOUT,
                    output: file_tail(&log).await,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Broker {
            port,
            child,
            passwd,
            acl,
            log,
            edits: tokio::sync::Mutex::new(()),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's process id, for [`proc_stats`].
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Adds a user who reads every device's readings and GATT topics (as Vigil's own user
    /// does); returns once the broker accepts its credentials.
    pub async fn add_reader(&self, user: &str, password: &str) -> Result<(), PeerError> {
        let grants =
            format!("user {user}\ntopic read {READINGS}\ntopic read vigil/v1/devices/+/gatt/#\n");
        self.add_user(user, password, &grants).await
    }

    /// Adds a user who publishes readings, GATT and status for any device (a load generator
    /// standing in for many devices); returns once the broker accepts its credentials.
    pub async fn add_writer(&self, user: &str, password: &str) -> Result<(), PeerError> {
        let grants = format!(
            "user {user}\ntopic write {READINGS}\ntopic write vigil/v1/devices/+/gatt/+\n\
             topic write vigil/v1/devices/+/status\n"
        );
        self.add_user(user, password, &grants).await
    }

    async fn add_user(&self, user: &str, password: &str, grants: &str) -> Result<(), PeerError> {
        if user.is_empty() || user.contains(|c: char| c == ':' || c.is_whitespace()) {
            return Err(PeerError::Config(format!(
                "broker user {user:?}: must be non-empty, without spaces or ':'"
            )));
        }
        let _edit = self.edits.lock().await;
        let out = run(
            "mosquitto_passwd",
            Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&self.passwd)
                .arg(user)
                .arg(password),
        )
        .await?;
        if !out.status.success() {
            return Err(PeerError::Exited {
                what: format!("adding broker user {user}"),
                program: "mosquitto_passwd",
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        append(&self.acl, &format!("\n# Added by vigil-sim.\n{grants}")).await?;
        let pid = self.child.id().ok_or_else(|| PeerError::Exited {
            what: "reloading mosquitto".into(),
            program: "mosquitto",
            status: "gone".into(),
            output: String::new(),
        })?;
        signal(pid, "HUP").await?;
        // The reload happens on the broker's next loop turn: wait until the user can log in.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = run(
                "mosquitto_sub",
                Command::new("mosquitto_sub")
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                    .args(["-u", user, "-P", password])
                    .args(["-i", &format!("vigil-sim-check-{user}")])
                    .args(["-t", READINGS, "-E", "-W", "2"]),
            )
            .await?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
                output.push_str(&file_tail(&self.log).await);
                return Err(PeerError::Timeout {
                    what: format!("broker accepting the new user {user}"),
                    timeout: READY_TIMEOUT,
                    output,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the broker with SIGTERM (killing it if it takes too long).
    pub async fn stop(mut self) -> Result<(), PeerError> {
        terminate(&mut self.child, "mosquitto", "stopping mosquitto").await?;
        Ok(())
    }
}

/// The ACL of a fresh bench broker: Vigil's device patterns; readers and writers are added.
const BENCH_ACL: &str = "# Written by vigil-sim for a benchmark run.\n\
     # Every device: its own topics only (%u is the user name, which is the device id).\n\
     pattern write vigil/v1/devices/%u/readings\n\
     pattern write vigil/v1/devices/%u/gatt/+\n\
     pattern write vigil/v1/devices/%u/status\n\
     pattern read vigil/v1/devices/%u/errors\n";

/// The `password_file` and `acl_file` named by the `*.conf` files of an `include_dir`.
async fn included_security_files(inc: &Path) -> Result<(PathBuf, PathBuf), PeerError> {
    let io = |source| PeerError::File {
        path: inc.to_path_buf(),
        source,
    };
    let mut entries = tokio::fs::read_dir(inc).await.map_err(io)?;
    let (mut passwd, mut acl) = (None, None);
    while let Some(entry) = entries.next_entry().await.map_err(io)? {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "conf") {
            continue;
        }
        let text = tokio::fs::read_to_string(&path)
            .await
            .map_err(|source| PeerError::File {
                path: path.clone(),
                source,
            })?;
        for line in text.lines() {
            match line.trim().split_once(' ') {
                Some(("password_file", p)) => passwd = Some(PathBuf::from(p.trim())),
                Some(("acl_file", p)) => acl = Some(PathBuf::from(p.trim())),
                _ => {}
            }
        }
    }
    match (passwd, acl) {
        (Some(p), Some(a)) => Ok((p, a)),
        _ => Err(PeerError::Config(format!(
            "{}: no password_file and acl_file in its *.conf (expected `vigil broker \
             mosquitto-config` output)",
            inc.display()
        ))),
    }
}

/// The ceiling: `mosquitto_sub` receiving the readings at QoS 1 and storing nothing.
///
/// How it knows it is subscribed before anything is published: it first runs
/// `mosquitto_sub -c -i <id> -q 1 -t … -E`, which opens a persistent session, subscribes and
/// exits once the broker acknowledged the subscription (SUBACK). From then on the broker keeps
/// every matching message for that session. Then the measuring `mosquitto_sub -c -i <id> -q 1
/// -C count` resumes the same session and receives them (queued or live), its output thrown
/// away. [`CeilingSub::finished`] ends the session (a clean-session connect with the same id) so
/// the broker stops queueing for it; dropping a `CeilingSub` kills the process but leaves it.
pub struct CeilingSub {
    child: Child,
    count: u64,
    port: u16,
    user: String,
    password: String,
    client_id: String,
}

impl CeilingSub {
    /// Subscribes, then starts the receiving process; returns once subscribed.
    pub async fn start(
        port: u16,
        user: &str,
        password: &str,
        count: u64,
    ) -> Result<CeilingSub, PeerError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let client_id = format!(
            "vigil-sim-ceiling-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let port_arg = port.to_string();
        let session = |cmd: &mut Command| {
            cmd.args(["-h", "127.0.0.1", "-p", &port_arg])
                .args(["-u", user, "-P", password])
                .args(["-i", &client_id, "-c", "-q", "1", "-t", READINGS]);
        };
        let mut subscribe = Command::new("mosquitto_sub");
        session(&mut subscribe);
        subscribe.args(["-E", "-W", &READY_TIMEOUT.as_secs().to_string()]);
        let out = run("mosquitto_sub", &mut subscribe).await?;
        if !out.status.success() {
            return Err(PeerError::Exited {
                what: "subscribing the ceiling subscriber".into(),
                program: "mosquitto_sub",
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let mut receive = Command::new("mosquitto_sub");
        session(&mut receive);
        let child = receive
            .args(["-C", &count.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| PeerError::Spawn {
                program: "mosquitto_sub",
                source,
            })?;
        Ok(CeilingSub {
            child,
            count,
            port,
            user: user.to_owned(),
            password: password.to_owned(),
            client_id,
        })
    }

    /// The receiving process's id, for [`proc_stats`].
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until it has received `count` messages and exited; returns when that was seen.
    pub async fn finished(self, timeout: Duration) -> Result<Instant, PeerError> {
        let CeilingSub {
            child,
            count,
            port,
            user,
            password,
            client_id,
        } = self;
        let waited = tokio::time::timeout(timeout, child.wait_with_output()).await;
        let at = Instant::now();
        // End the persistent session, received all or not, so the broker stops keeping messages
        // for it (a clean-session connect with the same id discards it).
        let _ = run(
            "mosquitto_sub",
            Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-u", &user, "-P", &password])
                .args(["-i", &client_id, "-t", READINGS, "-E", "-W", "5"]),
        )
        .await;
        let what = format!("ceiling subscriber receiving {count} messages");
        match waited {
            Err(_) => Err(PeerError::Timeout {
                what,
                timeout,
                output: String::new(),
            }),
            Ok(Err(source)) => Err(PeerError::Spawn {
                program: "mosquitto_sub",
                source,
            }),
            Ok(Ok(out)) if out.status.success() => Ok(at),
            Ok(Ok(out)) => Err(PeerError::Exited {
                what,
                program: "mosquitto_sub",
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
        }
    }
}

/// The typical alternative: `peers/paho_sqlite.py` (see its docstring for what it does and
/// does not do), run with `python3`, storing into the SQLite file `db_path`.
///
/// Its client id is `paho-sqlite-<user>` with a persistent session, so a restarted peer
/// resumes where it stopped. A task reads its `ready` and `stored <messages> <rows>` lines.
pub struct PythonPeer {
    child: Child,
    pid: u32,
    progress: watch::Receiver<Progress>,
    stdout: JoinHandle<()>,
    stderr: JoinHandle<String>,
}

#[derive(Default)]
struct Progress {
    ready: bool,
    messages: u64,
    rows: u64,
    /// Each `stored` line's message total and when it was read, in order.
    history: Vec<(u64, Instant)>,
}

impl PythonPeer {
    /// Starts the peer and waits until it has subscribed (its `ready` line).
    pub async fn start(
        port: u16,
        user: &str,
        password: &str,
        db_path: &Path,
    ) -> Result<PythonPeer, PeerError> {
        let mut child = Command::new("python3")
            .arg("-u")
            .arg("-c")
            .arg(PAHO_SQLITE)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--user",
                user,
                "--client-id",
                &format!("paho-sqlite-{user}"),
            ])
            .arg("--db")
            .arg(db_path)
            .env("VIGIL_PEER_PASSWORD", password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| PeerError::Spawn {
                program: "python3",
                source,
            })?;
        let pid = child.id().unwrap_or_default();
        let (tx, mut progress) = watch::channel(Progress::default());
        let stdout = child.stdout.take().map(BufReader::new);
        let stdout = tokio::spawn(async move {
            let Some(mut lines) = stdout.map(|s| s.lines()) else {
                return;
            };
            while let Ok(Some(line)) = lines.next_line().await {
                let mut words = line.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some("ready"), None, None) => tx.send_modify(|p| p.ready = true),
                    (Some("stored"), Some(m), Some(r)) => {
                        let (Ok(m), Ok(r)) = (m.parse(), r.parse()) else {
                            continue;
                        };
                        let at = Instant::now();
                        tx.send_modify(|p| {
                            p.messages = m;
                            p.rows = r;
                            p.history.push((m, at));
                        });
                    }
                    _ => {}
                }
            }
        });
        let stderr = tokio::spawn(keep_tail(child.stderr.take()));
        let mut peer = PythonPeer {
            child,
            pid,
            progress: progress.clone(),
            stdout,
            stderr,
        };
        match tokio::time::timeout(READY_TIMEOUT, progress.wait_for(|p| p.ready)).await {
            Ok(Ok(_)) => Ok(peer),
            Ok(Err(_)) => {
                let status = peer.child.wait().await.map(|s| s.to_string());
                Err(PeerError::Exited {
                    what: "starting the paho/SQLite peer".into(),
                    program: "python3",
                    status: status.unwrap_or_else(|e| e.to_string()),
                    output: peer.stderr.await.unwrap_or_default(),
                })
            }
            Err(_) => {
                let _ = peer.child.kill().await;
                Err(PeerError::Timeout {
                    what: "paho/SQLite peer subscribing".into(),
                    timeout: READY_TIMEOUT,
                    output: peer.stderr.await.unwrap_or_default(),
                })
            }
        }
    }

    /// Messages whose rows are committed, as of its latest `stored` line.
    pub fn stored(&self) -> u64 {
        self.progress.borrow().messages
    }

    /// Rows committed (one per reading: an array or SenML pack gives several).
    pub fn stored_rows(&self) -> u64 {
        self.progress.borrow().rows
    }

    /// Waits until at least `n` messages are committed; returns when the first `stored` line
    /// saying so was read.
    pub async fn wait_stored(&self, n: u64, timeout: Duration) -> Result<Instant, PeerError> {
        let mut progress = self.progress.clone();
        let reached = tokio::time::timeout(timeout, progress.wait_for(|p| p.messages >= n)).await;
        let what = || format!("paho/SQLite peer storing {n} messages");
        match reached {
            Ok(Ok(p)) => Ok(p
                .history
                .iter()
                .find(|(m, _)| *m >= n)
                .map_or_else(Instant::now, |&(_, at)| at)),
            Ok(Err(_)) => Err(PeerError::Exited {
                what: what(),
                program: "python3",
                status: format!("stored {}", self.stored()),
                output: String::new(),
            }),
            Err(_) => Err(PeerError::Timeout {
                what: what(),
                timeout,
                output: format!("stored {}", self.stored()),
            }),
        }
    }

    /// Stops it with SIGTERM (it commits what it has received) and returns the final count of
    /// messages stored.
    pub async fn stop(mut self) -> Result<u64, PeerError> {
        let status = terminate(&mut self.child, "python3", "stopping the paho/SQLite peer").await;
        let _ = self.stdout.await;
        let output = self.stderr.await.unwrap_or_default();
        match status {
            Ok(s) if s.success() => Ok(self.progress.borrow().messages),
            Ok(s) => Err(PeerError::Exited {
                what: "stopping the paho/SQLite peer".into(),
                program: "python3",
                status: s.to_string(),
                output,
            }),
            Err(e) => Err(e),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Resident memory now, in KiB (`None` once it has exited).
    pub fn rss_kib(&self) -> Option<u64> {
        proc_stats(self.pid).map(|s| s.rss_kib)
    }

    /// CPU time used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        proc_stats(self.pid).map(|s| s.cpu_seconds)
    }
}

/// A process's memory and CPU time, from `/proc`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcStats {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`).
    pub peak_rss_kib: u64,
    /// User + system CPU time of the process itself (not of its children).
    pub cpu_seconds: f64,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`; `None` if the process is gone or this is
/// not Linux. Both are in memory, so reading them from async code does not block.
pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc(&status, &stat)
}

/// Clock ticks per second in `/proc/<pid>/stat`: USER_HZ, 100 on every Linux architecture's
/// user-space ABI (what `sysconf(_SC_CLK_TCK)` returns; no libc call needed).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

fn parse_proc(status: &str, stat: &str) -> Option<ProcStats> {
    let kib = |key: &str| {
        status.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
    };
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split after the last
    // ')'. utime and stime are fields 14 and 15, the 12th and 13th after comm.
    let mut after_comm = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = after_comm.next()?.parse().ok()?;
    let stime: u64 = after_comm.next()?.parse().ok()?;
    Some(ProcStats {
        rss_kib: kib("VmRSS")?,
        peak_rss_kib: kib("VmHWM")?,
        cpu_seconds: (utime + stime) as f64 / CLOCK_TICKS_PER_SECOND,
    })
}

/// Sends SIGTERM, waits, kills if it takes longer than [`STOP_TIMEOUT`].
async fn terminate(
    child: &mut Child,
    program: &'static str,
    what: &str,
) -> Result<std::process::ExitStatus, PeerError> {
    if let Some(pid) = child.id() {
        signal(pid, "TERM").await?;
    }
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(status) => status.map_err(|source| PeerError::Spawn { program, source }),
        Err(_) => {
            let _ = child.kill().await;
            Err(PeerError::Timeout {
                what: format!("{what} (killed)"),
                timeout: STOP_TIMEOUT,
                output: String::new(),
            })
        }
    }
}

/// Sends a signal with `kill(1)`: the workspace forbids the `unsafe` a libc call would need.
async fn signal(pid: u32, name: &str) -> Result<(), PeerError> {
    let out = run(
        "kill",
        Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string()),
    )
    .await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PeerError::Exited {
            what: format!("sending SIG{name} to {pid}"),
            program: "kill",
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Runs a short command to completion, capturing its output.
async fn run(program: &'static str, cmd: &mut Command) -> Result<std::process::Output, PeerError> {
    cmd.stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| PeerError::Spawn { program, source })
}

/// Reads a child's error output to the end, keeping the last [`STDERR_KEEP`] bytes.
async fn keep_tail(pipe: Option<tokio::process::ChildStderr>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * STDERR_KEEP {
            kept.drain(..kept.len() - STDERR_KEEP);
        }
    }
    tail(&String::from_utf8_lossy(&kept))
}

/// The end of a log file, for an error message.
async fn file_tail(path: &Path) -> String {
    tokio::fs::read(path)
        .await
        .map(|b| tail(&String::from_utf8_lossy(&b)))
        .unwrap_or_default()
}

fn tail(text: &str) -> String {
    let start = text.len().saturating_sub(STDERR_KEEP);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// Creates a directory if needed; its absolute path (Mosquitto resolves paths from its own
/// working directory).
async fn create_dir(path: &Path) -> Result<PathBuf, PeerError> {
    let io = |source| PeerError::File {
        path: path.to_path_buf(),
        source,
    };
    tokio::fs::create_dir_all(path).await.map_err(io)?;
    tokio::fs::canonicalize(path).await.map_err(io)
}

async fn write_file(path: &Path, text: &str) -> Result<(), PeerError> {
    tokio::fs::write(path, text)
        .await
        .map_err(|source| PeerError::File {
            path: path.to_path_buf(),
            source,
        })
}

/// Creates or truncates a file readable by its owner only (password hashes, ACL).
async fn write_private(path: &Path, text: &str) -> Result<(), PeerError> {
    use tokio::io::AsyncWriteExt as _;
    let io = |source| PeerError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(io)?;
    f.write_all(text.as_bytes()).await.map_err(io)?;
    f.flush().await.map_err(io)
}

async fn append(path: &Path, text: &str) -> Result<(), PeerError> {
    use tokio::io::AsyncWriteExt as _;
    let io = |source| PeerError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut f = tokio::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .await
        .map_err(io)?;
    f.write_all(text.as_bytes()).await.map_err(io)?;
    f.flush().await.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_and_cpu_from_proc() {
        let status = "Name:\tpython3\nVmHWM:\t   20480 kB\nVmRSS:\t   18432 kB\nThreads:\t2\n";
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 \
                    0 2 0 100 1000 50";
        assert_eq!(
            parse_proc(status, stat),
            Some(ProcStats {
                rss_kib: 18432,
                peak_rss_kib: 20480,
                cpu_seconds: 3.0
            })
        );
        let me = proc_stats(std::process::id()).expect("this test's own process");
        assert!(me.rss_kib > 0 && me.peak_rss_kib >= me.rss_kib, "{me:?}");
    }

    /// A scratch directory under the system temp dir (the simulator has no `tempfile`).
    fn scratch(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::env::temp_dir().join(format!("vigil-sim-{name}-{}-{nanos}", std::process::id()))
    }

    const WRITER: (&str, &str) = ("bench-writer", "w-secret");

    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// `mosquitto_pub -l`: one QoS 1 message per line on `topic`.
    async fn publish_lines(
        port: u16,
        (user, password): (&str, &str),
        topic: &str,
        lines: Vec<String>,
    ) {
        use tokio::io::AsyncWriteExt as _;
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-u", user, "-P", password])
            .args(["-q", "1", "-t", topic, "-l"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all((lines.join("\n") + "\n").as_bytes())
            .await
            .unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Message `i` of `device`: vigil-json (object, array, RFC 3339 or epoch time) or SenML.
    fn one_reading(device: &str, i: u32) -> String {
        let t = 1_795_500_000 + i;
        match device {
            "watch-1" => format!(
                r#"{{"metric":"heart_rate","value":{},"time":"2026-11-25T12:00:{:02}.000Z"}}"#,
                60 + i % 30,
                i % 60
            ),
            "watch-2" => format!(
                r#"[{{"metric":"heart_rate","value":{},"time":{t}}}]"#,
                60 + i % 30
            ),
            "ox-1" => format!(
                r#"[{{"bn":"ox-1/","bt":{t},"n":"spo2","u":"%","v":{}}}]"#,
                90 + i % 10
            ),
            _ => format!(
                r#"{{"metric":"systolic","value":{},"unit":"mmHg","time":{t}}}"#,
                110 + i % 20
            ),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ceiling_and_paho_peer_receive_the_same_stream() {
        let dir = scratch("peers");
        let port = free_port();
        let broker = Broker::start(&dir.join("broker"), port, None)
            .await
            .unwrap();
        broker.add_reader("bench-reader", "r-secret").await.unwrap();
        broker.add_writer(WRITER.0, WRITER.1).await.unwrap();

        let ceiling = CeilingSub::start(port, "bench-reader", "r-secret", 1000)
            .await
            .unwrap();
        let db = dir.join("paho.sqlite");
        let peer = PythonPeer::start(port, "bench-reader", "r-secret", &db)
            .await
            .unwrap();

        // 4 devices × 250 messages, one reading each, in every JSON shape the peer parses.
        let publishers = ["watch-1", "watch-2", "ox-1", "cuff-1"].map(|device| {
            let topic = format!("vigil/v1/devices/{device}/readings");
            let lines = (0..250).map(|i| one_reading(device, i)).collect();
            tokio::spawn(async move { publish_lines(port, WRITER, &topic, lines).await })
        });
        for p in publishers {
            p.await.unwrap();
        }

        ceiling.finished(Duration::from_secs(10)).await.unwrap();
        peer.wait_stored(1000, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(peer.rss_kib().is_some_and(|k| k > 1000));
        assert!(peer.cpu_seconds().is_some());
        assert_eq!(peer.stored_rows(), 1000);
        assert_eq!(peer.stop().await.unwrap(), 1000);

        let out = Command::new("python3")
            .arg("-c")
            .arg(
                "import sqlite3, sys\n\
                 db = sqlite3.connect(sys.argv[1])\n\
                 print(db.execute('PRAGMA journal_mode').fetchone()[0])\n\
                 print(*db.execute('SELECT count(*), count(metric), count(value), count(time), \
                 count(DISTINCT device_id), count(payload) FROM readings').fetchone())",
            )
            .arg(&db)
            .output()
            .await
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out,
            "wal\n1000 1000 1000 1000 4 0\n",
            "rows in {}",
            db.display()
        );

        broker.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broker_runs_with_vigil_s_generated_config() {
        use vigil::registry::mosquitto;
        let dir = scratch("vigil-conf");
        let conf_d = dir.join("conf.d");
        std::fs::create_dir_all(&conf_d).unwrap();
        let (passwd, acl) = (conf_d.join("passwd"), conf_d.join("acl"));
        let hash = |p| mosquitto::password_hash(p).unwrap();
        let users = format!(
            "vigil-gateway:{}\nox-9:{}\n",
            hash("gw-secret"),
            hash("dev-secret")
        );
        std::fs::write(&passwd, users).unwrap();
        std::fs::write(&acl, mosquitto::acl("vigil-gateway")).unwrap();
        let settings = mosquitto::settings(passwd.to_str().unwrap(), acl.to_str().unwrap());
        std::fs::write(conf_d.join("vigil.conf"), settings).unwrap();

        let port = free_port();
        let broker = Broker::start(&dir.join("broker"), port, Some(&conf_d))
            .await
            .unwrap();
        broker.add_reader("bench-reader", "r-secret").await.unwrap();
        assert!(
            std::fs::read_to_string(&passwd)
                .unwrap()
                .contains("bench-reader:$7$")
        );

        // Vigil's user and the bench reader both receive what a device publishes, under
        // Vigil's ACL.
        let vigil = CeilingSub::start(port, "vigil-gateway", "gw-secret", 3)
            .await
            .unwrap();
        let reader = CeilingSub::start(port, "bench-reader", "r-secret", 3)
            .await
            .unwrap();
        let device = ("ox-9", "dev-secret");
        let lines = |n| (0..n).map(|i| one_reading("ox-1", i)).collect();
        publish_lines(port, device, "vigil/v1/devices/ox-9/readings", lines(3)).await;
        vigil.finished(Duration::from_secs(5)).await.unwrap();
        reader.finished(Duration::from_secs(5)).await.unwrap();
        let pid = broker.pid().unwrap();
        assert!(proc_stats(pid).is_some());
        broker.stop().await.unwrap();
        assert!(proc_stats(pid).is_none(), "stopped");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
