//! A real browser for the pages a person sees: Debian's headless Chromium
//! driven over WebDriver (`chromedriver`) with [`fantoccini`].
//!
//! * **One chromedriver per test process**, started on first use with
//!   `--port=0` (it prints the port it got, so there is no free-port race).
//!   It runs under a tiny `sh` watchdog in a process group of its own, whose
//!   stdin is a pipe this process holds in a static: when the test process
//!   ends, however it ends (even SIGKILL), the pipe closes, `read` returns and
//!   the watchdog kills the whole group, chromedriver and any Chromium left
//!   with it. Nothing outlives the test run. (The same idea as the test IdP,
//!   which exits on EOF on its stdin; chromedriver itself ignores stdin.)
//! * **One browser session per [`Browser::start`]**, each with a fresh
//!   profile directory, so tests run in parallel without sharing cookies.
//!   [`Browser::close`] ends it; dropping a `Browser` ends it too (a blocking
//!   `DELETE /session/{id}` to chromedriver, which works after the test's
//!   runtime is gone) and removes the profile.
//! * **The browser never leaves loopback**: besides the flags that stop
//!   Chromium's own background traffic, `--host-resolver-rules` makes every
//!   name but `localhost` fail to resolve at once, so a page that links an
//!   outside resource (the test IdP's pages `@import` a web font) neither
//!   waits on this machine's closed network nor reaches any other one.
//! * **TLS**: certificates are verified as usual; the one exception is the
//!   test PKI's server key ([`TestPki::shared`]`().server`, the key the
//!   proxy serves https with in the tests), whose SPKI hash is passed in
//!   `--ignore-certificate-errors-spki-list`. So an https test server with
//!   that certificate loads, and any other untrusted certificate still gets
//!   Chromium's interstitial. Neither `--ignore-certificate-errors` nor the
//!   `acceptInsecureCerts` capability (both accept every certificate) is
//!   used. Chromium on Linux only trusts extra CAs through an NSS database
//!   (`certutil`, another package), hence the key pin rather than the CA.
//! * **WebDriver cannot read HTTP status codes.** Assert what a person sees:
//!   the URL, the title, the visible text.
//!
//! Environment: `CIBA_TEST_CHROMIUM` (default `/usr/bin/chromium`) and
//! `CIBA_TEST_CHROMEDRIVER` (default `chromedriver` on `PATH`); with
//! `CIBA_TEST_CHROMEDRIVER_LOG` set, chromedriver's output goes to stderr.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, SemaphorePermit};
use url::Url;

use crate::pki::TestPki;

/// How long a wait for an element, a URL or a text may take. Generous: the
/// browsers share two cores with the rest of the suite's 200-odd tests and
/// the servers they start.
pub const WAIT: Duration = Duration::from_secs(30);
/// How long chromedriver may take to listen.
const DRIVER_START: Duration = Duration::from_secs(30);
/// How long starting a browser session may take.
const SESSION_START: Duration = Duration::from_secs(60);
/// How often the waits look again.
const POLL: Duration = Duration::from_millis(50);
/// At most this many browsers at once in one test process: each Chromium is
/// half a dozen processes, and the suite shares two cores. A test waits for
/// a slot in [`Browser::start`].
const MAX_BROWSERS: usize = 4;
static BROWSER_SLOTS: Semaphore = Semaphore::const_new(MAX_BROWSERS);

/// What `make test` and CI install; said in every "not installed" error.
const INSTALL_HINT: &str = "the browser tests need Chromium and ChromeDriver: \
     apt-get install chromium chromium-driver (make test checks this)";

/// Runs chromedriver (`"$@"`) and kills the watchdog's process group once
/// the test process is gone: `read` returns at EOF on stdin. Chromium runs
/// in the same group (chromedriver starts it), so it goes too. A background
/// job's stdin is /dev/null, so chromedriver never holds the pipe open
/// itself. The `exited` line tells [`Driver::start`] at once if chromedriver
/// stopped before it listened.
const WATCHDOG: &str = r#"{ "$@"; echo "chromedriver exited with status $?"; } &
read -r _ || true
kill -TERM 0"#;

/// The one chromedriver of this test process.
struct Driver {
    port: u16,
    /// Held until the process exits; its closing is the watchdog's signal.
    _stdin: ChildStdin,
    _child: Child,
}

