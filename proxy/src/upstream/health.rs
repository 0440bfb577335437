//! Whether the IdP answers, judged from the calls the proxy makes anyway
//! (discovery, keys, backchannel and token calls, revocation), not from a
//! probe per request. `/readyz` reports it and `/bc-authorize` refuses new
//! requests with 503 while the IdP is unreachable, so no user is pushed a
//! sign-in that cannot complete.
//!
//! The rule, in [`Tracker`]:
//! - A call that gets any HTTP answer below 500 is a success: the IdP is
//!   reachable again at once. A call that gets no answer (connection
//!   refused or dropped, timeout) or a 5xx is a failure.
//! - The IdP is unreachable after [`FAILURES_TO_UNREACHABLE`] failures in a
//!   row, or after [`FAILURES_AFTER_QUIET`] when nothing succeeded in the
//!   [`QUIET_BEFORE_FAILURE`] before the last (a quiet instance has little
//!   traffic to count failures from). One failure alone never is: a single
//!   lost connection must not take an instance out of service.
//! - While calls are failing, a background probe (a GET of the discovery
//!   document, at most [`PROBE_TIMEOUT`] long) runs every [`PROBE_EVERY`]
//!   until one succeeds, so the IdP is seen to be back without traffic.
//! - When nothing reached the IdP for [`IDLE_PROBE_AFTER`] and someone asks
//!   (`/readyz`, a new request), one probe is started in the background; the
//!   asker gets the current verdict without waiting for it.
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use url::Url;

/// Failures in a row that make the IdP unreachable.
pub const FAILURES_TO_UNREACHABLE: u32 = 3;
/// Failures in a row that are enough when no call succeeded for
/// [`QUIET_BEFORE_FAILURE`] before the last of them.
pub const FAILURES_AFTER_QUIET: u32 = 2;
/// See [`FAILURES_AFTER_QUIET`].
pub const QUIET_BEFORE_FAILURE: Duration = Duration::from_secs(5);
/// How often the background probe runs while calls are failing.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long without any call to the IdP before an asker starts a probe.
pub const IDLE_PROBE_AFTER: Duration = Duration::from_secs(5);
/// The longest a probe waits for the IdP (capped by `upstream.timeout_ms`).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one call to the IdP showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The IdP answered (any status below 500).
    Answered,
    /// No answer, or a 5xx; why, for the log and `/readyz`.
    Failed(String),
}

impl Outcome {
    /// The outcome of a sent request; `None` when the request never left
    /// (it could not be built), which says nothing about the IdP.
    pub fn of(result: &reqwest::Result<reqwest::Response>) -> Option<Self> {
        match result {
            Ok(response) => Some(Self::of_status(response.status())),
            Err(e) if e.is_builder() => None,
            Err(e) => Some(Self::Failed(describe(e))),
        }
    }

    /// An answer with this status: a 5xx is a failure (the IdP or the
    /// gateway in front of it is in trouble); anything else is an answer.
    pub fn of_status(status: reqwest::StatusCode) -> Self {
        if status.is_server_error() {
            Self::Failed(format!("status {status}"))
        } else {
            Self::Answered
        }
    }
}

/// A reqwest error with its causes ("error sending request: client error
/// (Connect): tcp connect error: Connection refused"), without the URL.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Why the IdP is considered unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// Failed calls in a row.
    pub failures: u32,
    /// How long calls have been failing.
    pub for_secs: u64,
    /// What the last one ran into.
    pub last_error: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.failures {
            1 => write!(f, "the last call failed: {}", self.last_error),
            n => write!(
                f,
                "the last {n} calls failed (over {} s), the last with: {}",
                self.for_secs, self.last_error
            ),
        }
    }
}

/// The verdict from recent calls; every method takes the time, so tests
/// drive it without sleeping.
#[derive(Debug)]
pub struct Tracker {
    /// When tracking began: counts as the last success until there is one.
    started: Instant,
    last_success: Option<Instant>,
    /// The first failure since the last success.
    failing_since: Option<Instant>,
    failures: u32,
    last_error: String,
    unreachable: bool,
    /// When the last call of any kind (or probe) was seen.
    last_seen: Instant,
    last_probe: Option<Instant>,
    probing: bool,
    /// Whether the recovery loop is running.
    recovering: bool,
}

impl Tracker {
    pub fn new(now: Instant) -> Self {
        Self {
            started: now,
            last_success: None,
            failing_since: None,
            failures: 0,
            last_error: String::new(),
            unreachable: false,
            last_seen: now,
            last_probe: None,
            probing: false,
            recovering: false,
        }
    }

