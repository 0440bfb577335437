//! `ciba-proxy [--config FILE]` (or `CIBA_PROXY_CONFIG=FILE`) runs the proxy;
//! `ciba-proxy check --config FILE` validates a configuration and exits;
//! `ciba-proxy client ...` runs the console CIBA client (the
//! `ciba-proxy-client` crate) instead, and `ciba-proxy device ...` the
//! console authentication device (its `device` module).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ciba_proxy::configuration::Settings;
use ciba_proxy::startup::{self, Application, StartupError};
use ciba_proxy::telemetry;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

// mimalloc, not glibc's malloc: every poll allocates a few short-lived
// buffers on two or more threads, where glibc spends more time (its arenas)
// and keeps freed memory (a burst of slow connections left 41 MB behind).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a configuration the proxy refuses to start with.
const EXIT_CONFIG: u8 = 2;

const AFTER_HELP: &str = "\
Every key can be overridden with CIBA_PROXY__SECTION__KEY, e.g. CIBA_PROXY__STORE__URL.
Exit status: 2 when the configuration is refused (one line on stderr names the key).";

/// OpenID Connect CIBA in front of an existing OpenID provider.
#[derive(Parser)]
#[command(name = "ciba-proxy", version, after_help = AFTER_HELP)]
struct Cli {
    /// The configuration file (TOML) to serve with
    #[arg(short, long, value_name = "FILE", env = "CIBA_PROXY_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and exit: 0 if the proxy would start with it, 2 (naming the key) if not. Binds nothing; calls neither the IdP nor the store
    Check {
        /// The configuration file (TOML) to check
        #[arg(short, long, value_name = "FILE", env = "CIBA_PROXY_CONFIG")]
        config: Option<PathBuf>,
    },
    // Its help is the client's own (`ciba-proxy client --help`).
    Client(Box<ciba_proxy_client::Args>),
    // Its help is the device's own (`ciba-proxy device --help`).
    Device(Box<ciba_proxy_client::device::DeviceArgs>),
}

/// The file to read: given after the subcommand, or before it, or in the
/// environment. Without one, a usage error for `subcommand` (or the server).
fn config_path(path: Option<PathBuf>, subcommand: Option<&str>) -> Result<PathBuf, ExitCode> {
    path.ok_or_else(|| {
        let mut cli = Cli::command();
        cli.build();
        let mut command = match subcommand.and_then(|name| cli.find_subcommand_mut(name)) {
            Some(sub) => sub.clone(),
            None => cli,
        };
        let _ = command
            .error(
                ErrorKind::MissingRequiredArgument,
                "no configuration file given: use --config FILE or set CIBA_PROXY_CONFIG=FILE",
            )
            .print();
        ExitCode::from(EXIT_CONFIG)
    })
}

fn load(path: &Path) -> Result<Settings, ExitCode> {
    Settings::load(path).map_err(|e| {
        eprintln!("ciba-proxy: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // 2 for usage errors, 0 for --help and --version.
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_CONFIG));
        }
    };
    match cli.command {
        Some(Command::Client(args)) => ciba_proxy_client::execute(*args).await,
        Some(Command::Device(args)) => ciba_proxy_client::device::execute(*args).await,
        Some(Command::Check { config }) => check(config.or(cli.config)),
        None => serve(cli.config).await,
    }
}

/// `ciba-proxy check`: 0 and `configuration OK` on stdout, or 2 and one line
/// on stderr.
fn check(path: Option<PathBuf>) -> ExitCode {
    let settings = match config_path(path, Some("check")).and_then(|p| load(&p)) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match startup::check(&settings) {
        Ok(()) => {
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ciba-proxy: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn serve(path: Option<PathBuf>) -> ExitCode {
    let settings = match config_path(path, None).and_then(|p| load(&p)) {
        Ok(s) => s,
        Err(code) => return code,
    };
    telemetry::init(&settings.log);
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(StartupError::Config(e)) => {
            eprintln!("ciba-proxy: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            eprintln!("ciba-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(port = app.port(), "ciba-proxy listening");
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}
