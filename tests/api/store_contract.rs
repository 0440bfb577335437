//! One contract, every backend: each test runs against the in-memory store,
//! a single Redis, a Redis Cluster (3 primaries, 3 replicas), a Sentinel
//! group and a TLS Redis that requires a client certificate (the last three
//! started once per test binary, see tests/support).
use std::sync::Arc;
use std::time::Duration;

use ciba_proxy::clock::{Clock, ManualClock};
use ciba_proxy::domain::AuthReqId;
use ciba_proxy::store::accounts::challenge_digest;
use ciba_proxy::store::{
    Accounts, Binding, Confirmation, Denial, Device, Enrolment, HistoryEntry, MemoryAccounts,
    MemoryStore, Outcome, PollOutcome, PushTarget, QueueStats, QueuedJob, RequestRecord, Status,
    Store, UserLink, WebPushKeys, WebPushSubscription,
};
use ciba_proxy_e2e::app::redis_url;
use ciba_proxy_e2e::redis_deployments::shared_redis_backends;

async fn backends() -> Vec<(&'static str, Arc<dyn Store>, ManualClock)> {
    let memory_clock = ManualClock::default();
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(memory_clock.clone())));
    let mut all = vec![("memory", memory, memory_clock)];
    for (name, backends, _) in shared_redis_backends().await {
        all.push((name, backends.store, ManualClock::default()));
    }
    all
}

fn record(clock: &ManualClock, client: &str) -> RequestRecord {
    RequestRecord {
        id: AuthReqId::generate(),
        client_id: client.into(),
        login_hint: "alice".into(),
        scope: "openid".into(),
        sealed_upstream: "sealed".into(),
        created_at_ms: clock.now_ms(),
        expires_at_ms: clock.now_ms() + 60_000,
        interval_secs: 5,
        sealed_ping_token: None,
        binding_message: Some("W4SCT".into()),
        user_link: UserLink::FromContext,
    }
}

#[tokio::test]
async fn a_request_binds_one_callback_response() {
    for (name, store, clock) in backends().await {
        let r = record(&clock, "c");
        store.create(&r, clock.now_ms()).await.unwrap();
        assert_eq!(
            store.legacy_state_owner("no-such-state").await.unwrap(),
            None,
            "{name}"
        );
        // The first response binds; the same again is a retry; another is refused.
        assert_eq!(
            store.bind_callback(&r.id, "fp-1").await.unwrap(),
            Binding::Bound,
            "{name}"
        );
        assert_eq!(
            store.bind_callback(&r.id, "fp-1").await.unwrap(),
            Binding::Bound,
            "{name}"
        );
        assert_eq!(
            store.bind_callback(&r.id, "fp-2").await.unwrap(),
            Binding::Other,
            "{name}"
        );
        let gone = AuthReqId::generate();
        assert_eq!(
            store.bind_callback(&gone, "fp-1").await.unwrap(),
            Binding::Gone,
            "{name}"
        );
        let (stored, status) = store.get(&r.id).await.unwrap().unwrap();
        assert_eq!((stored, status), (r, Status::Pending), "{name}");
    }
}

#[tokio::test]
async fn poll_walks_pending_slow_down_tokens_redeemed() {
    for (name, store, clock) in backends().await {
        let r = record(&clock, "c");
        store.create(&r, clock.now_ms()).await.unwrap();
        assert_eq!(
            store.poll(&r.id, "c", "a1", clock.now_ms()).await.unwrap(),
            PollOutcome::Pending,
            "{name}"
        );
        assert_eq!(
            store
                .poll(&r.id, "c", "a1", clock.now_ms() + 1000)
                .await
                .unwrap(),
            PollOutcome::SlowDown { interval_secs: 10 },
            "{name}"
        );
        let approved = Outcome::Approved {
            sealed_tokens: "t".into(),
        };
        assert!(
            store
                .finish(&r.id, &approved, clock.now_ms())
                .await
                .unwrap(),
            "{name}"
        );
        // A second outcome cannot overwrite the first.
        let denied = Outcome::Denied {
            reason: "late".into(),
            kind: Denial::Failed,
        };
        assert!(
            !store.finish(&r.id, &denied, clock.now_ms()).await.unwrap(),
            "{name}"
        );
        assert_eq!(
            store.poll(&r.id, "c", "a1", clock.now_ms()).await.unwrap(),
            PollOutcome::Tokens("t".into()),
            "{name}"
        );
        assert_eq!(
            store.confirm_tokens(&r.id, "a1").await.unwrap(),
            Confirmation::Confirmed,
            "{name}"
        );
        assert_eq!(
            store.poll(&r.id, "c", "a2", clock.now_ms()).await.unwrap(),
            PollOutcome::Redeemed,
            "{name}"
        );
    }
}

