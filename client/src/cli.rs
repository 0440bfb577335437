//! The command line of `ciba-proxy client`, and [`Config`]: the options
//! once their combination is checked and every file they name is loaded.
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};
use secrecy::SecretString;

use crate::auth::{ClientAuth, SigningAlg, SigningKey};
use crate::request::AuthRequest;

const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const AFTER_HELP: &str = "\
Client authentication, exactly one of:
  --client-secret S (or CIBA_CLIENT_SECRET=S)  client_secret_basic, or client_secret_post with --auth-method
  --private-key PEM_FILE                       private_key_jwt (RFC 7523)
  --cert PEM_FILE --cert-key PEM_FILE          tls_client_auth (RFC 8705)
--private-key also signs the request with --sign-request, whatever the authentication.

Progress goes to stderr; the token response JSON to stdout.
Exit status: 0 tokens issued, 1 refused or failed (`error: <code>: <description>`), 2 usage error.";

/// The command line of `ciba-proxy client`.
#[derive(Parser)]
#[command(
    name = "ciba-proxy client",
    bin_name = "ciba-proxy client",
    version,
    about = "A console CIBA consumption device: asks the user to authenticate on their own device, then prints the tokens.",
    after_help = AFTER_HELP
)]
pub struct Args {
    /// The provider's issuer; its endpoints come from {issuer}/.well-known/openid-configuration
    #[arg(long, value_name = "URL", value_parser = parse_issuer)]
    issuer: String,

    /// This client's client_id
    #[arg(long, value_name = "ID", help_heading = "Client authentication")]
    client_id: String,

    /// The client secret; prefer CIBA_CLIENT_SECRET, which stays out of the process list
    #[arg(
        long,
        value_name = "SECRET",
        env = "CIBA_CLIENT_SECRET",
        hide_env_values = true,
        value_parser = parse_secret,
        help_heading = "Client authentication"
    )]
    client_secret: Option<SecretString>,

    /// How the client secret is sent [default: client_secret_basic]
    #[arg(
        long,
        value_enum,
        value_name = "METHOD",
        help_heading = "Client authentication"
    )]
    auth_method: Option<SecretMethod>,

    /// PEM private key: private_key_jwt authentication, and the --sign-request key
    #[arg(long, value_name = "PEM_FILE", help_heading = "Client authentication")]
    private_key: Option<PathBuf>,

    /// `kid` header of the JWTs signed with --private-key
    #[arg(
        long,
        value_name = "KID",
        requires = "private_key",
        help_heading = "Client authentication"
    )]
    key_id: Option<String>,

    /// Signing algorithm for --private-key [default: ES256 for an EC key, else PS256]
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        requires = "private_key",
        help_heading = "Client authentication"
    )]
    alg: Option<SigningAlg>,

    /// PEM client certificate (chain) for tls_client_auth
    #[arg(
        long,
        value_name = "PEM_FILE",
        requires = "cert_key",
        help_heading = "Client authentication"
    )]
    cert: Option<PathBuf>,

    /// PEM private key of --cert
    #[arg(
        long,
        value_name = "PEM_FILE",
        requires = "cert",
        help_heading = "Client authentication"
    )]
    cert_key: Option<PathBuf>,

    /// PEM CA certificate(s) to trust besides the built-in roots
    #[arg(long, value_name = "PEM_FILE")]
    ca: Option<PathBuf>,

    /// Who should authenticate (login_hint)
    #[arg(long, value_name = "HINT", help_heading = "Request")]
    login_hint: String,

    /// Short text shown on both devices so the user can match them
    #[arg(long, value_name = "TEXT", help_heading = "Request")]
    binding_message: Option<String>,

    /// Requested scope
    #[arg(
        long,
        value_name = "SCOPE",
        default_value = "openid",
        help_heading = "Request"
    )]
    scope: String,

    /// Requested lifetime of the request, in seconds
    #[arg(
        long,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..),
        help_heading = "Request"
    )]
    requested_expiry: Option<u64>,

    /// Requested authentication context class references
    #[arg(long, value_name = "ACR", help_heading = "Request")]
    acr_values: Option<String>,

    /// Ping mode: bearer token for the client notification
    #[arg(long, value_name = "TOKEN", value_parser = parse_secret, help_heading = "Request")]
    client_notification_token: Option<SecretString>,

    /// Send the parameters as a request object signed with --private-key
    #[arg(long, requires = "private_key", help_heading = "Request")]
    sign_request: bool,

    /// Give up after this many seconds in all [default: when the request expires]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    max_wait: Option<u64>,
}