    /// Takes one call's outcome into account. Returns whether the caller
    /// should start the recovery loop (calls are failing and none runs).
    pub fn record(&mut self, outcome: Outcome, now: Instant) -> bool {
        self.last_seen = self.last_seen.max(now);
        match outcome {
            Outcome::Answered => {
                if self.unreachable {
                    tracing::info!("the identity provider answers again");
                }
                self.last_success = Some(now);
                self.failing_since = None;
                self.failures = 0;
                self.unreachable = false;
                false
            }
            Outcome::Failed(error) => {
                let quiet =
                    now.saturating_duration_since(self.last_success.unwrap_or(self.started));
                self.failing_since.get_or_insert(now);
                self.failures = self.failures.saturating_add(1);
                self.last_error = error;
                if !self.unreachable
                    && (self.failures >= FAILURES_TO_UNREACHABLE
                        || (self.failures >= FAILURES_AFTER_QUIET && quiet >= QUIET_BEFORE_FAILURE))
                {
                    self.unreachable = true;
                    tracing::warn!(
                        failures = self.failures,
                        error = %self.last_error,
                        "the identity provider is unreachable; new backchannel requests get 503 until it answers"
                    );
                }
                !std::mem::replace(&mut self.recovering, true)
            }
        }
    }

    /// `Err` while the IdP is considered unreachable.
    pub fn verdict(&self, now: Instant) -> Result<(), Unreachable> {
        if !self.unreachable {
            return Ok(());
        }
        Err(Unreachable {
            failures: self.failures,
            for_secs: self
                .failing_since
                .map_or(0, |since| now.saturating_duration_since(since).as_secs()),
            last_error: self.last_error.clone(),
        })
    }

    /// Whether calls are failing (since the last success).
    pub fn failing(&self) -> bool {
        self.failures > 0
    }

    /// Whether an asker should start a probe now: nothing was seen for
    /// [`IDLE_PROBE_AFTER`] (or calls are failing and the last probe is
    /// [`PROBE_EVERY`] old), and no probe is running. Marks one as started.
    pub fn start_probe(&mut self, now: Instant) -> bool {
        let since_probe = self
            .last_probe
            .map_or(Duration::MAX, |at| now.saturating_duration_since(at));
        let due = if self.failing() {
            since_probe >= PROBE_EVERY
        } else {
            now.saturating_duration_since(self.last_seen) >= IDLE_PROBE_AFTER
                && since_probe >= IDLE_PROBE_AFTER
        };
        if due && !self.probing {
            self.probing = true;
            self.last_probe = Some(now);
            return true;
        }
        false
    }

    /// A probe started by [`Self::start_probe`] ended.
    pub fn probe_done(&mut self) {
        self.probing = false;
    }

    /// The recovery loop's next step: `None` once calls succeed again (the
    /// loop ends), else whether to probe now.
    pub fn recovery_step(&mut self, now: Instant) -> Option<bool> {
        if !self.failing() {
            self.recovering = false;
            return None;
        }
        Some(self.start_probe(now))
    }
}

/// The IdP's reachability: the [`Tracker`] and the probe that keeps it
/// current. One per [`super::Provider`].
#[derive(Debug)]
pub struct IdpHealth {
    tracker: Mutex<Tracker>,
    http: reqwest::Client,
    probe_url: Url,
    probe_timeout: Duration,
}