#[tokio::test]
async fn other_clients_and_unknown_ids_look_alike() {
    for (name, store, clock) in backends().await {
        let r = record(&clock, "c");
        store.create(&r, clock.now_ms()).await.unwrap();
        assert_eq!(
            store
                .poll(&r.id, "intruder", "a1", clock.now_ms())
                .await
                .unwrap(),
            PollOutcome::Unknown,
            "{name}"
        );
        let unknown = AuthReqId::generate();
        assert_eq!(
            store
                .poll(&unknown, "c", "a1", clock.now_ms())
                .await
                .unwrap(),
            PollOutcome::Unknown,
            "{name}"
        );
    }
}

#[tokio::test]
async fn denial_and_expiry_are_reported() {
    for (name, store, clock) in backends().await {
        let denied = record(&clock, "c");
        store.create(&denied, clock.now_ms()).await.unwrap();
        let outcome = Outcome::Denied {
            reason: "the user declined".into(),
            kind: Denial::Declined,
        };
        assert!(store
            .finish(&denied.id, &outcome, clock.now_ms())
            .await
            .unwrap());
        assert_eq!(
            store
                .poll(&denied.id, "c", "a1", clock.now_ms())
                .await
                .unwrap(),
            PollOutcome::Denied("the user declined".into()),
            "{name}"
        );

        let late = record(&clock, "c");
        store.create(&late, clock.now_ms()).await.unwrap();
        let after = late.expires_at_ms;
        let approved = Outcome::Approved {
            sealed_tokens: "t".into(),
        };
        assert!(
            !store.finish(&late.id, &approved, after).await.unwrap(),
            "{name}: finished after expiry"
        );
        assert_eq!(
            store.poll(&late.id, "c", "a1", after).await.unwrap(),
            PollOutcome::Expired,
            "{name}"
        );
    }
}

#[tokio::test]
async fn tokens_seen_expired_are_never_handed_out_to_a_clock_that_lags() {
    for (name, store, clock) in backends().await {
        let r = approved_request(store.as_ref(), &clock).await;
        // One instance sees the request expired; another, whose clock is a
        // second behind, polls next: the tokens are gone, not handed out.
        assert_eq!(
            store.poll(&r.id, "c", "a1", r.expires_at_ms).await.unwrap(),
            PollOutcome::Expired,
            "{name}"
        );
        assert_eq!(
            store
                .poll(&r.id, "c", "a2", r.expires_at_ms - 1000)
                .await
                .unwrap(),
            PollOutcome::Expired,
            "{name}"
        );
    }
}

#[tokio::test]
async fn concurrent_polls_take_the_tokens_once() {
    for (name, store, clock) in backends().await {
        let r = approved_request(store.as_ref(), &clock).await;
        let polls = (0..32).map(|i| {
            let store = store.clone();
            let id = r.id.clone();
            let now = clock.now_ms();
            tokio::spawn(async move {
                let attempt = format!("a{i}");
                match store.poll(&id, "c", &attempt, now).await.unwrap() {
                    PollOutcome::Tokens(_) => {
                        store.confirm_tokens(&id, &attempt).await.unwrap()
                            == Confirmation::Confirmed
                    }
                    _ => false,
                }
            })
        });
        let outcomes = futures::future::join_all(polls).await;
        let handed_out = outcomes.iter().filter(|o| matches!(o, Ok(true))).count();
        assert_eq!(handed_out, 1, "{name}: {outcomes:?}");
    }
}

/// A request of client "c" whose login completed with the tokens "t".
async fn approved_request(store: &dyn Store, clock: &ManualClock) -> RequestRecord {
    let r = record(clock, "c");
    store.create(&r, clock.now_ms()).await.unwrap();
    let approved = Outcome::Approved {
        sealed_tokens: "t".into(),
    };
    assert!(store
        .finish(&r.id, &approved, clock.now_ms())
        .await
        .unwrap());
    r
}