impl Driver {
    fn shared() -> anyhow::Result<&'static Driver> {
        static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();
        DRIVER
            .get_or_init(|| Driver::start().map_err(|error| format!("{error:#}")))
            .as_ref()
            .map_err(|error| anyhow!("{error}"))
    }

    fn start() -> anyhow::Result<Self> {
        let chromedriver =
            std::env::var("CIBA_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
        let chromedriver = find_program(&chromedriver)
            .with_context(|| format!("`{chromedriver}` not found; {INSTALL_HINT}"))?;
        let log = std::env::var_os("CIBA_TEST_CHROMEDRIVER_LOG").is_some();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("chromedriver-watchdog")
            .arg(&chromedriver)
            // Only local connections are allowed (chromedriver's default).
            .arg("--port=0")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if log { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .context("cannot start sh for chromedriver")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        // Read its stdout on a thread of its own, for good: the port line
        // first ("ChromeDriver was started successfully on port 40213."),
        // then whatever else, so that it can never block on a full pipe.
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            let mut seen = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if log {
                    eprintln!("chromedriver: {line}");
                }
                let Some(tx) = port_tx.take() else {
                    continue; // the port was reported already
                };
                let outcome =
                    if let Some(rest) = line.split(" started successfully on port ").nth(1) {
                        let port = rest.trim_end_matches('.').parse::<u16>();
                        port.map_err(|_| format!("no port in {line:?}"))
                    } else if line.starts_with("chromedriver exited") {
                        Err(format!("{line} before it listened; it said {seen:?}"))
                    } else {
                        seen.push(line);
                        port_tx = Some(tx);
                        continue;
                    };
                let _ = tx.send(outcome);
            }
        });
        let port = match port_rx.recv_timeout(DRIVER_START) {
            Ok(Ok(port)) => port,
            Ok(Err(error)) => {
                bail!("{error} (set CIBA_TEST_CHROMEDRIVER_LOG=1 to see its stderr)")
            }
            Err(RecvTimeoutError::Timeout) => {
                bail!("chromedriver did not listen within {DRIVER_START:?}")
            }
            Err(RecvTimeoutError::Disconnected) => bail!("chromedriver's watchdog ended at once"),
        };
        Ok(Self {
            port,
            _stdin: stdin,
            _child: child,
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// `program` itself if it has a slash, else the first match on `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// The Chromium binary: `CIBA_TEST_CHROMIUM` or Debian's `/usr/bin/chromium`.
fn chromium_binary() -> anyhow::Result<PathBuf> {
    let binary = std::env::var("CIBA_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    find_program(&binary).with_context(|| format!("`{binary}` not found; {INSTALL_HINT}"))
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of the test PKI's server key, the
/// form `--ignore-certificate-errors-spki-list` takes.
fn test_server_spki_hash() -> anyhow::Result<String> {
    let key = rcgen::KeyPair::from_pem(&TestPki::shared().server.key_pem)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(Sha256::digest(key.public_key_der())))
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else the workspace's.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// Where [`Browser::screenshot`] saves its PNGs: `target/browser-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    target_dir().join("browser-screenshots")
}

/// One headless Chromium session (one window, one fresh profile).
pub struct Browser {
    client: Client,
    session_id: String,
    driver_port: u16,
    profile: PathBuf,
    closed: bool,
    /// Released when the browser is dropped.
    _slot: SemaphorePermit<'static>,
}

impl Browser {
    /// Starts a fresh browser session (and, the first time in this process,
    /// chromedriver). The window is 1280×800 until [`Browser::set_viewport`].
    pub async fn start() -> anyhow::Result<Self> {
        let driver = Driver::shared()?;
        let binary = chromium_binary()?;
        let spki = test_server_spki_hash()?;
        let slot = BROWSER_SLOTS.acquire().await?;
        // Under a loaded machine Chromium now and then fails to come up
        // ("session not created"): one more try with a fresh profile.
        let mut attempt = 1;
        loop {
            match Self::start_session(driver, &binary, &spki).await {
                Ok((client, session_id, profile)) => {
                    return Ok(Self {
                        client,
                        session_id,
                        driver_port: driver.port,
                        profile,
                        closed: false,
                        _slot: slot,
                    })
                }
                Err(error) if attempt < 2 => {
                    eprintln!("browser: {error:#}; trying once more");
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One `POST /session`: a Chromium with a fresh profile directory.
    async fn start_session(
        driver: &Driver,
        binary: &Path,
        spki: &str,
    ) -> anyhow::Result<(Client, String, PathBuf)> {
        let profile =
            std::env::temp_dir().join(format!("ciba-browser-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&profile)?;
        let args = vec![
            "--headless=new".to_owned(),
            // Chromium will not start its sandbox as root (CI runs as root);
            // the tests only visit pages they serve themselves.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            // Without these Chromium keeps trying to reach Google's hosts,
            // and this machine's closed network refuses it, many at a time.
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-extensions".to_owned(),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"
                .to_owned(),
            format!("--ignore-certificate-errors-spki-list={spki}"),
            "--window-size=1280,800".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {
                "implicit": 0,
                "pageLoad": WAIT.as_millis() as u64,
                "script": WAIT.as_millis() as u64,
            },
            "goog:chromeOptions": {
                "binary": binary,
                "args": args,
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities);
        let driver_url = driver.url();
        let connect = builder.connect(&driver_url);
        let client = match tokio::time::timeout(SESSION_START, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                let _ = std::fs::remove_dir_all(&profile);
                return Err(anyhow!("chromedriver could not start Chromium: {error}"));
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&profile);
                bail!("Chromium did not start within {SESSION_START:?}");
            }
        };
        let session_id = match client.session_id().await {
            Ok(Some(id)) => id,
            _ => {
                let _ = client.close().await;
                let _ = std::fs::remove_dir_all(&profile);
                bail!("chromedriver gave no session id");
            }
        };
        Ok((client, session_id, profile))
    }

    /// The fantoccini client, for anything this type does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for its load event (WebDriver's "normal" page
    /// load strategy). An HTTP error page loads like any other page.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("open {url}"))
    }

    /// The address in the address bar.
    pub async fn current_url(&self) -> anyhow::Result<Url> {
        Ok(self.client.current_url().await?)
    }

    /// The page's `<title>`.
    pub async fn title(&self) -> anyhow::Result<String> {
        Ok(self.client.title().await?)
    }

    /// The page's visible text (the `<body>`'s rendered text, as a person
    /// would copy it: hidden elements left out).
    pub async fn text(&self) -> anyhow::Result<String> {
        let body = self.client.find(Locator::Css("body")).await?;
        Ok(body.text().await?)
    }

    /// The page's current DOM as HTML.
    pub async fn html(&self) -> anyhow::Result<String> {
        Ok(self.client.source().await?)
    }

    /// The first element matching `css`, waiting up to [`WAIT`] for it.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => Ok(element),
            Err(error) => Err(self
                .explain(format!("no `{css}` within {WAIT:?}: {error}"))
                .await),
        }
    }

    /// Every element matching `css` now (no waiting).
    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        Ok(self.client.find_all(Locator::Css(css)).await?)
    }

    /// Whether something matches `css` now (no waiting).
    pub async fn exists(&self, css: &str) -> anyhow::Result<bool> {
        Ok(!self.find_all(css).await?.is_empty())
    }

    /// Clicks the first element matching `css` (waiting for it), as a
    /// person would: it must be visible and not covered. A click that
    /// submits a form or follows a link returns once the next page loaded.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        if let Err(error) = element.click().await {
            return Err(self.explain(format!("click `{css}`: {error}")).await);
        }
        Ok(())
    }

    /// Types `value` into the field matching `css` (waiting for it), after
    /// clearing what it held.
    pub async fn fill(&self, css: &str, value: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        let typed = async {
            element.clear().await?;
            element.send_keys(value).await
        };
        if let Err(error) = typed.await {
            return Err(self.explain(format!("fill `{css}`: {error}")).await);
        }
        Ok(())
    }

    /// Submits the form matching `form_css` by clicking its first submit
    /// button, as a person would: the browser checks `required` fields first
    /// and the button's `name`/`value` is sent.
    pub async fn submit(&self, form_css: &str) -> anyhow::Result<()> {
        let form = self.find(form_css).await?;
        let button = form
            .find(Locator::Css(
                "button:not([type]), button[type=submit], input[type=submit]",
            ))
            .await
            .with_context(|| format!("`{form_css}` has no submit button"))?;
        if let Err(error) = button.click().await {
            return Err(self.explain(format!("submit `{form_css}`: {error}")).await);
        }
        Ok(())
    }

    /// Waits up to [`WAIT`] until the visible text contains `needle`, and
    /// returns the text.
    pub async fn wait_for_text(&self, needle: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            // A navigation in flight can make a read fail: look again.
            if let Ok(text) = self.text().await {
                if text.contains(needle) {
                    return Ok(text);
                }
            }
            if Instant::now() > deadline {
                return Err(self
                    .explain(format!("no text {needle:?} within {WAIT:?}"))
                    .await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to [`WAIT`] until the address satisfies `done`, and returns it.
    pub async fn wait_for_url(&self, done: impl Fn(&Url) -> bool) -> anyhow::Result<Url> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(url) = self.current_url().await {
                if done(&url) {
                    return Ok(url);
                }
            }
            if Instant::now() > deadline {
                return Err(self
                    .explain(format!(
                        "the address did not change as awaited within {WAIT:?}"
                    ))
                    .await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `js` as a function body in the page (`return` gives a value) and
    /// returns its JSON result. For small reads; drive the page with clicks.
    pub async fn execute(&self, js: &str) -> anyhow::Result<Value> {
        self.client
            .execute(js, Vec::new())
            .await
            .with_context(|| format!("run script {js:?}"))
    }

    /// Makes the page's viewport exactly `width`×`height` CSS pixels
    /// (`window.innerWidth == width`, `innerHeight == height`; CSS media
    /// queries and screenshots follow), e.g. 360×740 for a phone held
    /// upright, and checks that the page sees it. It overrides the device
    /// metrics (the DevTools protocol's `Emulation.setDeviceMetricsOverride`,
    /// through chromedriver), as Puppeteer's `setViewport` does, with
    /// `mobile: false` (a desktop Chromium in a narrow window: no touch, and
    /// no 980 px layout for pages without a viewport `<meta>`). It holds for
    /// the rest of the session, across navigations. (Resizing the window
    /// also gives `innerWidth == 360` in headless Chromium 156, but the
    /// height comes out 143 px short of the window's, for its toolbar.)
    pub async fn set_viewport(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": width,
                "height": height,
                "deviceScaleFactor": 1,
                "mobile": false,
            }),
        )
        .await?;
        let (w, h) = self.viewport().await?;
        if (w, h) != (width, height) {
            bail!("asked for a {width}×{height} viewport, the page sees {w}×{h}");
        }
        Ok(())
    }

    /// The page's viewport as it sees it: `(innerWidth, innerHeight)`.
    pub async fn viewport(&self) -> anyhow::Result<(u32, u32)> {
        let size = self
            .execute("return [window.innerWidth, window.innerHeight];")
            .await?;
        let read = |i: usize| {
            size[i]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .with_context(|| format!("viewport size {size}"))
        };
        Ok((read(0)?, read(1)?))
    }

    /// The document's full width in CSS pixels
    /// (`document.documentElement.scrollWidth`).
    pub async fn scroll_width(&self) -> anyhow::Result<u64> {
        self.execute("return document.documentElement.scrollWidth;")
            .await?
            .as_u64()
            .context("scrollWidth is not a number")
    }

    /// Whether the page is wider than the viewport, so a person would have
    /// to scroll sideways (`scrollWidth > clientWidth` on the root element).
    pub async fn has_horizontal_scroll(&self) -> anyhow::Result<bool> {
        self.execute(
            "const root = document.documentElement; \
             return root.scrollWidth > root.clientWidth;",
        )
        .await?
        .as_bool()
        .context("not a boolean")
    }

    /// Turns JavaScript off for this session's pages from now on, across
    /// navigations, as for a person who disabled it (the DevTools protocol's
    /// `Emulation.setScriptExecutionDisabled`). WebDriver's own reads and
    /// clicks keep working; [`Browser::execute`] may not.
    pub async fn disable_scripts(&self) -> anyhow::Result<()> {
        self.cdp(
            "Emulation.setScriptExecutionDisabled",
            json!({ "value": true }),
        )
        .await?;
        Ok(())
    }

    /// What a screen reader gets from the page: the role and accessible
    /// name of every node of the accessibility tree that is not ignored
    /// (`Accessibility.getFullAXTree`), in document order.
    pub async fn accessible_nodes(&self) -> anyhow::Result<Vec<(String, String)>> {
        let tree = self.cdp("Accessibility.getFullAXTree", json!({})).await?;
        let nodes = tree["nodes"]
            .as_array()
            .with_context(|| format!("no accessibility nodes in {tree}"))?;
        let value = |node: &Value, key: &str| node[key]["value"].as_str().unwrap_or("").to_owned();
        Ok(nodes
            .iter()
            .filter(|node| node["ignored"] != true)
            .map(|node| (value(node, "role"), value(node, "name")))
            .collect())
    }

    /// Saves a PNG of the viewport as `target/browser-screenshots/{name}.png`
    /// (`name` may have slashes for subfolders) and returns its path.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let path = screenshot_dir().join(format!("{name}.png"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(&path, png).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// Signs in at the test IdP's development pages (`tests/idp`): starting
    /// on its login page (`/interaction/{uid}`, reached through `/auth`), it
    /// types `login` (and a password: the field is `required`, any value
    /// passes), submits, continues on the consent page, and returns the
    /// address the IdP finally sent the browser to (normally the client's
    /// redirect URI with `code` and `state`).
    pub async fn sign_in_at_test_idp(&self, login: &str) -> anyhow::Result<Url> {
        const LOGIN_FORM: &str = "form:has(input[name=prompt][value=login])";
        const CONSENT_FORM: &str = "form:has(input[name=prompt][value=consent])";
        let login_page = self.current_url().await?;
        let idp = login_page.origin();
        self.find(LOGIN_FORM)
            .await
            .context("the test IdP's login page")?;
        self.fill(&format!("{LOGIN_FORM} input[name=login]"), login)
            .await?;
        self.fill(&format!("{LOGIN_FORM} input[name=password]"), "any")
            .await?;
        self.submit(LOGIN_FORM).await?;
        self.find(CONSENT_FORM)
            .await
            .context("the test IdP's consent page, after the login page")?;
        self.submit(CONSENT_FORM).await?;
        // Done once the browser has left the IdP's interaction and /auth pages.
        self.wait_for_url(|url| {
            let at_idp = url.origin() == idp
                && (url.path().starts_with("/interaction/") || url.path().starts_with("/auth"));
            !at_idp
        })
        .await
        .context("leaving the test IdP after consent")
    }

    /// Ends the session: Chromium quits and its profile is removed.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.closed = true;
        let closed = self.client.clone().close().await;
        let _ = std::fs::remove_dir_all(&self.profile);
        closed.context("close the browser session")
    }

    /// Sends a DevTools protocol command through chromedriver's
    /// `goog/cdp/execute` endpoint.
    async fn cdp(&self, cmd: &str, params: Value) -> anyhow::Result<Value> {
        self.client
            .issue_cmd(Cdp {
                cmd: cmd.to_owned(),
                params,
            })
            .await
            .with_context(|| format!("DevTools command {cmd}"))
    }

    /// `what`, with where the browser is and the start of what it shows.
    async fn explain(&self, what: String) -> anyhow::Error {
        let url = self
            .client
            .current_url()
            .await
            .map(|url| url.to_string())
            .unwrap_or_else(|error| format!("(no address: {error})"));
        let text = self.text().await.unwrap_or_default();
        let text: String = text.chars().take(400).collect();
        anyhow!("{what}\n  at {url}\n  the page shows: {text:?}")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.closed {
            // The test's runtime may be shutting down, and with it the task
            // fantoccini would close the session from: end it synchronously.
            let _ = delete_session(self.driver_port, &self.session_id);
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `DELETE /session/{id}` over a plain blocking socket; chromedriver answers
/// once Chromium has quit.
fn delete_session(port: u16, session_id: &str) -> std::io::Result<()> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "DELETE /session/{session_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    // Read the whole reply (chromedriver answers once Chromium has quit),
    // but not until the socket closes: chromedriver may keep it open.
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        reply.extend_from_slice(&chunk[..n]);
        if let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if reply.len() >= end + 4 + length {
                return Ok(());
            }
        }
    }
}

/// A chromedriver-specific WebDriver command: run one DevTools protocol
/// command in the session's current tab.
#[derive(Debug)]
struct Cdp {
    cmd: String,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}
