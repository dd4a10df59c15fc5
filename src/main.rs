//! The `vigil` command: parse the command line, load the configuration, start logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use vigil::app::App;
use vigil::config::{Config, Overrides};
use vigil::registry::{Profiles, Registry, Role};

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Telehealth remote-monitoring gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the embedded stores live (default ./vigil-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl Common {
    /// The configuration: defaults, the file, the environment, then these flags.
    fn load(
        self,
        http_listen: Option<String>,
        mqtt_listen: Option<String>,
    ) -> Result<Config, String> {
        let flags = Overrides {
            data_dir: self.data_dir,
            http_listen,
            mqtt_listen,
        };
        Config::load(self.config.as_deref(), std::env::vars(), &flags).map_err(|e| e.to_string())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    #[command(after_help = SERVE_ENVIRONMENT)]
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address of the API and dashboard (default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        http_listen: Option<String>,
        /// Address of the embedded MQTT endpoint (default 0.0.0.0:1883).
        #[arg(long, value_name = "ADDR")]
        mqtt_listen: Option<String>,
    },
    /// Manage dashboard users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Configuration for an external MQTT broker.
    Broker {
        #[command(subcommand)]
        command: BrokerCommand,
    },
    /// The databases: backups, and moving the registry to PostgreSQL.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Notification channels: email (`[smtp]`) and SMS (`[sms]`).
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
}

#[derive(Subcommand)]
enum NotifyCommand {
    /// Send a test message through the configured channels and say what each one answered.
    /// Give the server's --config (or its VIGIL_SMTP__… / VIGIL_SMS__… variables). Exit code
    /// 0: every message was handed over; 1: one was not; 2: bad configuration or arguments.
    Test {
        #[command(flatten)]
        common: Common,
        /// Send a test email to this address (needs `[smtp]`).
        #[arg(long, value_name = "ADDRESS")]
        email: Option<String>,
        /// Send a test SMS to this number, in international form such as +4915112345678
        /// (needs `[sms]`).
        #[arg(long, value_name = "NUMBER")]
        sms: Option<String>,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Write a consistent snapshot of the embedded databases (and the visit-link signing key)
    /// to one tar file, while Vigil runs or not. Give the server's --data-dir (or --config).
    /// Restore: stop Vigil, unpack the file into the data directory, start Vigil.
    Backup {
        #[command(flatten)]
        common: Common,
        /// The backup file to write (replaced if it exists, only once the new one is complete).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Copy the embedded registry (patients, devices, users, alerts, timeline, outbox, visits,
    /// audit trail) into an empty PostgreSQL database, while Vigil runs or not; then start Vigil
    /// with `[database] url` set to it. Readings stay in the data directory.
    Migrate {
        #[command(flatten)]
        common: Common,
        /// The empty target database, `postgres://user:password@host:port/database`.
        #[arg(long, value_name = "URL")]
        to: String,
        /// A PEM file of the CA that signed the database's certificate (default: the system's
        /// roots).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BrokerCommand {
    /// Write Mosquitto's password file, ACL file and settings for the provisioned devices and
    /// Vigil's own user (`mqtt.username` / `mqtt.password`) into a directory.
    MosquittoConfig {
        #[command(flatten)]
        common: Common,
        /// Directory for `passwd`, `acl` and `vigil.conf` (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// What `vigil serve --help` says about the environment.
const SERVE_ENVIRONMENT: &str = "\
Environment:
  VIGIL_BOOTSTRAP_TOKEN=<token>  an admin bearer token (Authorization: Bearer <token>) accepted
                                 while set: for the first set-up, before any user exists
  VIGIL_<SECTION>__<KEY>=<value> any setting, e.g. VIGIL_HTTP__PUBLIC_URL (README.md,
                                 \"Configuration reference\")
  RUST_LOG=<filter>              overrides log.level

One gateway runs on a data directory at a time: a second `vigil serve` on it exits with code 2.";

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user. The password is asked for without echo at a terminal (twice), or read from
    /// the first line of standard input (a pipe or a file). Give the server's --data-dir (or
    /// --config); the server may be running.
    Add {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        username: String,
        #[arg(long, value_parser = ["clinician", "admin"])]
        role: String,
        /// A care team the user belongs to (repeat for several); created if it does not exist.
        /// A clinician sees only the patients of their teams; one given none joins the default
        /// team (`default`), where patients created without a team are.
        #[arg(long = "team", value_name = "TEAM")]
        teams: Vec<String>,
    },
}

/// Exit code for bad configuration, a port in use, or bad arguments (the contract's 2).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            common,
            http_listen,
            mqtt_listen,
        } => {
            let cfg = match common.load(http_listen, mqtt_listen) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            vigil::telemetry::init_logging(&cfg.log);
            serve(cfg)
        }
        Command::Broker {
            command: BrokerCommand::MosquittoConfig { common, out },
        } => {
            let cfg = match common.load(None, None) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            mosquitto_config(cfg, &out)
        }
        Command::Db {
            command: DbCommand::Backup { common, to },
        } => {
            let cfg = match common.load(None, None) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            db_backup(&cfg, &to)
        }
        Command::Db {
            command:
                DbCommand::Migrate {
                    common,
                    to,
                    ca_file,
                },
        } => {
            let cfg = match common.load(None, None) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            db_migrate(&cfg, &to, ca_file.as_deref())
        }
        Command::Notify {
            command: NotifyCommand::Test { common, email, sms },
        } => {
            let cfg = match common.load(None, None) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            notify_test(&cfg, email, sms)
        }
        Command::User {
            command:
                UserCommand::Add {
                    common,
                    username,
                    role,
                    teams,
                },
        } => {
            let cfg = match common.load(None, None) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            user_add(cfg, &username, &role, teams)
        }
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("vigil: {msg}");
    ExitCode::from(EXIT_CONFIG)
}

/// Threads the runtime may start for blocking work (SQLite reads, the registry, DNS). Tokio's
/// default, 512, let a burst of concurrent reads start hundreds of threads, each holding memory
/// after the burst; beyond this, blocking work waits its turn.
const MAX_BLOCKING_THREADS: usize = 64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
        .expect("the tokio runtime starts")
}

fn serve(cfg: Config) -> ExitCode {
    runtime().block_on(async move {
        let bootstrap = std::env::var("VIGIL_BOOTSTRAP_TOKEN").ok();
        let app = match App::build(cfg, bootstrap).await {
            Ok(a) => a,
            Err(e) => return fail(&e.to_string()),
        };
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        tokio::spawn(signals(stop.clone(), abort.clone()));
        app.run(stop, abort).await;
        ExitCode::SUCCESS
    })
}

/// First SIGINT/SIGTERM: stop and drain. Second: abandon the drain.
async fn signals(stop: CancellationToken, abort: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for token in [stop, abort] {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        token.cancel();
    }
}

fn db_backup(cfg: &Config, to: &std::path::Path) -> ExitCode {
    match vigil::backup::backup(&cfg.data_dir, to, cfg.database.is_some()) {
        Ok((m, took)) => {
            let dbs: Vec<String> = m
                .databases
                .iter()
                .map(|d| {
                    format!(
                        "{} ({} bytes, schema {})",
                        d.name, d.bytes, d.schema_version
                    )
                })
                .collect();
            println!(
                "backup of {} taken at {} written to {} in {:.1} s: {}",
                cfg.data_dir.display(),
                m.taken_at,
                to.display(),
                took.as_secs_f64(),
                dbs.join(", ")
            );
            if let Some(elsewhere) = m.databases_elsewhere {
                println!("the registry and the readings are not in it: they are on {elsewhere}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vigil: backup failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn db_migrate(cfg: &Config, url: &str, ca_file: Option<&std::path::Path>) -> ExitCode {
    let moved = runtime().block_on(vigil::db_migrate::migrate(&cfg.data_dir, url, ca_file));
    match moved {
        Ok(m) => {
            let tables: Vec<String> = m
                .copied
                .iter()
                .filter(|c| c.rows > 0)
                .map(|c| format!("{} {}", c.table, c.rows))
                .collect();
            let readings: Vec<String> = m
                .readings
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(t, n)| format!("{t} {n}"))
                .collect();
            println!(
                "registry of {} copied in {:.1} s ({}); audit chain of {} lines verified on the \
                 target; readings copied ({}). Start Vigil with [database] url set to it.",
                cfg.data_dir.display(),
                m.took.as_secs_f64(),
                tables.join(", "),
                m.audit_lines,
                if readings.is_empty() {
                    "none".to_owned()
                } else {
                    readings.join(", ")
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vigil: migrate failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn user_add(cfg: Config, username: &str, role: &str, teams: Vec<String>) -> ExitCode {
    let Some(role) = Role::parse(role) else {
        return fail("--role must be clinician or admin");
    };
    let teams = vigil::registry::initial_teams(role, teams);
    let password = match vigil::terminal::read_password(&format!("Password for {username}: ")) {
        Ok(p) => p,
        Err(e) => return fail(&e.to_string()),
    };
    runtime().block_on(async move {
        let registry = match open_registry(&cfg).await {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
        let now = vigil::domain::now_ms();
        let known = match registry.teams().await {
            Ok(t) => t,
            Err(e) => return fail(&e.to_string()),
        };
        for t in &teams {
            if !known.iter().any(|k| &k.id == t)
                && let Err(e) = registry.create_team(t, t, now, None).await
            {
                return fail(&format!("--team {t}: {e}"));
            }
        }
        // The user and their teams are created together (the command line is not audited).
        let created = registry
            .create_user(username, role, &password, teams.clone(), now, None)
            .await;
        match created {
            Ok(_) => {
                let on = if teams.is_empty() {
                    String::new()
                } else {
                    format!(" on care team(s) {}", teams.join(", "))
                };
                println!(
                    "user {username} created with role {}{on} in {}",
                    role.as_str(),
                    cfg.data_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vigil: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `vigil notify test`: one test message per channel asked for, and a line each saying how it
/// went (what the server or provider answered, or why it was not sent and whether a retry
/// could help).
fn notify_test(cfg: &Config, email: Option<String>, sms: Option<String>) -> ExitCode {
    use vigil::notify::{Channel, Channels, Notice, SendError};
    let asked: Vec<(Channel, String)> = [(Channel::Email, email), (Channel::Sms, sms)]
        .into_iter()
        .filter_map(|(c, to)| to.map(|to| (c, to)))
        .collect();
    if asked.is_empty() {
        return fail("notify test: give --email ADDRESS, --sms NUMBER or both");
    }
    let channels = match Channels::from_config(cfg) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    for (channel, _) in &asked {
        if !channels.has(*channel) {
            return fail(&SendError::NotConfigured(*channel).to_string());
        }
    }
    let mut id = [0u8; 8];
    let _ = getrandom::fill(&mut id);
    let notice = Notice::test(
        &format!("ntf_test_{}", hex::encode(id)),
        &cfg.http.public_origin(cfg.http_addr()),
    );
    runtime().block_on(async move {
        let mut all_sent = true;
        for (channel, to) in asked {
            match channels.send(channel, &to, &notice).await {
                Ok(sent) => {
                    let mut line = format!("{channel} to {to}: sent");
                    if let Some(id) = &sent.message_id {
                        line.push_str(&format!(", Message-ID {id}"));
                    }
                    if let Some(r) = &sent.receipt {
                        line.push_str(&format!("; the receiver answered: {r}"));
                    }
                    println!("{line}");
                }
                Err(e) => {
                    all_sent = false;
                    let kind = if e.is_retryable() {
                        "retryable: a later attempt may succeed"
                    } else {
                        "permanent: retrying will not help"
                    };
                    println!("{channel} to {to}: not sent ({kind}): {e}");
                }
            }
        }
        if all_sent {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

/// Opens the registry without the data directory's lock: these commands may run beside the
/// gateway (SQLite serialises the writes; PostgreSQL is shared anyway).
async fn open_registry(cfg: &Config) -> Result<Registry, String> {
    vigil::data_dir::prepare(&cfg.data_dir).map_err(|e| e.to_string())?;
    let profiles = Profiles::built_in().map_err(|e| e.to_string())?;
    vigil::app::open_registry(cfg, profiles)
        .await
        .map_err(|e| e.to_string())
}

fn mosquitto_config(cfg: Config, out: &std::path::Path) -> ExitCode {
    use vigil::registry::mosquitto;
    let (Some(user), Some(password)) = (cfg.mqtt.username.clone(), cfg.mqtt.password.clone())
    else {
        return fail("mqtt.username and mqtt.password: Vigil's own broker user must be configured");
    };
    runtime().block_on(async move {
        let registry = match open_registry(&cfg).await {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
        let devices = match registry.broker_passwords().await {
            Ok(d) => d,
            Err(e) => return fail(&e.to_string()),
        };
        if devices.iter().any(|(id, _)| *id == user) {
            return fail(&format!(
                "mqtt.username: {user:?} is also a device id; give Vigil's broker user another name"
            ));
        }
        let Ok(service_hash) = mosquitto::password_hash(&password) else {
            return fail("no randomness available for the password salt");
        };
        let mut passwd = format!("{user}:{service_hash}\n");
        for (id, hash) in &devices {
            passwd.push_str(&format!("{id}:{hash}\n"));
        }
        if let Err(e) = std::fs::create_dir_all(out) {
            return fail(&format!("--out: cannot create {}: {e}", out.display()));
        }
        let abs = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
        let passwd_path = abs.join("passwd");
        let acl_path = abs.join("acl");
        let conf_path = abs.join("vigil.conf");
        let settings = mosquitto::settings(
            &passwd_path.display().to_string(),
            &acl_path.display().to_string(),
        );
        let files = [
            (&passwd_path, passwd),
            (&acl_path, mosquitto::acl(&user)),
            (&conf_path, settings),
        ];
        for (path, text) in files {
            if let Err(e) = write_private(path, &text) {
                return fail(&format!("--out: cannot write {}: {e}", path.display()));
            }
        }
        println!(
            "wrote {} (Vigil's user and {} devices), {} and {}",
            passwd_path.display(),
            devices.len(),
            acl_path.display(),
            conf_path.display()
        );
        ExitCode::SUCCESS
    })
}

/// Writes a file readable by its owner only (it holds password hashes), atomically.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}
