//! The `vigil` command: parse the command line, load the configuration, start logging, run.

use std::io::Read as _;
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

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
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
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input.
    Add {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        username: String,
        #[arg(long, value_parser = ["clinician", "admin"])]
        role: String,
    },
}

/// Exit code for bad configuration, a port in use, or bad arguments (the contract's 2).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = std::env::vars();
    match cli.command {
        Command::Serve {
            common,
            http_listen,
            mqtt_listen,
        } => {
            let flags = Overrides {
                data_dir: common.data_dir,
                http_listen,
                mqtt_listen,
            };
            let cfg = match Config::load(common.config.as_deref(), env, &flags) {
                Ok(c) => c,
                Err(e) => return fail(&e.to_string()),
            };
            vigil::telemetry::init_logging(&cfg.log);
            serve(cfg)
        }
        Command::User {
            command:
                UserCommand::Add {
                    common,
                    username,
                    role,
                },
        } => {
            let flags = Overrides {
                data_dir: common.data_dir,
                ..Overrides::default()
            };
            let cfg = match Config::load(common.config.as_deref(), env, &flags) {
                Ok(c) => c,
                Err(e) => return fail(&e.to_string()),
            };
            user_add(cfg, &username, &role)
        }
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("vigil: {msg}");
    ExitCode::from(EXIT_CONFIG)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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

fn user_add(cfg: Config, username: &str, role: &str) -> ExitCode {
    let Some(role) = Role::parse(role) else {
        return fail("--role must be clinician or admin");
    };
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut password) {
        return fail(&format!(
            "cannot read the password from standard input: {e}"
        ));
    }
    let password = password.trim_end_matches(['\r', '\n']);
    runtime().block_on(async move {
        if let Err(e) = std::fs::create_dir_all(&cfg.data_dir) {
            return fail(&format!(
                "data_dir: cannot create {}: {e}",
                cfg.data_dir.display()
            ));
        }
        let profiles = match Profiles::built_in() {
            Ok(p) => p,
            Err(e) => return fail(&e.to_string()),
        };
        let registry = match Registry::open(&cfg.data_dir, profiles) {
            Ok(r) => r,
            Err(e) => return fail(&e.to_string()),
        };
        match registry
            .add_user(username, role, password, vigil::domain::now_ms())
            .await
        {
            Ok(()) => {
                println!("user {username} created with role {}", role.as_str());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vigil: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
