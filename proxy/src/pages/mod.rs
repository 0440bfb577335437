//! The pages a person sees: the approval page and every page that ends a
//! flow (`/callback`, approve, deny). Rendered from templates with
//! minijinja, so operators can replace them and the stylesheet
//! (`[pages] templates_dir`) without a rebuild; the defaults are compiled
//! in. Every page carries the same strict headers: no script at all, no
//! framing, no referrer, no caching.
use std::path::PathBuf;

use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use minijinja::{context, Environment, Value};
use url::Url;

use crate::configuration::{ConfigError, PageSettings};

pub mod scopes;

/// Where the stylesheet is served.
pub const ASSETS_PATH: &str = "/assets";
const STYLESHEET: &str = "ciba.css";

const BUILT_IN: [(&str, &str); 5] = [
    ("base.html", include_str!("../../templates/base.html")),
    ("approve.html", include_str!("../../templates/approve.html")),
    ("account.html", include_str!("../../templates/account.html")),
    ("message.html", include_str!("../../templates/message.html")),
    (STYLESHEET, include_str!("../../templates/ciba.css")),
];

/// How a message page looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Ok,
    Info,
    Warn,
}

impl Tone {
    fn as_str(self) -> &'static str {
        match self {
            Tone::Ok => "ok",
            Tone::Info => "info",
            Tone::Warn => "warn",
        }
    }
}

/// A page that tells the user how something ended, in plain words.
#[derive(Debug, Clone, Copy)]
pub struct Message {
    pub status: StatusCode,
    pub tone: Tone,
    pub heading: &'static str,
    pub text: &'static str,
    /// Offer "Check again", and reload every few seconds.
    pub retry: bool,
}

pub struct Pages {
    env: Environment<'static>,
    stylesheet: String,
    site_title: String,
    logo_url: Option<Url>,
    scopes: scopes::Descriptions,
}

impl Pages {
    /// Loads the templates (the operator's first, then the built-in ones)
    /// and renders each once, so a broken template stops the proxy at
    /// startup rather than at a user's first page.
    pub fn from_settings(settings: &PageSettings) -> Result<Self, ConfigError> {
        let dir = settings.templates_dir.clone();
        let read = |name: &str| -> Result<Option<String>, ConfigError> {
            let Some(dir) = &dir else { return Ok(None) };
            let path: PathBuf = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(ConfigError::new(
                    "pages.templates_dir",
                    format!("cannot read {}: {e}", path.display()),
                )),
            }
        };
        if let Some(dir) = &dir {
            if !dir.is_dir() {
                return Err(ConfigError::new(
                    "pages.templates_dir",
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }
        let mut env = Environment::new();
        let mut stylesheet = String::new();
        for (name, built_in) in BUILT_IN {
            let text = read(name)?.unwrap_or_else(|| built_in.to_owned());
            if name == STYLESHEET {
                stylesheet = text;
            } else {
                env.add_template_owned(name, text)
                    .map_err(|e| ConfigError::new("pages.templates_dir", format!("{name}: {e}")))?;
            }
        }
        let pages = Self {
            env,
            stylesheet,
            site_title: settings.title.clone(),
            logo_url: settings.logo_url.clone(),
            scopes: scopes::Descriptions::new(&settings.scope_descriptions),
        };
        pages.check()?;
        Ok(pages)
    }

    /// Renders every template with sample values.
    fn check(&self) -> Result<(), ConfigError> {
        let fail = |e: minijinja::Error| {
            ConfigError::new(
                "pages.templates_dir",
                format!("a template does not render: {e}"),
            )
        };
        self.render(
            "message.html",
            context! { heading => "h", text => "t", tone => "ok" },
        )
        .map_err(fail)?;
        self.render(
            "approve.html",
            context! {
                heading => "h", client_name => "c", scopes => vec!["s"], binding_message => "B",
                expires_in => "1 minute", csrf => "x", approve_action => "/a", deny_action => "/d",
                choices => vec!["A", "B", "C"],
            },
        )
        .map_err(fail)?;
        let request = context! {
            client_name => "c", scopes => vec!["s"], binding_message => "B", expires_in => "1 minute",
            csrf => "x", approve_action => "/a", deny_action => "/d", choices => vec!["A", "B", "C"],
        };
        let device = context! {
            did => "d", name => "n", model => "m", registered => "t", last_used => "t",
        };
        let entry = context! {
            client_name => "c", binding_message => "B", scopes => vec!["s"], outcome => "approved",
            at => "t",
        };
        self.render(
            "account.html",
            context! {
                heading => "h", user => "u", pending => vec![request], devices => vec![device],
                history => vec![entry], qr_svg => "<svg></svg>", qr_json => "{}", csrf => "x",
                remove_action => "/r", signout_action => "/s",
            },
        )
        .map_err(fail)?;
        Ok(())
    }

    fn render(&self, name: &str, page: Value) -> Result<String, minijinja::Error> {
        let site = context! {
            site_title => self.site_title,
            logo_url => self.logo_url.as_ref().map(Url::as_str),
            assets => ASSETS_PATH,
        };
        self.env
            .get_template(name)?
            .render(context! { ..page, ..site })
    }

    /// The stylesheet, for `GET /assets/ciba.css`.
    pub fn stylesheet(&self) -> HttpResponse {
        HttpResponse::Ok()
            .content_type("text/css; charset=utf-8")
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
            .body(self.stylesheet.clone())
    }

    /// The scope sentences a user reads for `scope`.
    pub fn describe_scopes(&self, scope: &str) -> Vec<String> {
        self.scopes.describe(scope)
    }

    /// A message page.
    pub fn message(&self, message: Message) -> HttpResponse {
        let page = context! {
            heading => message.heading,
            text => message.text,
            tone => message.tone.as_str(),
            retry => message.retry,
            refresh_secs => message.retry.then_some(5),
        };
        self.respond(message.status, "message.html", page, &[])
    }

    /// A page from `template`, with the headers of [`secured`].
    pub fn respond(
        &self,
        status: StatusCode,
        template: &str,
        page: Value,
        form_targets: &[String],
    ) -> HttpResponse {
        let html = match self.render(template, page) {
            Ok(html) => html,
            Err(e) => {
                tracing::error!(error = %e, template, "a page template failed to render");
                return secured(StatusCode::INTERNAL_SERVER_ERROR, &[])
                    .content_type("text/plain; charset=utf-8")
                    .body("Something went wrong. Please start again.");
            }
        };
        secured(status, form_targets)
            .content_type("text/html; charset=utf-8")
            .body(html)
    }

    /// `303 See Other` to `location` (RFC 9110 §15.4.4: the browser follows
    /// with a GET), with the headers of every page: the location may hold
    /// an IdP `state`, which must not be cached or leak through Referer.
    pub fn see_other(&self, location: &Url) -> HttpResponse {
        secured(StatusCode::SEE_OTHER, &[])
            .insert_header((header::LOCATION, location.as_str()))
            .finish()
    }
}

/// The headers every page carries; `form_targets` are the origins its
/// forms may lead to besides this one (CSP `form-action` also covers the
/// redirect after a POST).
fn secured(status: StatusCode, form_targets: &[String]) -> actix_web::HttpResponseBuilder {
    let mut form_action = String::from("'self'");
    for target in form_targets {
        form_action.push(' ');
        form_action.push_str(target);
    }
    let mut builder = HttpResponse::build(status);
    builder
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            format!(
                "default-src 'none'; style-src 'self'; img-src 'self' https:; \
                 form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
            ),
        ))
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        // Page URLs carry codes and handles: keep them out of Referer.
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    builder
}

