//! The `vigil` binary: start-up errors are one line with exit code 2; SIGTERM drains and exits 0;
//! one gateway per data directory, which stays private to its user; `vigil user add` at a
//! terminal.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

use crate::support::{Api, TOKEN, eventually, run};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_or_a_bad_config_is_one_line_and_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    // A directory Vigil creates (0700): one it had to make private would add a warning line.
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().unwrap();

    let check = |(code, err): (Option<i32>, String), needle: &str| {
        assert_eq!(code, Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    };
    let out = std::process::Command::new(VIGIL)
        .args([
            "serve",
            "--data-dir",
            data,
            "--http-listen",
            &addr,
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    check(ended(out), "http.listen");

    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, "[mqtt]\nmax_inflight = \"many\"\n").unwrap();
    let out = std::process::Command::new(VIGIL)
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data,
        ])
        .output()
        .unwrap();
    check(ended(out), "mqtt.max_inflight");

    let out = std::process::Command::new(VIGIL)
        .args(["serve", "--config", "/nonexistent/vigil.toml"])
        .output()
        .unwrap();
    check(ended(out), "/nonexistent/vigil.toml");

    let out = std::process::Command::new(VIGIL)
        .args(["serve", "--data-dir", data, "--mqtt-listen", "localhost"])
        .env("VIGIL_HTTP__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    check(ended(out), "mqtt.listen");

    // A guessable bootstrap token: too short, or still the deployment example's placeholder.
    for token in ["change-me", "CHANGE-ME-bootstrap-token"] {
        let out = serve_to_the_end(&data_dir, &[("VIGIL_BOOTSTRAP_TOKEN", token)]).await;
        check(out, "VIGIL_BOOTSTRAP_TOKEN");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_level_that_is_not_a_filter_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, key) in [
        ("VIGIL_LOG__LEVEL", "verbose", "log.level"),
        ("RUST_LOG", "verbose", "RUST_LOG"),
    ] {
        let (code, err) = serve_to_the_end(dir.path(), &[(var, value)]).await;
        assert_eq!(code, Some(2), "{var}={value}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
        assert!(
            err.contains(&format!("{key}: \"verbose\"")) && err.contains("info"),
            "{err:?}"
        );
    }
}

/// A `vigil serve` child process; its listening addresses are read from its JSON log.
pub(crate) struct Child {
    pub(crate) child: tokio::process::Child,
    pub(crate) http: std::net::SocketAddr,
    pub(crate) mqtt: std::net::SocketAddr,
    /// Its log lines (JSON), as they come.
    pub(crate) log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub(crate) async fn spawn_vigil(data_dir: &std::path::Path, mqtt_listen: &str) -> Child {
    spawn_vigil_with(data_dir, mqtt_listen, &[]).await
}

/// Like [`spawn_vigil`], with extra environment (configuration by `VIGIL_<SECTION>__<KEY>`).
pub(crate) async fn spawn_vigil_with(
    data_dir: &std::path::Path,
    mqtt_listen: &str,
    env: &[(&str, &str)],
) -> Child {
    spawn_vigil_under(&[], data_dir, mqtt_listen, env).await
}

/// Like [`spawn_vigil_with`], started by the command `prefix` (e.g. `prlimit --nofile=1024:1024`,
/// which runs Vigil with that descriptor limit).
pub(crate) async fn spawn_vigil_under(
    prefix: &[&str],
    data_dir: &std::path::Path,
    mqtt_listen: &str,
    env: &[(&str, &str)],
) -> Child {
    let (program, before) = match prefix.split_first() {
        Some((p, rest)) => (*p, rest),
        None => (VIGIL, &[][..]),
    };
    let mut command = tokio::process::Command::new(program);
    if !prefix.is_empty() {
        command.args(before).arg(VIGIL);
    }
    spawn_serve(command, data_dir, mqtt_listen, env).await
}

/// `vigil serve` with a process mask of 000 (every bit a file's creator gives stays), through a
/// shell that sets it and then becomes `vigil`.
async fn spawn_vigil_umask_000(data_dir: &std::path::Path) -> Child {
    let mut sh = tokio::process::Command::new("sh");
    sh.args(["-c", "umask 000 && exec \"$0\" \"$@\"", VIGIL]);
    spawn_serve(sh, data_dir, "127.0.0.1:0", &[]).await
}

/// Starts `command` (`vigil`, or a wrapper that execs its arguments) with `serve` and its flags.
pub(crate) async fn spawn_serve(
    command: tokio::process::Command,
    data_dir: &std::path::Path,
    mqtt_listen: &str,
    env: &[(&str, &str)],
) -> Child {
    spawn_serve_on(command, data_dir, "127.0.0.1:0", mqtt_listen, env).await
}

/// Like [`spawn_serve`], its HTTP listener at `http_listen` (to start an instance again on the
/// addresses a load balancer knows it by).
pub(crate) async fn spawn_serve_on(
    mut command: tokio::process::Command,
    data_dir: &std::path::Path,
    http_listen: &str,
    mqtt_listen: &str,
    env: &[(&str, &str)],
) -> Child {
    let mut child = command
        .args([
            "serve",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--http-listen",
            http_listen,
            "--mqtt-listen",
            mqtt_listen,
        ])
        .env("VIGIL_BOOTSTRAP_TOKEN", TOKEN)
        .env("VIGIL_LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (http, mqtt) = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.lock().unwrap().push(line.clone());
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "vigil listening" {
                // In external mode there is no endpoint of its own ("external mqtt://…"):
                // the unspecified address stands for none.
                let mqtt = v["mqtt"].as_str().unwrap();
                return (
                    v["http"].as_str().unwrap().parse().unwrap(),
                    mqtt.parse().unwrap_or_else(|_| {
                        assert!(mqtt.starts_with("external "), "{mqtt}");
                        "0.0.0.0:0".parse().unwrap()
                    }),
                );
            }
        }
        panic!("vigil exited before listening");
    })
    .await
    .expect("vigil listens within 30 s");
    // Keep draining the log so the child never blocks on a full pipe; VIGIL_TEST_LOG shows it.
    let echo = std::env::var_os("VIGIL_TEST_LOG").is_some();
    let kept = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if echo {
                eprintln!("vigil: {line}");
            }
            kept.lock().unwrap().push(line);
        }
    });
    Child {
        child,
        http,
        mqtt,
        log,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero_and_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = spawn_vigil(dir.path(), "127.0.0.1:0").await;
    let api = Api::new(v.http);
    api.patient("p1").await;
    let pid = v.child.id().unwrap().to_string();
    assert!(run("kill", &["-TERM", &pid], None).await.ok);
    let status = tokio::time::timeout(Duration::from_secs(30), v.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let v = spawn_vigil(dir.path(), "127.0.0.1:0").await;
    let (s, p) = Api::new(v.http).get("/api/v1/patients/p1").await;
    assert_eq!(s, reqwest::StatusCode::OK, "{p}");
}

/// A user name locked by failed sign-ins is still locked after a restart: the counts are kept
/// in the registry, not only in the process's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_lock_outlives_a_restart() {
    const FREE: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let mut v = spawn_vigil(dir.path(), "127.0.0.1:0").await;
    let (s, body) = Api::new(v.http)
        .post(
            "/api/v1/users",
            serde_json::json!({"name": "nurse-kept", "password": "a-long-enough-password", "role": "clinician"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{body}");
    let wrong = |http: std::net::SocketAddr| async move {
        reqwest::Client::new()
            .post(format!("http://{http}/api/v1/session"))
            .json(&serde_json::json!({"username": "nurse-kept", "password": "wrong-password"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    for _ in 0..=FREE {
        assert_eq!(wrong(v.http).await, 401);
    }
    assert_eq!(wrong(v.http).await, 429);
    let pid = v.child.id().unwrap().to_string();
    assert!(run("kill", &["-TERM", &pid], None).await.ok);
    v.child.wait().await.unwrap();

    let v = spawn_vigil(dir.path(), "127.0.0.1:0").await;
    let mut own = 0;
    eventually(Duration::from_secs(10), "the lock kept", || {
        own += 1;
        assert!(own < FREE, "the restarted gateway counted afresh");
        let attempt = wrong(v.http);
        async move { (attempt.await == 429).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_reads_the_password_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let add = |username: &'static str, role: &'static str, password: &'static [u8]| {
        let data = data.to_owned();
        async move {
            let args = [
                "user",
                "add",
                "--data-dir",
                &data,
                "--username",
                username,
                "--role",
                role,
            ];
            run(VIGIL, &args, Some(password)).await
        }
    };
    // The first line is the password (what follows it is not).
    let out = add("nurse", "clinician", b"a long enough password\nnot this\n").await;
    assert!(out.ok, "{}", out.stderr);
    let again = add("nurse", "clinician", b"a long enough password\n").await;
    assert!(
        !again.ok && again.stderr.contains("already exists"),
        "{}",
        again.stderr
    );
    // Usernames ignore case: NURSE is nurse.
    let other_case = add("NURSE", "admin", b"a long enough password\n").await;
    assert!(
        !other_case.ok
            && other_case
                .stderr
                .contains("user nurse (usernames ignore case) already exists"),
        "{}",
        other_case.stderr
    );
    let short = add("x", "admin", b"short\n").await;
    assert!(!short.ok && short.stderr.contains("12"), "{}", short.stderr);

    // With care teams (created when missing): the user signs in on them.
    let args = [
        "user",
        "add",
        "--data-dir",
        data,
        "--username",
        "nina",
        "--role",
        "clinician",
        "--team",
        "north",
        "--team",
        "south",
    ];
    let out = run(VIGIL, &args, Some(b"another long password\n")).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("north, south"), "{}", out.stdout);
    let v = spawn_vigil(dir.path(), "127.0.0.1:0").await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/session", v.http))
        .json(&serde_json::json!({"username": "nina", "password": "another long password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["user"]["teams"], serde_json::json!(["north", "south"]));
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/session", v.http))
        .json(&serde_json::json!({"username": "nurse", "password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
}

/// Runs `vigil serve` on `data_dir` (free ports, `RUST_LOG` unset, then `env`), which is
/// expected to refuse to start, to its end and returns its exit code and standard error. Bounded
/// (30 s): a gateway that started instead would serve on.
async fn serve_to_the_end(data_dir: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let child = tokio::process::Command::new(VIGIL)
        .args(["serve", "--data-dir", data_dir.to_str().unwrap()])
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("vigil serve with {env:?} started instead of ending"))
        .unwrap();
    ended(out)
}

/// A finished command's exit code and standard error.
fn ended(out: std::process::Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_a_data_dir_in_use_exits_2_naming_the_first_and_a_killed_one_leaves_no_lock()
 {
    let dir = tempfile::tempdir().unwrap();
    let mut first = spawn_vigil(dir.path(), "127.0.0.1:0").await;
    let pid = first.child.id().unwrap();

    let (code, err) = serve_to_the_end(dir.path(), &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
    assert!(
        err.contains("is in use by another vigil serve")
            && err.contains(&format!("(pid {pid}, http {})", first.http)),
        "{err}"
    );

    // The command-line tools that share the directory with a running gateway still work.
    let data = dir.path().to_str().unwrap();
    let args = ["user", "add", "--data-dir", data, "--username", "nina"];
    let out = run(
        VIGIL,
        &[&args[..], &["--role", "clinician"]].concat(),
        Some(b"a long enough password\n"),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let (s, v) = Api::new(first.http).get("/api/v1/users").await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    assert!(v.to_string().contains("nina"), "{v}");

    // SIGKILL: the kernel releases the lock with the process; the next start is not blocked.
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    let again = spawn_vigil(dir.path(), "127.0.0.1:0").await;
    let (s, _) = Api::new(again.http).get("/api/v1/users").await;
    assert_eq!(s, reqwest::StatusCode::OK);
}

/// Every entry of `dir` and `dir` itself whose mode gives anything to group or others.
fn readable_by_others(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |p: &Path| {
        let mode = std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            out.push(format!("{} {mode:o}", p.display()));
        }
    };
    check(dir);
    for e in std::fs::read_dir(dir).unwrap() {
        check(&e.unwrap().path());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_0700_and_its_files_0600_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut v = spawn_vigil_umask_000(&dir).await;
    let api = Api::new(v.http);
    api.patient("pm1").await;
    let secret = api.device("oxm1", "pm1", "pulse-oximeter").await;
    crate::support::publish_readings(
        v.mqtt,
        "oxm1",
        &secret,
        &serde_json::json!({"metric": "spo2", "value": 96}),
    )
    .await;
    assert_eq!(readable_by_others(&dir), Vec::<String>::new());
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for want in [
        "registry.db",
        "registry.db-wal",
        "registry.db-shm",
        "store.db",
        "store.db-wal",
        "store.db-shm",
        "visit-signing.key",
        "vigil.lock",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // `vigil user add` on a new directory, with the same mask.
    let other = tmp.path().join("other");
    let script = format!(
        "umask 000 && printf 'a long enough password\\n' | exec \"$0\" user add --data-dir {} --username nina --role admin",
        other.display()
    );
    let out = run("sh", &["-c", &script, VIGIL], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(readable_by_others(&other), Vec::<String>::new());

    // A directory an older Vigil left readable is made private at the next start.
    let pid = v.child.id().unwrap().to_string();
    assert!(run("kill", &["-TERM", &pid], None).await.ok);
    v.child.wait().await.unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    assert!(!readable_by_others(&dir).is_empty());
    let _v = spawn_vigil(&dir, "127.0.0.1:0").await;
    assert_eq!(readable_by_others(&dir), Vec::<String>::new());
}

#[test]
fn serve_help_names_the_bootstrap_token_and_the_settings_variables() {
    let out = std::process::Command::new(VIGIL)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    for want in [
        "VIGIL_BOOTSTRAP_TOKEN",
        "VIGIL_<SECTION>__<KEY>",
        "--data-dir",
    ] {
        assert!(help.contains(want), "{want} not in {help}");
    }
}

/// Reads what `script`'s pseudo-terminal shows until `want` appears (at most 30 s).
async fn shown_until(out: &mut tokio::process::ChildStdout, seen: &mut Vec<u8>, want: &str) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !String::from_utf8_lossy(seen).contains(want) {
            let mut buf = [0u8; 1024];
            let n = out.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "the terminal closed before {want:?}: {:?}",
                String::from_utf8_lossy(seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no {want:?} on the terminal: {:?}",
            String::from_utf8_lossy(seen)
        )
    });
}

/// At a terminal (a pseudo-terminal from util-linux's `script`), `vigil user add` prompts,
/// reads the password twice without showing it, and creates the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_at_a_terminal_prompts_twice_without_echo() {
    const PASSWORD: &str = "a long enough password";
    let dir = tempfile::tempdir().unwrap();
    let command = format!(
        "{VIGIL} user add --data-dir {} --username nina --role clinician",
        dir.path().display()
    );
    let mut child = tokio::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script (util-linux) runs");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    // Echo is off before the prompt is written, so typing after it is never shown.
    shown_until(&mut stdout, &mut seen, "Password for nina: ").await;
    stdin
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    shown_until(&mut stdout, &mut seen, "Again: ").await;
    stdin
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    shown_until(&mut stdout, &mut seen, "user nina created").await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    let shown = String::from_utf8_lossy(&seen);
    assert!(status.success(), "{shown}");
    assert!(
        !shown.contains(PASSWORD),
        "the password was shown: {shown:?}"
    );

    let v = spawn_vigil(dir.path(), "127.0.0.1:0").await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/session", v.http))
        .json(&serde_json::json!({"username": "nina", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
}