impl IdpHealth {
    /// `probe_url` is the discovery document; `timeout` the client's.
    pub fn new(http: reqwest::Client, probe_url: Url, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            tracker: Mutex::new(Tracker::new(Instant::now())),
            http,
            probe_url,
            probe_timeout: timeout.min(PROBE_TIMEOUT),
        })
    }

    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a sent request's outcome; a failure starts the recovery
    /// probe (when there is a runtime to run it on).
    pub fn observe(self: &Arc<Self>, result: &reqwest::Result<reqwest::Response>) {
        if let Some(outcome) = Outcome::of(result) {
            self.record(outcome);
        }
    }

    fn record(self: &Arc<Self>, outcome: Outcome) {
        let start_recovery = self.tracker().record(outcome, Instant::now());
        if start_recovery {
            self.start_recovery();
        }
    }

    /// `Err` while the IdP is considered unreachable. Never waits: when
    /// nothing reached the IdP lately, a probe starts in the background.
    pub fn check(self: &Arc<Self>) -> Result<(), Unreachable> {
        let now = Instant::now();
        let (verdict, probe) = {
            let mut tracker = self.tracker();
            let probe = tracker.start_probe(now);
            (tracker.verdict(now), probe)
        };
        if probe {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let health = self.clone();
                    runtime.spawn(async move { health.probe().await });
                }
                Err(_) => self.tracker().probe_done(),
            }
        }
        verdict
    }

    /// One GET of the discovery document; its outcome is recorded like any
    /// other call's.
    async fn probe(self: &Arc<Self>) {
        let result = self
            .http
            .get(self.probe_url.clone())
            .timeout(self.probe_timeout)
            .send()
            .await;
        let outcome = Outcome::of(&result);
        tracing::debug!(?outcome, "identity provider probed");
        let mut tracker = self.tracker();
        tracker.probe_done();
        if let Some(outcome) = outcome {
            // A failure here is already inside the recovery loop, or it
            // started it.
            if tracker.record(outcome, Instant::now()) {
                drop(tracker);
                self.start_recovery();
            }
        }
    }

    /// While calls fail, probes every [`PROBE_EVERY`] until one succeeds.
    /// The tracker lets one loop run at a time; the loop holds only a weak
    /// reference, so it ends with the proxy.
    fn start_recovery(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to probe from: let the next failure try again.
            self.tracker().recovering = false;
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let Some(health) = weak.upgrade() else { return };
                let step = health.tracker().recovery_step(Instant::now());
                match step {
                    None => return,
                    Some(true) => health.probe().await,
                    Some(false) => {}
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Outcome {
        Outcome::Failed("connection refused".into())
    }

    #[test]
    fn a_busy_idp_is_unreachable_after_three_failures_in_a_row() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0);
        tracker.record(Outcome::Answered, t0 + Duration::from_secs(10));
        let at = |ms| t0 + Duration::from_secs(10) + Duration::from_millis(ms);
        tracker.record(failed(), at(100));
        tracker.record(failed(), at(200));
        assert!(tracker.verdict(at(200)).is_ok());
        tracker.record(failed(), at(300));
        let e = tracker.verdict(at(1300)).unwrap_err();
        assert_eq!(e.failures, 3);
        assert_eq!(e.for_secs, 1);
        assert!(e.to_string().contains("connection refused"), "{e}");
    }

    #[test]
    fn a_success_between_failures_keeps_it_reachable() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0);
        for i in 0..10 {
            let at = t0 + Duration::from_millis(100 * i);
            let outcome = if i % 3 == 2 {
                Outcome::Answered
            } else {
                failed()
            };
            tracker.record(outcome, at);
            assert!(tracker.verdict(at).is_ok(), "after call {i}");
        }
    }

    #[test]
    fn after_a_quiet_spell_two_failures_are_enough_and_one_is_not() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0);
        tracker.record(Outcome::Answered, t0);
        let later = t0 + QUIET_BEFORE_FAILURE;
        tracker.record(failed(), later);
        assert!(tracker.verdict(later).is_ok(), "one lost connection");
        let probe = later + PROBE_EVERY;
        tracker.record(failed(), probe);
        assert!(tracker.verdict(probe).is_err());
    }

    #[test]
    fn one_failure_right_after_startup_is_not_enough() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0);
        tracker.record(failed(), t0 + Duration::from_millis(100));
        assert!(tracker.verdict(t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn the_next_success_makes_it_reachable_again() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0);
        let later = t0 + Duration::from_secs(60);
        tracker.record(failed(), later);
        tracker.record(failed(), later);
        assert!(tracker.verdict(later).is_err());
        assert!(!tracker.record(Outcome::Answered, later + Duration::from_secs(1)));
        assert!(tracker.verdict(later + Duration::from_secs(1)).is_ok());
        assert!(!tracker.failing());
    }

    #[test]
    fn an_idle_tracker_asks_for_one_probe_per_idle_period() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0);
        assert!(!tracker.start_probe(t0 + Duration::from_secs(1)));
        let idle = t0 + IDLE_PROBE_AFTER;
        assert!(tracker.start_probe(idle));
        // Running: no second one.
        assert!(!tracker.start_probe(idle + Duration::from_millis(10)));
        tracker.probe_done();
        tracker.record(Outcome::Answered, idle + Duration::from_millis(20));
        assert!(!tracker.start_probe(idle + Duration::from_secs(1)));
        assert!(tracker.start_probe(idle + IDLE_PROBE_AFTER + Duration::from_millis(20)));
    }

    #[test]
    fn recent_calls_make_probes_unnecessary() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0);
        for s in 1..20 {
            tracker.record(Outcome::Answered, t0 + Duration::from_secs(s));
            assert!(!tracker.start_probe(t0 + Duration::from_secs(s)));
        }
    }

    #[test]
    fn failing_calls_are_probed_every_probe_period() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0);
        let at = t0 + Duration::from_millis(100);
        assert!(tracker.record(failed(), at));
        assert!(tracker.start_probe(at));
        tracker.probe_done();
        assert!(!tracker.start_probe(at + PROBE_EVERY / 2));
        assert!(tracker.start_probe(at + PROBE_EVERY));
    }

    #[test]
    fn server_errors_are_failures_and_other_answers_are_not() {
        let status = |code| Outcome::of_status(reqwest::StatusCode::from_u16(code).unwrap());
        assert_eq!(status(200), Outcome::Answered);
        assert_eq!(status(400), Outcome::Answered);
        assert_eq!(status(429), Outcome::Answered);
        assert!(matches!(status(503), Outcome::Failed(e) if e.contains("503")));
    }

    #[test]
    fn one_recovery_loop_runs_while_calls_fail() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0);
        assert!(tracker.record(failed(), t0));
        assert!(!tracker.record(failed(), t0), "a second loop");
        assert_eq!(tracker.recovery_step(t0), Some(true));
        tracker.probe_done();
        tracker.record(Outcome::Answered, t0 + PROBE_EVERY);
        assert_eq!(tracker.recovery_step(t0 + PROBE_EVERY), None);
        assert!(
            tracker.record(failed(), t0 + PROBE_EVERY * 2),
            "the loop ended"
        );
    }
}