/// How a client secret travels (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SecretMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

fn parse_secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}

/// An http(s) URL without query or fragment, kept without a trailing `/`.
fn parse_issuer(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("the issuer must be an https (or http) URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the issuer must not carry credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the issuer has no query or fragment (OpenID Discovery §2)".into());
    }
    Ok(s.trim_end_matches('/').to_owned())
}

/// A validated command line.
pub struct Config {
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) auth: ClientAuth,
    pub(crate) request: AuthRequest,
    /// `--sign-request`: the key that signs the request object.
    pub(crate) request_signer: Option<SigningKey>,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) http: reqwest::Client,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("auth", &self.auth)
            .field("request", &self.request)
            .field("request_signer", &self.request_signer)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

fn usage(kind: ErrorKind, message: impl fmt::Display) -> clap::Error {
    Args::command().error(kind, message)
}

fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, clap::Error> {
    std::fs::read(path).map_err(|e| {
        usage(
            ErrorKind::Io,
            format!("cannot read {flag} {}: {e}", path.display()),
        )
    })
}

impl Config {
    /// Checks the combination of options and loads every file they name.
    pub fn from_args(args: Args) -> Result<Self, clap::Error> {
        let key = match &args.private_key {
            Some(path) => Some(
                SigningKey::from_pem(
                    &read_file("--private-key", path)?,
                    args.alg,
                    args.key_id.clone(),
                )
                .map_err(|e| usage(ErrorKind::InvalidValue, format!("--private-key: {e}")))?,
            ),
            None => None,
        };
        let auth = match (args.client_secret, args.cert.is_some(), &key) {
            (Some(_), true, _) => {
                return Err(usage(
                    ErrorKind::ArgumentConflict,
                    "give a client secret (--client-secret or CIBA_CLIENT_SECRET) or --cert, not both",
                ))
            }
            (Some(secret), false, _) => match args.auth_method {
                Some(SecretMethod::ClientSecretPost) => ClientAuth::SecretPost(secret),
                _ => ClientAuth::SecretBasic(secret),
            },
            (None, true, _) => ClientAuth::TlsClientAuth,
            (None, false, Some(key)) => ClientAuth::PrivateKeyJwt(key.clone()),
            (None, false, None) => {
                return Err(usage(
                    ErrorKind::MissingRequiredArgument,
                    "no client authentication: give --client-secret (or CIBA_CLIENT_SECRET), --private-key, or --cert with --cert-key",
                ))
            }
        };
        if args.auth_method.is_some()
            && !matches!(auth, ClientAuth::SecretBasic(_) | ClientAuth::SecretPost(_))
        {
            return Err(usage(
                ErrorKind::ArgumentConflict,
                "--auth-method applies to a client secret only",
            ));
        }
        let request_signer = if args.sign_request { key } else { None };
        if args.private_key.is_some()
            && request_signer.is_none()
            && !matches!(auth, ClientAuth::PrivateKeyJwt(_))
        {
            return Err(usage(
                ErrorKind::ArgumentConflict,
                format!(
                    "--private-key would be unused: {} authenticates the client, so the key only signs requests with --sign-request",
                    auth.method()
                ),
            ));
        }
        let identity = match (&args.cert, &args.cert_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read_file("--cert", cert)?;
                pem.push(b'\n');
                pem.extend(read_file("--cert-key", key)?);
                Some(pem)
            }
            _ => None,
        };
        let ca = match &args.ca {
            Some(path) => Some(read_file("--ca", path)?),
            None => None,
        };
        let http = http_client(ca.as_deref(), identity.as_deref())
            .map_err(|e| usage(ErrorKind::InvalidValue, e))?;
        Ok(Self {
            issuer: args.issuer,
            client_id: args.client_id,
            auth,
            request: AuthRequest {
                scope: args.scope,
                login_hint: args.login_hint,
                binding_message: args.binding_message,
                requested_expiry: args.requested_expiry,
                acr_values: args.acr_values,
                client_notification_token: args.client_notification_token,
            },
            request_signer,
            max_wait: args.max_wait.map(Duration::from_secs),
            http,
        })
    }
}

