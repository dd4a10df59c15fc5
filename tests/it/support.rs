//! Helpers: start a gateway, call its API, run MQTT clients, poll with a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use vigil::app::App;
use vigil::config::{Config, Overrides};

pub(crate) const TOKEN: &str = "test-bootstrap-token-0123456789";

/// Polls `f` until it returns `Some`, or panics naming `what` after `deadline`.
pub(crate) async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A gateway running in this process on free ports, with its own data directory.
pub(crate) struct Gateway {
    pub(crate) http: SocketAddr,
    /// The embedded endpoint's plain MQTT (unspecified address in external-broker mode and
    /// with MQTTS only).
    pub(crate) mqtt: SocketAddr,
    pub(crate) mqtts: Option<SocketAddr>,
    pub(crate) client: Api,
    pub(crate) dir: Arc<tempfile::TempDir>,
    cfg: Config,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    pub(crate) async fn start() -> Gateway {
        Gateway::start_with(|_| {}).await
    }

    /// Starts a gateway after `adjust` has changed its configuration.
    pub(crate) async fn start_with(adjust: impl FnOnce(&mut Config)) -> Gateway {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let flags = Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            http_listen: Some("127.0.0.1:0".into()),
            mqtt_listen: Some("127.0.0.1:0".into()),
        };
        let mut cfg = Config::load(None, Vec::new(), &flags).unwrap();
        cfg.database = registry_database().await;
        adjust(&mut cfg);
        Gateway::run(cfg, dir).await
    }

    async fn run(cfg: Config, dir: Arc<tempfile::TempDir>) -> Gateway {
        // VIGIL_TEST_LOG=debug shows the gateway's logs when a test needs explaining.
        if let Ok(level) = std::env::var("VIGIL_TEST_LOG") {
            vigil::telemetry::init_logging(&vigil::config::LogConfig {
                format: vigil::config::LogFormat::Text,
                level,
            });
        }
        let app = App::build(cfg.clone(), Some(TOKEN.into())).await.unwrap();
        let (http, mqtts) = (app.http_addr(), app.mqtts_addr());
        let mqtt = app.mqtt_addr().unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run(stop.clone(), CancellationToken::new()));
        if has_own_database(&cfg) {
            // On PostgreSQL the alert engine evaluates the partitions this instance holds, and
            // takes them a moment after start, rebuilding from the stores: a reading stored
            // before then is judged by that rebuild, as one found on restart. The tests judge
            // live readings, so a gateway alone on its database starts once its engine holds
            // every partition (one sharing a database, as a test of a cluster sets, holds some).
            let all = f64::from(vigil::domain::partition::ALERT_PARTITIONS);
            eventually(
                Duration::from_secs(30),
                "the alert engine to hold every partition",
                || async {
                    (metric(http, "vigil_alert_partitions_held").await == Some(all)).then_some(())
                },
            )
            .await;
        }
        Gateway {
            http,
            mqtt,
            mqtts,
            client: Api::new(http),
            dir,
            cfg,
            stop,
            task,
        }
    }

    /// Stops the gateway gracefully; its data directory stays while another handle holds it.
    pub(crate) async fn stop_keeping_data(self) -> (Config, Arc<tempfile::TempDir>) {
        let (cfg, dir) = (self.cfg.clone(), self.dir.clone());
        self.stop().await;
        (cfg, dir)
    }

    pub(crate) async fn start_again(cfg: Config, dir: Arc<tempfile::TempDir>) -> Gateway {
        Gateway::run(cfg, dir).await
    }

    /// Its data directory (`data_dir` as configured).
    pub(crate) fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }

    /// The gateway's registry database, to reach under the seam.
    pub(crate) fn registry_db(&self) -> crate::registry_db::RegistryDb {
        crate::registry_db::RegistryDb::of(&self.cfg)
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("gateway stops within 30 s")
            .unwrap();
    }
}

/// The registry's database for a new gateway: with `VIGIL_TEST_PG_URL` set (a PostgreSQL
/// superuser's URL; `./scripts/test` starts a server with `scripts/pg-temp` for the API-level
/// tests' second run) a new database of its own on that server, so the same tests run with
/// PostgreSQL as the registry; otherwise none (SQLite in the data directory).
pub(crate) async fn registry_database() -> Option<vigil::config::DatabaseConfig> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let admin = std::env::var("VIGIL_TEST_PG_URL").ok()?;
    let name = format!(
        "vigil_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let out = run(
        "psql",
        &[
            &admin,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            &format!("CREATE DATABASE {name}"),
        ],
        None,
    )
    .await;
    assert!(out.ok, "creating the gateway's database: {}", out.stderr);
    let base = admin.rsplit_once('/').expect("a URL ending in /database").0;
    Some(vigil::config::DatabaseConfig {
        url: format!("{base}/{name}"),
        ca_file: None,
    })
}