/// "4 minutes", "1 minute", "45 seconds": the time left, in words.
pub fn time_left(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} second{}", if secs == 1 { "" } else { "s" }),
        _ => {
            let minutes = secs.div_ceil(60);
            format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_that_does_not_render_names_the_key() {
        let dir = std::env::temp_dir().join(format!("ciba-bad-pages-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("approve.html"), "{% if %}").unwrap();
        let settings = PageSettings {
            templates_dir: Some(dir),
            ..PageSettings::default()
        };
        let e = Pages::from_settings(&settings).err().unwrap();
        assert_eq!(e.key, "pages.templates_dir");
        assert!(e.message.contains("approve.html"), "{e}");
    }

    #[test]
    fn the_built_in_pages_render() {
        let pages = Pages::from_settings(&PageSettings::default()).unwrap();
        let response = pages.message(Message {
            status: StatusCode::GONE,
            tone: Tone::Info,
            heading: "Gone <b>",
            text: "t",
            retry: true,
        });
        assert_eq!(response.status(), StatusCode::GONE);
    }

    #[test]
    fn the_fallback_for_a_page_that_fails_carries_the_page_headers() {
        let pages = Pages::from_settings(&PageSettings::default()).unwrap();
        let response = pages.respond(StatusCode::OK, "no-such.html", context! {}, &[]);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        assert!(header(header::CONTENT_SECURITY_POLICY).contains("frame-ancestors 'none'"));
        assert_eq!(header(header::CACHE_CONTROL), "no-store");
        assert_eq!(header(header::REFERRER_POLICY), "no-referrer");
        assert_eq!(header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    }

    #[test]
    fn time_left_reads_naturally() {
        assert_eq!(time_left(1), "1 second");
        assert_eq!(time_left(45), "45 seconds");
        assert_eq!(time_left(60), "1 minute");
        assert_eq!(time_left(61), "2 minutes");
        assert_eq!(time_left(300), "5 minutes");
    }
}
