//! `ciba-proxy --config FILE` (or `CIBA_PROXY_CONFIG=FILE`) runs the proxy;
//! `ciba-proxy client ...` runs the console consumption device instead.
use std::path::PathBuf;
use std::process::ExitCode;

use ciba_proxy::configuration::Settings;
use ciba_proxy::consumption_device;
use ciba_proxy::startup::{Application, StartupError};
use ciba_proxy::telemetry;

const USAGE: &str = "usage: ciba-proxy --config FILE   (or set CIBA_PROXY_CONFIG=FILE)\n\
every key can be overridden with CIBA_PROXY__SECTION__KEY, e.g. CIBA_PROXY__STORE__URL\n\
the console CIBA client: ciba-proxy client --help";

/// Exit status for a configuration the proxy refuses to start with.
const EXIT_CONFIG: u8 = 2;

fn config_path() -> Result<PathBuf, String> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => path = Some(args.next().ok_or("--config needs a file")?),
            "--help" | "-h" => return Err(String::new()),
            other => match other.strip_prefix("--config=") {
                Some(p) => path = Some(p.to_owned()),
                None => return Err(format!("unknown argument {other}")),
            },
        }
    }
    path.or_else(|| std::env::var("CIBA_PROXY_CONFIG").ok())
        .map(PathBuf::from)
        .ok_or_else(|| "no configuration file given".into())
}

#[actix_web::main]
async fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    if args
        .peek()
        .is_some_and(|a| a == consumption_device::SUBCOMMAND)
    {
        return consumption_device::main(args).await;
    }
    let path = match config_path() {
        Ok(p) => p,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ciba-proxy: {e}\n{USAGE}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let settings = match Settings::load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ciba-proxy: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
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