/// Whether the gateway's registry is a PostgreSQL database [`registry_database`] made for it
/// alone (not one a test set for several instances to share).
fn has_own_database(cfg: &Config) -> bool {
    cfg.database.as_ref().is_some_and(|d| {
        d.url
            .rsplit_once('/')
            .is_some_and(|(_, name)| name.starts_with(&format!("vigil_{}_", std::process::id())))
    })
}

/// An API client holding the bootstrap token.
#[derive(Clone)]
pub(crate) struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(addr: SocketAddr) -> Api {
        Api {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    /// A client of Vigil's HTTPS listener at `addr`, trusting the CA in the PEM file `ca`.
    pub(crate) fn https(addr: SocketAddr, ca: &Path) -> Api {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
        Api {
            base: format!("https://{addr}"),
            http: reqwest::Client::builder()
                .tls_certs_only([ca])
                .build()
                .unwrap(),
        }
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, None, Some(TOKEN)).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(body), Some(TOKEN)).await
    }

    pub(crate) async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("PATCH", path, Some(body), Some(TOKEN)).await
    }

    /// `PUT /patients/{id}/care-plan` with these rules; the answer as it came.
    pub(crate) async fn care_plan(&self, patient: &str, rules: Value) -> (StatusCode, Value) {
        self.call(
            "PUT",
            &format!("/api/v1/patients/{patient}/care-plan"),
            Some(serde_json::json!({ "rules": rules })),
            Some(TOKEN),
        )
        .await
    }

    pub(crate) async fn patient(&self, id: &str) {
        let (s, v) = self
            .post(
                "/api/v1/patients",
                json!({"id": id, "name": format!("Patient {id}")}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    /// Provisions a device and returns its MQTT secret.
    /// A clinician of `team` (made with the bootstrap token) and a write token acting as them.
    pub(crate) async fn clinician(&self, name: &str, team: &str) -> String {
        let (s, v) = self
            .post(
                "/api/v1/users",
                json!({"name": name, "password": "a-long-enough-password-for-tests",
                       "role": "clinician", "teams": [team]}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = self
            .post(
                "/api/v1/tokens",
                json!({"label": format!("{name} test"), "scope": "write", "expires_days": 1, "user": name}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn device(&self, id: &str, patient: &str, profile: &str) -> String {
        let (s, v) = self
            .post(
                "/api/v1/devices",
                json!({"id": id, "patient_id": patient, "profile": profile}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["mqtt"]["password"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn observations(&self, patient: &str, query: &str) -> Vec<Value> {
        let (s, v) = self
            .get(&format!("/api/v1/patients/{patient}/observations?{query}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["observations"].as_array().unwrap().clone()
    }

    pub(crate) async fn dead_letters(&self, device: &str) -> Vec<Value> {
        let (s, v) = self
            .get(&format!("/api/v1/dead-letters?device_id={device}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["dead_letters"].as_array().unwrap().clone()
    }
}

/// The output of a client program.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) async fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (is it installed? ./scripts/test installs it): {e}")
        });
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).await.unwrap();
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish in 120 s"))
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// MQTT protocol version for the command-line clients.
#[derive(Clone, Copy, Debug)]
pub(crate) enum V {
    V311,
    V5,
}

impl V {
    pub(crate) fn mosquitto(self) -> &'static str {
        match self {
            V::V311 => "mqttv311",
            V::V5 => "mqttv5",
        }
    }

    pub(crate) fn paho(self) -> &'static str {
        match self {
            V::V311 => "3.1.1",
            V::V5 => "5",
        }
    }
}

/// `mosquitto_pub` one message at QoS 1 (it exits after the PUBACK) as device `id`.
pub(crate) async fn mosquitto_pub(
    mqtt: SocketAddr,
    v: V,
    id: &str,
    secret: &str,
    topic: &str,
    payload: &[u8],
    extra: &[&str],
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload");
    std::fs::write(&file, payload).unwrap();
    let port = mqtt.port().to_string();
    let client_id = format!("{id}-mosquitto-pub");
    let mut args = vec![
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        v.mosquitto(),
        "-q",
        "1",
        "-i",
        &client_id,
        "-u",
        id,
        "-P",
        secret,
        "-t",
        topic,
        "-f",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run("mosquitto_pub", &args, None).await
}

/// Publishes a JSON body on a device's readings topic with `mosquitto_pub` (MQTT 5, QoS 1) and
/// asserts it was acknowledged.
pub(crate) async fn publish_readings(mqtt: SocketAddr, device: &str, secret: &str, body: &Value) {
    let out = mosquitto_pub(
        mqtt,
        V::V5,
        device,
        secret,
        &format!("vigil/v1/devices/{device}/readings"),
        serde_json::to_vec(body).unwrap().as_slice(),
        &[],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
}

pub(crate) fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// A test double run as a child process (`tests/clients/receiver.py`,
/// `tests/fhir-server/server.mjs`): it prints `listening <port>` once it accepts connections on
/// 127.0.0.1, answers `GET /_state` with what arrived and takes failures to schedule at
/// `POST /_control`. Killed when dropped.
pub(crate) struct Double {
    /// `http://127.0.0.1:{port}`.
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    _child: tokio::process::Child,
    /// Held so the double never writes to a closed pipe.
    _stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
}

impl Double {
    /// Runs `program args… --port 0` (unless `args` name a `--port`) and waits until it says
    /// where it listens; `install` says what installs the double's packages, for the panic
    /// when it cannot start.
    pub(crate) async fn spawn(program: &str, args: &[&str], install: &str) -> Double {
        use tokio::io::AsyncBufReadExt;
        let what = format!("{program} {}", args.first().copied().unwrap_or_default());
        let mut command = tokio::process::Command::new(program);
        command.args(args);
        if !args.contains(&"--port") {
            command.args(["--port", "0"]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
            .await
            .unwrap_or_else(|_| panic!("{what} says it listens within 30 s"))
            .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!("{what} printed {line:?}, not `listening <port>` (is {install} installed?)")
            });
        Double {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _child: child,
            _stdout: stdout,
        }
    }

    /// The URL of `path` on the double.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What arrived, as the double reports it.
    pub(crate) async fn state(&self) -> Value {
        let resp = self.http.get(self.url("/_state")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    /// Schedules failures: `{"fail_next": n, "fail_status": 503}`, `{"down": true}`,
    /// `{"reset": true}` (and the double's own keys); returns the controls now in force.
    pub(crate) async fn control(&self, body: Value) -> Value {
        let resp = self
            .http
            .post(self.url("/_control"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }
}

/// Runs the Paho device client (`tests/clients/device.py`) and returns its JSON report.
pub(crate) async fn paho_device(
    mqtt: SocketAddr,
    v: V,
    id: &str,
    secret: &str,
    messages: Value,
    extra: &[&str],
) -> Value {
    let script = clients_dir().join("device.py");
    let port = mqtt.port().to_string();
    // `--secret=…`: a secret may begin with characters an option parser would misread.
    let secret_arg = format!("--secret={secret}");
    let mut args = vec![
        script.to_str().unwrap(),
        "--port",
        &port,
        "--device",
        id,
        &secret_arg,
        "--version",
        v.paho(),
    ];
    args.extend_from_slice(extra);
    let out = run("python3", &args, Some(messages.to_string().as_bytes())).await;
    assert!(out.ok, "paho client failed: {}", out.stderr);
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("paho output {:?}: {e}", out.stdout))
}

/// A free TCP port on 127.0.0.1, for servers that cannot bind port 0 and report it
/// (Mosquitto, VictoriaMetrics). The port is released before use: a small race, no more.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Mosquitto broker on a free port, configured from `include_dir` (Vigil's generated
/// files) and killed when dropped.
pub(crate) struct Mosquitto {
    pub(crate) port: u16,
    child: tokio::process::Child,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts Mosquitto on `port` (from [`free_port`]).
    pub(crate) async fn start(include_dir: &Path, port: u16) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n\
                 # The tests run as root; keep root so the 0600 generated files stay readable.\n\
                 user root\n\
                 persistence_location {}/\n\
                 log_dest stderr\n\
                 include_dir {}\n",
                dir.path().display(),
                include_dir.display()
            ),
        )
        .unwrap();
        let child = Mosquitto::spawn(&conf, port).await;
        Mosquitto {
            port,
            child,
            conf,
            _dir: dir,
        }
    }

    async fn spawn(conf: &Path, port: u16) -> tokio::process::Child {
        let child = tokio::process::Command::new("mosquitto")
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            // VIGIL_TEST_LOG shows the broker's log too.
            .stderr(if std::env::var_os("VIGIL_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto starts (./scripts/test installs it)");
        eventually(
            Duration::from_secs(10),
            "mosquitto listening",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        child
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Restarts the broker as a service manager does: SIGTERM (Mosquitto saves its persistence
    /// file), then a new process with the same configuration and data on the same port.
    pub(crate) async fn restart(&mut self) {
        let pid = self.child.id().unwrap().to_string();
        assert!(run("kill", &["-TERM", &pid], None).await.ok);
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("mosquitto stops on SIGTERM")
            .unwrap();
        self.child = Mosquitto::spawn(&self.conf, self.port).await;
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A real VictoriaMetrics (it accepts InfluxDB line protocol on `/api/v2/write`) on a free
/// port with its own storage directory; killed when dropped.
pub(crate) struct Victoria {
    pub(crate) port: u16,
    storage: Arc<tempfile::TempDir>,
    child: Option<tokio::process::Child>,
}

impl Victoria {
    pub(crate) async fn start() -> Victoria {
        let mut v = Victoria {
            port: free_port(),
            storage: Arc::new(tempfile::tempdir().unwrap()),
            child: None,
        };
        v.run().await;
        v
    }

    async fn run(&mut self) {
        let child = tokio::process::Command::new("victoria-metrics")
            .arg(format!(
                "-storageDataPath={}",
                self.storage.path().display()
            ))
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg("-retentionPeriod=100y")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("victoria-metrics starts (./scripts/test installs it)");
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}/health", self.port);
        eventually(Duration::from_secs(20), "victoria-metrics healthy", || {
            let url = url.clone();
            async move {
                reqwest::get(url)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
    }

    /// Stops it gracefully (SIGTERM: it flushes what it holds to disk).
    pub(crate) async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = run("kill", &["-TERM", &pid.to_string()], None).await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
        }
    }

    /// Starts it again on the same port and storage.
    pub(crate) async fn restart(&mut self) {
        self.run().await;
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every sample of series whose name matches `name_regex`, as (labels, value, timestamp).
    pub(crate) async fn export(&self, name_regex: &str) -> Vec<(Value, f64, i64)> {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/export", self.url()))
            .form(&[("match[]", format!("{{__name__=~\"{name_regex}\"}}"))])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut out = Vec::new();
        for line in resp.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            let values = v["values"].as_array().unwrap();
            let times = v["timestamps"].as_array().unwrap();
            for (val, t) in values.iter().zip(times) {
                out.push((
                    v["metric"].clone(),
                    val.as_f64().unwrap(),
                    t.as_i64().unwrap(),
                ));
            }
        }
        out
    }
}

/// Makes a CA and a certificate signed by it with OpenSSL's command-line tool (test fixture only;
/// Vigil itself uses rustls).
/// `server_sans` (e.g. `IP:127.0.0.1,DNS:localhost`) makes a server certificate; `None` a
/// client certificate.
pub(crate) async fn issue_cert(
    dir: &Path,
    ca: &str,
    name: &str,
    cn: &str,
    server_sans: Option<&str>,
) {
    let d = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    if !dir.join(format!("{ca}.crt")).exists() {
        let out = run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &d(&format!("{ca}.key")),
                "-out",
                &d(&format!("{ca}.crt")),
                "-subj",
                &format!("/CN={ca}"),
                "-days",
                "2",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            None,
        )
        .await;
        assert!(out.ok, "{}", out.stderr);
    }
    let out = run(
        "openssl",
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &d(&format!("{name}.key")),
            "-out",
            &d(&format!("{name}.csr")),
            "-subj",
            &format!("/CN={cn}"),
        ],
        None,
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let ext = match server_sans {
        Some(sans) => format!(
            "subjectAltName={sans}
basicConstraints=CA:FALSE
keyUsage=digitalSignature
extendedKeyUsage=serverAuth
"
        ),
        None => "basicConstraints=CA:FALSE
keyUsage=digitalSignature
extendedKeyUsage=clientAuth
"
        .to_owned(),
    };
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    let out = run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &d(&format!("{name}.csr")),
            "-CA",
            &d(&format!("{ca}.crt")),
            "-CAkey",
            &d(&format!("{ca}.key")),
            "-CAcreateserial",
            "-out",
            &d(&format!("{name}.crt")),
            "-days",
            "2",
            "-extfile",
            &d(&format!("{name}.ext")),
        ],
        None,
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
}

/// One sample of `/metrics` by its full name (labels included), if the gateway answers and has it.
pub(crate) async fn metric(http: SocketAddr, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    sample_in(&text, name)
}

/// The sample named `name` (labels included) in a Prometheus text exposition.
pub(crate) fn sample_in(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