#[tokio::test]
async fn tokens_whose_answer_was_never_confirmed_go_to_the_retry() {
    for (name, store, clock) in backends().await {
        let r = approved_request(store.as_ref(), &clock).await;
        // The first attempt's handler gave up (503) and never confirmed.
        assert_eq!(
            store
                .poll(&r.id, "c", "lost", clock.now_ms())
                .await
                .unwrap(),
            PollOutcome::Tokens("t".into()),
            "{name}"
        );
        // The retry takes them over; the lost attempt can no longer confirm.
        assert_eq!(
            store
                .poll(&r.id, "c", "retry", clock.now_ms())
                .await
                .unwrap(),
            PollOutcome::Tokens("t".into()),
            "{name}"
        );
        let confirm = |attempt: &'static str| store.confirm_tokens(&r.id, attempt);
        assert_eq!(
            confirm("lost").await.unwrap(),
            Confirmation::Unconfirmed,
            "{name}"
        );
        assert_eq!(
            confirm("retry").await.unwrap(),
            Confirmation::Confirmed,
            "{name}"
        );
        assert_eq!(
            confirm("lost").await.unwrap(),
            Confirmation::IssuedElsewhere,
            "{name}"
        );
        assert_eq!(
            store
                .poll(&r.id, "c", "third", clock.now_ms())
                .await
                .unwrap(),
            PollOutcome::Redeemed,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_confirmation_that_comes_too_late_leaves_the_tokens() {
    for (name, store, clock) in backends().await {
        let r = approved_request(store.as_ref(), &clock).await;
        store
            .poll(&r.id, "c", "slow", clock.now_ms())
            .await
            .unwrap();
        // The store stalled between the poll and its confirmation.
        if name == "memory" {
            clock.advance_secs(3);
        } else {
            tokio::time::sleep(Duration::from_millis(2100)).await;
        }
        assert_eq!(
            store.confirm_tokens(&r.id, "slow").await.unwrap(),
            Confirmation::Unconfirmed,
            "{name}"
        );
        assert_eq!(
            store
                .poll(&r.id, "c", "retry", clock.now_ms())
                .await
                .unwrap(),
            PollOutcome::Tokens("t".into()),
            "{name}"
        );
    }
}

#[tokio::test]
async fn one_time_values_are_accepted_once() {
    for (name, store, _) in backends().await {
        let key = format!("jti:c:{}", rand::random::<u64>());
        assert!(store.use_once(&key, 60).await.unwrap(), "{name}");
        assert!(!store.use_once(&key, 60).await.unwrap(), "{name}");
        store.ping().await.unwrap();
    }
}

fn job(payload: &str) -> QueuedJob {
    QueuedJob {
        id: format!("job-{}", rand::random::<u64>()),
        payload: payload.into(),
    }
}

#[tokio::test]
async fn a_leased_job_is_hidden_until_its_lease_ends() {
    for (name, store, clock) in backends().await {
        let now = clock.now_ms();
        let j = job("p");
        store.enqueue(&j, now, 60_000).await.unwrap();
        let leased = store.lease(now, 5_000, 10).await.unwrap();
        assert!(leased.contains(&j), "{name}: {leased:?}");
        // Another worker sees nothing while the lease holds...
        assert!(
            !store
                .lease(now + 4_999, 5_000, 10)
                .await
                .unwrap()
                .contains(&j),
            "{name}"
        );
        // ...and gets the job once the first worker's lease ran out (it died).
        assert!(
            store
                .lease(now + 5_000, 5_000, 10)
                .await
                .unwrap()
                .contains(&j),
            "{name}"
        );
    }
}

#[tokio::test]
async fn jobs_are_not_due_before_their_time_and_gone_once_complete() {
    for (name, store, clock) in backends().await {
        let now = clock.now_ms();
        let later = job("later");
        store.enqueue(&later, now + 10_000, 60_000).await.unwrap();
        assert!(
            !store.lease(now, 1_000, 10).await.unwrap().contains(&later),
            "{name}"
        );
        assert!(
            store
                .lease(now + 10_000, 1_000, 10)
                .await
                .unwrap()
                .contains(&later),
            "{name}"
        );
        store.complete(&later.id).await.unwrap();
        assert!(
            !store
                .lease(now + 20_000, 1_000, 10)
                .await
                .unwrap()
                .contains(&later),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_rescheduled_job_carries_its_new_payload() {
    for (name, store, clock) in backends().await {
        let now = clock.now_ms();
        let j = job("attempt-0");
        store.enqueue(&j, now, 60_000).await.unwrap();
        store.lease(now, 30_000, 10).await.unwrap();
        let retried = QueuedJob {
            id: j.id.clone(),
            payload: "attempt-1".into(),
        };
        store.reschedule(&retried, now + 500).await.unwrap();
        let leased = store.lease(now + 500, 30_000, 10).await.unwrap();
        assert!(leased.contains(&retried), "{name}: {leased:?}");
    }
}

#[tokio::test]
async fn lease_takes_at_most_the_requested_number() {
    for (name, store, clock) in backends().await {
        let now = clock.now_ms();
        let jobs: Vec<_> = (0..5).map(|i| job(&format!("p{i}"))).collect();
        for j in &jobs {
            store.enqueue(j, now, 60_000).await.unwrap();
        }
        let first = store.lease(now, 30_000, 3).await.unwrap();
        let mine: Vec<_> = first.iter().filter(|j| jobs.contains(j)).collect();
        assert!(mine.len() <= 3, "{name}");
        let rest = store.lease(now, 30_000, 100).await.unwrap();
        let total = first
            .iter()
            .chain(rest.iter())
            .filter(|j| jobs.contains(j))
            .count();
        assert_eq!(total, 5, "{name}: every job leased exactly once");
    }
}

#[tokio::test]
async fn counters_count_within_their_window() {
    for (name, store, _) in backends().await {
        let key = format!("rate:c:{}", rand::random::<u64>());
        assert_eq!(store.count(&key, 60).await.unwrap(), 1, "{name}");
        assert_eq!(store.count(&key, 60).await.unwrap(), 2, "{name}");
        assert_eq!(
            store.count(&format!("{key}-next"), 60).await.unwrap(),
            1,
            "{name}"
        );
    }
}

#[tokio::test]
async fn slots_are_limited_freed_and_expire() {
    for (name, store, clock) in backends().await {
        let key = format!("pending:{}", rand::random::<u64>());
        let now = clock.now_ms();
        assert!(
            store
                .take_slot(&key, "a", now + 1_000, now, 2)
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            store
                .take_slot(&key, "b", now + 60_000, now, 2)
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !store
                .take_slot(&key, "c", now + 60_000, now, 2)
                .await
                .unwrap(),
            "{name}: full"
        );
        store.free_slot(&key, "b").await.unwrap();
        assert!(
            store
                .take_slot(&key, "c", now + 60_000, now, 2)
                .await
                .unwrap(),
            "{name}: freed"
        );
        // "a" held its slot until now + 1 s.
        assert!(
            store
                .take_slot(&key, "d", now + 60_000, now + 1_000, 2)
                .await
                .unwrap(),
            "{name}: expired"
        );
    }
}

#[tokio::test]
async fn stats_count_the_queue_and_the_pending_requests() {
    for (name, store, clock) in backends().await {
        let now = clock.now_ms();
        let before = store.queue_stats(now).await.unwrap();
        assert_eq!(before, QueueStats::default(), "{name}: a fresh store");
        assert_eq!(
            store.pending(now).await.unwrap(),
            0,
            "{name}: a fresh store"
        );
        let (early, late) = (job("early"), job("late"));
        store.enqueue(&late, now + 5_000, 600_000).await.unwrap();
        store.enqueue(&early, now - 2_000, 600_000).await.unwrap();
        let (open, decided) = (record(&clock, "shop"), record(&clock, "shop"));
        store.create(&open, now).await.unwrap();
        store.create(&decided, now).await.unwrap();
        let denied = Outcome::Denied {
            reason: "no".into(),
            kind: Denial::Declined,
        };
        assert!(store.finish(&decided.id, &denied, now).await.unwrap());

        let stats = store.queue_stats(now).await.unwrap();
        assert_eq!(stats.queued_jobs, 2, "{name}");
        assert_eq!(stats.oldest_due_ms, Some(now - 2_000), "{name}");
        assert_eq!(
            store.pending(now).await.unwrap(),
            1,
            "{name}: the decided one is not pending"
        );

        // Past its expiry a request no longer counts as pending.
        let later = open.expires_at_ms + 1;
        store.complete(&early.id).await.unwrap();
        let stats = store.queue_stats(later).await.unwrap();
        assert_eq!(store.pending(later).await.unwrap(), 0, "{name}: expired");
        assert_eq!(stats.oldest_due_ms, Some(now + 5_000), "{name}");
    }
}

#[tokio::test]
async fn an_expired_pending_request_is_taken_once_and_only_after_its_expiry() {
    for (name, store, clock) in backends().await {
        let now = clock.now_ms();
        let (open, decided) = (record(&clock, "shop"), record(&clock, "shop"));
        store.create(&open, now).await.unwrap();
        store.create(&decided, now).await.unwrap();
        let denied = Outcome::Denied {
            reason: "no".into(),
            kind: Denial::Declined,
        };
        assert!(store.finish(&decided.id, &denied, now).await.unwrap());
        assert!(
            store.take_expired(now, 10).await.unwrap().is_empty(),
            "{name}: nothing has expired yet"
        );

        let later = open.expires_at_ms + 1;
        // Several instances sweep at once: one of them gets it.
        let (a, b) = tokio::join!(store.take_expired(later, 10), store.take_expired(later, 10));
        let taken: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
        assert_eq!(
            taken,
            vec![open.id.clone()],
            "{name}: the undecided one, once"
        );
        assert!(
            store.take_expired(later, 10).await.unwrap().is_empty(),
            "{name}: never again"
        );
        // Taken is not forgotten: the record is still there to be observed.
        assert!(store.get(&open.id).await.unwrap().is_some(), "{name}");
    }
}

#[tokio::test]
async fn recent_lists_kept_requests_newest_first() {
    for (name, store, clock) in backends().await {
        let first = record(&clock, "shop");
        store.create(&first, clock.now_ms()).await.unwrap();
        clock.advance_secs(1);
        let second = record(&clock, "shop");
        store.create(&second, clock.now_ms()).await.unwrap();
        let now = clock.now_ms();
        assert_eq!(
            store.recent(now, 10).await.unwrap(),
            vec![second.id.clone(), first.id.clone()],
            "{name}"
        );
        assert_eq!(
            store.recent(now, 1).await.unwrap(),
            vec![second.id],
            "{name}"
        );
    }
}

// ---- Accounts: devices, enrolments, e-mail, noted requests, history ----

async fn account_backends() -> Vec<(&'static str, Arc<dyn Accounts>, ManualClock, String)> {
    let memory_clock = ManualClock::default();
    let memory: Arc<dyn Accounts> = Arc::new(MemoryAccounts::new(Arc::new(memory_clock.clone())));
    let mut all = vec![("memory", memory, memory_clock, String::new())];
    // The single Redis last: redis_account_keys_that_can_end_expire takes it.
    for (name, backends, prefix) in shared_redis_backends().await.into_iter().rev() {
        all.push((name, backends.accounts, ManualClock::default(), prefix));
    }
    all
}

fn device(did: &str, user: &str, now_ms: u64) -> Device {
    Device {
        did: did.into(),
        user: user.into(),
        name: "Alice's phone".into(),
        model: "Pixel 8".into(),
        jwk: r#"{"kty":"EC","crv":"P-256","x":"x","y":"y"}"#.into(),
        push: Some(PushTarget::Fcm {
            token: "fcm-token".into(),
        }),
        registered_at_ms: now_ms,
        last_used_at_ms: now_ms,
    }
}

fn enrolment(did: &str, user: &str, challenge: &str, expires_at_ms: u64) -> Enrolment {
    Enrolment {
        did: did.into(),
        user: user.into(),
        challenge_digest: challenge_digest(challenge),
        expires_at_ms,
    }
}

fn fresh(what: &str) -> String {
    format!("{what}-{}", rand::random::<u64>())
}

#[tokio::test]
async fn an_enrolment_registers_one_device_once() {
    for (name, accounts, clock, _) in account_backends().await {
        let now = clock.now_ms();
        let (did, user) = (fresh("did"), fresh("alice"));
        let offer = enrolment(&did, &user, "chg", now + 300_000);
        accounts.offer_enrolment(&offer).await.unwrap();
        assert_eq!(
            accounts.enrolment(&did).await.unwrap(),
            Some(offer),
            "{name}"
        );
        let phone = device(&did, &user, now);
        // A wrong challenge, or the did for another user, changes nothing...
        assert!(
            !accounts
                .enrol(&phone, &challenge_digest("other"), now)
                .await
                .unwrap(),
            "{name}"
        );
        let stranger = device(&did, "mallory", now);
        assert!(
            !accounts
                .enrol(&stranger, &challenge_digest("chg"), now)
                .await
                .unwrap(),
            "{name}"
        );
        assert_eq!(accounts.device(&did).await.unwrap(), None, "{name}");
        // ...so the right one still registers, once.
        assert!(
            accounts
                .enrol(&phone, &challenge_digest("chg"), now)
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !accounts
                .enrol(&phone, &challenge_digest("chg"), now)
                .await
                .unwrap(),
            "{name}: the challenge is used up"
        );
        assert_eq!(accounts.enrolment(&did).await.unwrap(), None, "{name}");
        assert_eq!(
            accounts.device(&did).await.unwrap(),
            Some(phone.clone()),
            "{name}"
        );
        // The user is the normalised hint: another spelling finds the device.
        let listed = accounts.devices(&format!(" {}", user.to_uppercase())).await;
        assert_eq!(listed.unwrap(), vec![phone], "{name}");
        assert!(
            accounts.devices("mallory").await.unwrap().is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_expired_enrolment_registers_nothing() {
    for (name, accounts, clock, _) in account_backends().await {
        let now = clock.now_ms();
        let (did, user) = (fresh("did"), fresh("alice"));
        accounts
            .offer_enrolment(&enrolment(&did, &user, "chg", now + 300_000))
            .await
            .unwrap();
        assert!(
            !accounts
                .enrol(
                    &device(&did, &user, now),
                    &challenge_digest("chg"),
                    now + 300_000
                )
                .await
                .unwrap(),
            "{name}"
        );
        assert_eq!(accounts.device(&did).await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn devices_are_touched_lose_their_push_target_and_are_removed() {
    for (name, accounts, clock, _) in account_backends().await {
        let now = clock.now_ms();
        let user = fresh("alice");
        let (first, second) = (fresh("did"), fresh("did"));
        for (i, did) in [&first, &second].into_iter().enumerate() {
            accounts
                .offer_enrolment(&enrolment(did, &user, did, now + 300_000))
                .await
                .unwrap();
            let registered = device(did, &user, now + i as u64);
            assert!(
                accounts
                    .enrol(&registered, &challenge_digest(did), now)
                    .await
                    .unwrap(),
                "{name}"
            );
        }
        accounts.touch_device(&first, now + 5_000).await.unwrap();
        accounts.drop_push(&first).await.unwrap();
        let touched = accounts.device(&first).await.unwrap().unwrap();
        assert_eq!(touched.last_used_at_ms, now + 5_000, "{name}");
        assert_eq!(touched.push, None, "{name}");
        assert_eq!(touched.registered_at_ms, now, "{name}");
        // Oldest registration first.
        let dids: Vec<String> = accounts
            .devices(&user)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.did)
            .collect();
        assert_eq!(dids, vec![first.clone(), second.clone()], "{name}");

        assert!(accounts.remove_device(&first).await.unwrap(), "{name}");
        assert!(!accounts.remove_device(&first).await.unwrap(), "{name}");
        assert_eq!(accounts.device(&first).await.unwrap(), None, "{name}");
        // A removed device stays removed, whatever comes late.
        accounts.touch_device(&first, now + 6_000).await.unwrap();
        accounts.drop_push(&first).await.unwrap();
        assert_eq!(accounts.device(&first).await.unwrap(), None, "{name}");
        let left: Vec<String> = accounts
            .devices(&user)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.did)
            .collect();
        assert_eq!(left, vec![second], "{name}");
    }
}

#[tokio::test]
async fn web_push_targets_are_kept_as_given() {
    for (name, accounts, clock, _) in account_backends().await {
        let now = clock.now_ms();
        let (did, user) = (fresh("did"), fresh("alice"));
        accounts
            .offer_enrolment(&enrolment(&did, &user, "chg", now + 1_000))
            .await
            .unwrap();
        let mut browser = device(&did, &user, now);
        browser.push = Some(PushTarget::Webpush {
            subscription: WebPushSubscription {
                endpoint: "https://push.example/sub/1".into(),
                keys: WebPushKeys {
                    p256dh: "BPk".into(),
                    auth: "au".into(),
                },
            },
        });
        assert!(accounts
            .enrol(&browser, &challenge_digest("chg"), now)
            .await
            .unwrap());
        assert_eq!(
            accounts.device(&did).await.unwrap(),
            Some(browser),
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_email_address_is_kept_per_user() {
    for (name, accounts, _, _) in account_backends().await {
        let user = fresh("alice");
        assert_eq!(accounts.email(&user).await.unwrap(), None, "{name}");
        accounts.set_email(&user, "a@bank.example").await.unwrap();
        accounts
            .set_email(&user, "alice@bank.example")
            .await
            .unwrap();
        assert_eq!(
            accounts
                .email(&user.to_uppercase())
                .await
                .unwrap()
                .as_deref(),
            Some("alice@bank.example"),
            "{name}"
        );
        assert_eq!(accounts.email("bob").await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn noted_requests_are_listed_until_they_expire() {
    for (name, accounts, clock, _) in account_backends().await {
        let now = clock.now_ms();
        let user = fresh("alice");
        let (early, late) = (AuthReqId::generate(), AuthReqId::generate());
        accounts
            .note_request(&user, &early, now + 60_000)
            .await
            .unwrap();
        accounts
            .note_request(&user, &late, now + 120_000)
            .await
            .unwrap();
        assert_eq!(
            accounts.requests(&user, now).await.unwrap(),
            vec![late.clone(), early],
            "{name}"
        );
        assert_eq!(
            accounts.requests(&user, now + 60_000).await.unwrap(),
            vec![late],
            "{name}"
        );
        assert!(
            accounts.requests("bob", now).await.unwrap().is_empty(),
            "{name}"
        );
    }
}

fn history_entry(at_ms: u64, outcome: &str) -> HistoryEntry {
    HistoryEntry {
        at_ms,
        client_id: "shop".into(),
        client_name: "The Shop".into(),
        binding_message: Some("W4SCT".into()),
        scope: "openid".into(),
        outcome: outcome.into(),
    }
}

#[tokio::test]
async fn history_is_newest_first_and_trimmed_when_written() {
    for (name, accounts, clock, _) in account_backends().await {
        let now = clock.now_ms();
        let user = fresh("alice");
        let day = 86_400_000;
        let old = history_entry(now - 3 * day, "approved");
        let recent = history_entry(now - day, "denied");
        let twin = history_entry(now - day, "denied");
        accounts
            .record_history(&user, &old, 90 * day, now)
            .await
            .unwrap();
        accounts
            .record_history(&user, &recent, 90 * day, now)
            .await
            .unwrap();
        accounts
            .record_history(&user, &twin, 90 * day, now)
            .await
            .unwrap();
        assert_eq!(
            accounts.history(&user, 0).await.unwrap(),
            vec![recent.clone(), twin, old],
            "{name}: two equal entries are two entries"
        );
        assert_eq!(
            accounts.history(&user, now - 2 * day).await.unwrap().len(),
            2,
            "{name}"
        );
        // Writing with a two-day window forgets the three-day-old entry.
        let latest = history_entry(now, "expired");
        accounts
            .record_history(&user, &latest, 2 * day, now)
            .await
            .unwrap();
        let outcomes: Vec<String> = accounts
            .history(&user, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.outcome)
            .collect();
        assert_eq!(outcomes, vec!["expired", "denied", "denied"], "{name}");
    }
}

#[tokio::test]
async fn redis_account_keys_that_can_end_expire() {
    let (_, accounts, clock, prefix) = account_backends().await.pop().unwrap();
    let now = clock.now_ms();
    let user = fresh("alice");
    accounts
        .offer_enrolment(&enrolment(&fresh("did"), &user, "chg", now + 300_000))
        .await
        .unwrap();
    accounts
        .note_request(&user, &AuthReqId::generate(), now + 60_000)
        .await
        .unwrap();
    accounts
        .record_history(&user, &history_entry(now, "approved"), 86_400_000, now)
        .await
        .unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no expiry");
    }
}