/// No redirects: a token endpoint that redirects is not one to follow with
/// credentials (RFC 6749 §3.2 has no redirects).
fn http_client(ca: Option<&[u8]>, identity: Option<&[u8]>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("ciba-proxy-client/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("--ca: not a PEM certificate: {e}"))?;
        if roots.is_empty() {
            return Err("--ca: no certificate in the file".into());
        }
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    if let Some(pem) = identity {
        let identity = reqwest::Identity::from_pem(pem)
            .map_err(|_| "--cert/--cert-key: need a PEM certificate and its PEM private key")?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up TLS: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{key_path, parse};

    #[test]
    fn the_authentication_follows_the_options_given() {
        let ps256 = key_path("client-ps256.pem");
        let config = parse(&[
            "--client-id",
            "shop",
            "--private-key",
            &ps256,
            "--alg",
            "ps256",
        ])
        .unwrap();
        assert!(matches!(config.auth, ClientAuth::PrivateKeyJwt(_)));
        assert!(config.request_signer.is_none());
        let config = parse(&[
            "--client-id",
            "shop",
            "--private-key",
            &ps256,
            "--sign-request",
        ])
        .unwrap();
        assert!(matches!(config.auth, ClientAuth::PrivateKeyJwt(_)));
        assert!(config.request_signer.is_some());
    }

    #[test]
    fn inconsistent_options_are_usage_errors() {
        let ps256 = key_path("client-ps256.pem");
        let es256 = key_path("client-es256.pem");
        let missing = key_path("missing.pem");
        let cases: Vec<Vec<&str>> = vec![
            vec!["--client-id", "shop"],
            vec![
                "--client-id",
                "shop",
                "--client-secret",
                "s",
                "--cert",
                &ps256,
                "--cert-key",
                &ps256,
            ],
            vec![
                "--client-id",
                "shop",
                "--client-secret",
                "s",
                "--sign-request",
            ],
            vec![
                "--client-id",
                "shop",
                "--client-secret",
                "s",
                "--private-key",
                &ps256,
            ],
            vec![
                "--client-id",
                "shop",
                "--private-key",
                &ps256,
                "--auth-method",
                "client_secret_post",
            ],
            vec![
                "--client-id",
                "shop",
                "--private-key",
                &es256,
                "--alg",
                "PS256",
            ],
            vec!["--client-id", "shop", "--private-key", &missing],
            vec![
                "--client-id",
                "shop",
                "--client-secret",
                "s",
                "--cert",
                &ps256,
            ],
            vec![
                "--client-id",
                "shop",
                "--client-secret",
                "s",
                "--key-id",
                "k",
            ],
            vec![
                "--client-id",
                "shop",
                "--client-secret",
                "s",
                "--requested-expiry",
                "0",
            ],
        ];
        for args in cases {
            let err = parse(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
        let err = Args::try_parse_from([
            "client",
            "--issuer",
            "ftp://x",
            "--client-id",
            "a",
            "--login-hint",
            "b",
        ]);
        assert!(err.is_err());
    }

    #[test]
    fn a_bad_client_certificate_is_a_usage_error() {
        // A private key is not a certificate.
        let ps256 = key_path("client-ps256.pem");
        let err = parse(&[
            "--client-id",
            "shop",
            "--cert",
            &ps256,
            "--cert-key",
            &ps256,
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--cert"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_debug_output_or_usage_errors() {
        let config = parse(&[
            "--client-id",
            "shop",
            "--client-secret",
            "hunter2-secret",
            "--client-notification-token",
            "ping-bearer",
        ])
        .unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("ping-bearer"),
            "{shown}"
        );
        let err = parse(&[
            "--client-id",
            "shop",
            "--client-secret",
            "hunter2-secret",
            "--cert",
            "x",
            "--cert-key",
            "y",
        ])
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn the_issuer_must_be_an_http_url() {
        assert_eq!(
            parse_issuer("https://op.example/").unwrap(),
            "https://op.example"
        );
        assert!(parse_issuer("op.example").is_err());
        assert!(parse_issuer("https://op.example/?x=1").is_err());
        assert!(parse_issuer("https://user:pw@op.example").is_err());
    }
}
