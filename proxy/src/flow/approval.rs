//! The approval page's side of a request's life: the link the user's
//! device gets, what the page shows, and the user's answer. Approve leads
//! to the IdP's sign-in (the flow then goes on as before); deny decides the
//! request at once.
//!
//! The link's handle is the auth_req_id and 128 random bits, sealed with the
//! token key: unguessable, unrelated to anything the client or the IdP
//! sees, and resolved with one store read on any instance. It works while
//! the request is pending (so after Approve, until the sign-in reaches
//! `/callback`, the user can start it again); the forms carry a token bound
//! to the handle.
//!
//! Number matching (`binding_message_check = "match"`): the user proves they
//! see the binding message on the consumption device by picking it among
//! decoys. So nothing sent to their device carries it, and the decoys depend
//! only on the request, so no two pages can be compared to find it.
//!
//! A signed-in user may also answer for themselves, without the page's
//! form: from a registered device (`devices/`) or the account page. The
//! same rules apply, and the request must be that user's.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use url::Url;

use super::Flow;
use crate::audit;
use crate::clients::Client;
use crate::configuration::BindingMessageCheck;
use crate::domain::AuthReqId;
use crate::limits::user_hash;
use crate::store::{Denial, Outcome, RequestRecord, Status, StoreError, UserLink};
use crate::telemetry::{record_auth_req, record_client};
use crate::upstream::{LinkFor, UpstreamError};

/// Associated data of approval handles and of the pages' form tokens.
const HANDLE_AAD: &str = "approval-link";
const FORM_TOKEN_AAD: &str = "approval-form";
/// The audit trail's `via` for answers on the approval page.
const PAGE: &str = "page";
/// Number matching: the real code and this many decoys.
const DECOYS: usize = 2;
/// The keyed digest that seeds a request's decoys.
const DECOYS_LABEL: &str = "number-matching-decoys";

/// What the approval page shows.
#[derive(Debug)]
pub struct Approval {
    pub client_name: String,
    pub binding_message: Option<String>,
    pub scope: String,
    pub expires_in_secs: u64,
    /// Number matching: the codes to pick from, the real one among them.
    pub choices: Option<Vec<String>>,
    /// Bound to this page; each form carries it back.
    pub form_token: String,
    /// The origin "Approve" leads to (for the page's CSP `form-action`).
    pub link_origin: String,
}

/// The user's approval.
#[derive(Debug)]
pub enum Approved {
    /// On to the IdP's sign-in.
    SignIn(Url),
    /// The code picked was not the one on the consumption device: denied.
    CodeMismatch,
}

/// Why the page or its answer is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ApprovalRefused {
    /// Not a handle this proxy made (404).
    Unknown,
    /// The request expired or was answered (410).
    Ended,
    /// The form's token is missing or not this page's (403).
    Forged,
    /// The store is unavailable (503).
    Unavailable,
    /// A signed-in user answering another user's request (403).
    OtherUser,
}

/// A signed-in user answering for themselves, and through what
/// (`device`, `account`), for the audit trail.
#[derive(Debug, Clone, Copy)]
pub struct UserAnswer<'a> {
    /// The user (the subject-claim value, as in login hints).
    pub user: &'a str,
    pub via: &'static str,
}

/// One of a user's pending requests, as their devices and account page list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingApproval {
    /// The approval link's handle: what a decision names.
    pub handle: String,
    pub client_name: String,
    /// `None` with number matching: the device must not give the code away.
    pub binding_message: Option<String>,
    /// Number matching: the codes the user picks from (as on the page).
    pub match_choices: Option<Vec<String>>,
    pub scope: String,
    pub expires_at_ms: u64,
}

impl From<StoreError> for ApprovalRefused {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "approval page: store unavailable");
        Self::Unavailable
    }
}

/// A pending request with its approval link and client.
struct Live {
    record: RequestRecord,
    link: Url,
    client: std::sync::Arc<Client>,
}

impl Flow {
    /// The approval link for request `id`.
    pub(super) fn approval_url(&self, id: &AuthReqId) -> String {
        format!("{}{}", self.approval_base, self.approval_handle(id))
    }

    /// The handle of request `id`: the last segment of its approval link,
    /// and how the account page and the device API name it.
    pub fn approval_handle(&self, id: &AuthReqId) -> String {
        id.seal_reference(&self.cipher, HANDLE_AAD)
    }

    /// What the approval page for `handle` shows.
    pub async fn approval(&self, handle: &str) -> Result<Approval, ApprovalRefused> {
        let live = self.live(handle).await?;
        tracing::info!("approval page shown");
        Ok(self.show(handle, live))
    }

    /// The requests waiting for `user`, newest first, each with its handle
    /// and what its approval page shows (the account page lists them so).
    pub async fn approval_pages(&self, user: &str) -> Result<Vec<(String, Approval)>, StoreError> {
        Ok(self
            .live_for(user)
            .await?
            .into_iter()
            .map(|live| {
                let handle = self.approval_handle(&live.record.id);
                let page = self.show(&handle, live);
                (handle, page)
            })
            .collect())
    }

    /// The user's pending requests that have an approval link, newest first:
    /// one store read per request noted for the user at [`Flow::open`]. A
    /// noted request found expired undecided goes into the user's history
    /// as `expired`.
    async fn live_for(&self, user: &str) -> Result<Vec<Live>, StoreError> {
        let now_ms = self.clock.now_ms();
        let mut live = Vec::new();
        for id in self.accounts.requests(user, now_ms).await? {
            let Some((record, Status::Pending)) = self.store.get(&id).await? else {
                continue;
            };
            if user_hash(&record.login_hint) != user_hash(user) {
                continue;
            }
            if now_ms >= record.expires_at_ms {
                self.expired(&record).await;
                continue;
            }
            // The page's link is made from the IdP's metadata: without it,
            // the list is as unavailable as without the store.
            let found = self.live_record(record).await.map_err(|e| {
                StoreError::Unavailable(format!("the sign-in link cannot be made: {e}"))
            })?;
            live.extend(found);
        }
        Ok(live)
    }

    /// What the approval page for a pending request shows.
    fn show(&self, handle: &str, live: Live) -> Approval {
        let expires_in_secs = live
            .record
            .expires_at_ms
            .saturating_sub(self.clock.now_ms())
            .div_ceil(1000);
        let choices = self.match_choices(&live);
        Approval {
            client_name: live.client.name.clone(),
            binding_message: live.record.binding_message.clone(),
            scope: live.record.scope.clone(),
            expires_in_secs,
            choices,
            form_token: self.cipher.seal(handle.as_bytes(), FORM_TOKEN_AAD),
            link_origin: live.link.origin().ascii_serialization(),
        }
    }

    /// The user approves (having picked `code`, with number matching).
    pub async fn approve(
        &self,
        handle: &str,
        form_token: Option<&str>,
        code: Option<&str>,
    ) -> Result<Approved, ApprovalRefused> {
        let live = self.live(handle).await?;
        self.check_form_token(handle, form_token)?;
        let approved = self.approval_of(&live, code).await?;
        if matches!(approved, Approved::SignIn(_)) {
            tracing::info!("the user approved on the approval page");
        }
        self.audit_answer(&live.record, PAGE, answer_of(&approved));
        Ok(approved)
    }

    /// `who` approves their own request (having typed `code`, with number
    /// matching): the approval page's rules, without its form.
    pub async fn approve_as(
        &self,
        handle: &str,
        who: UserAnswer<'_>,
        code: Option<&str>,
    ) -> Result<Approved, ApprovalRefused> {
        let live = self.live(handle).await?;
        check_owner(&live.record, who)?;
        let approved = self.approval_of(&live, code).await?;
        self.audit_answer(&live.record, who.via, answer_of(&approved));
        Ok(approved)
    }

    /// `who` denies their own request: it ends `access_denied` at once.
    pub async fn deny_as(&self, handle: &str, who: UserAnswer<'_>) -> Result<(), ApprovalRefused> {
        let live = self.live(handle).await?;
        check_owner(&live.record, who)?;
        self.end(&live.record, "the user declined", Denial::Declined)
            .await?;
        self.audit_answer(&live.record, who.via, "deny");
        Ok(())
    }

    /// The audit trail's `answered` event: the same for every way a user
    /// answers (`via`: the page, a device, the account page).
    fn audit_answer(&self, record: &RequestRecord, via: &str, answer: &str) {
        audit::record(
            audit::Step::Answered { via, answer },
            record,
            self.clock.now_ms(),
        );
    }

    /// The user's requests that still wait for an answer and have an
    /// approval link, newest first, each with a fresh handle.
    pub async fn pending_approvals(&self, user: &str) -> Result<Vec<PendingApproval>, StoreError> {
        Ok(self
            .live_for(user)
            .await?
            .into_iter()
            .map(|live| {
                let match_choices = self.match_choices(&live);
                PendingApproval {
                    handle: self.approval_handle(&live.record.id),
                    client_name: live.client.name.clone(),
                    // With number matching the code is what the user proves
                    // they see elsewhere: the device shows the choices only.
                    binding_message: live
                        .record
                        .binding_message
                        .filter(|_| match_choices.is_none()),
                    match_choices,
                    scope: live.record.scope,
                    expires_at_ms: live.record.expires_at_ms,
                }
            })
            .collect())
    }

    /// The approval rules once the answer is known to be the user's: with
    /// number matching, a wrong code ends the request.
    async fn approval_of(
        &self,
        live: &Live,
        code: Option<&str>,
    ) -> Result<Approved, ApprovalRefused> {
        let must_match = number_matching(&live.client, live.record.binding_message.as_deref());
        if must_match && code != live.record.binding_message.as_deref() {
            tracing::warn!("the user picked a code that is not the binding message; denied");
            self.end(&live.record, "the code did not match", Denial::Failed)
                .await?;
            return Ok(Approved::CodeMismatch);
        }
        Ok(Approved::SignIn(live.link.clone()))
    }

    /// The user denies: the request ends `access_denied` at once.
    pub async fn deny(
        &self,
        handle: &str,
        form_token: Option<&str>,
    ) -> Result<(), ApprovalRefused> {
        let live = self.live(handle).await?;
        self.check_form_token(handle, form_token)?;
        tracing::info!("the user denied on the approval page");
        self.end(&live.record, "the user declined", Denial::Declined)
            .await?;
        self.audit_answer(&live.record, PAGE, "deny");
        Ok(())
    }

    async fn end(
        &self,
        record: &RequestRecord,
        reason: &str,
        kind: Denial,
    ) -> Result<(), ApprovalRefused> {
        let outcome = Outcome::Denied {
            reason: reason.to_owned(),
            kind,
        };
        if self.decide(record, &outcome).await? {
            Ok(())
        } else {
            Err(ApprovalRefused::Ended)
        }
    }

    fn check_form_token(&self, handle: &str, token: Option<&str>) -> Result<(), ApprovalRefused> {
        let opened = token.and_then(|t| self.cipher.open(t, FORM_TOKEN_AAD).ok());
        if opened.as_deref() == Some(handle.as_bytes()) {
            Ok(())
        } else {
            tracing::warn!("an approval form without this page's token; refused");
            Err(ApprovalRefused::Forged)
        }
    }

    /// The pending request behind `handle`: one store read.
    async fn live(&self, handle: &str) -> Result<Live, ApprovalRefused> {
        let id = self
            .approval_target(handle)
            .ok_or(ApprovalRefused::Unknown)?;
        record_auth_req(&id);
        let (record, status) = self.store.get(&id).await?.ok_or(ApprovalRefused::Ended)?;
        record_client(&record.client_id);
        if status != Status::Pending || self.clock.now_ms() >= record.expires_at_ms {
            return Err(ApprovalRefused::Ended);
        }
        if self.clients.get(&record.client_id).is_none() {
            return Err(ApprovalRefused::Ended);
        }
        match self.live_record(record).await {
            Ok(live) => live.ok_or(ApprovalRefused::Unknown),
            Err(e) => {
                tracing::warn!(error = %e, "approval page: the sign-in link cannot be made");
                Err(ApprovalRefused::Unavailable)
            }
        }
    }

    /// A pending record with its sign-in link and client; `None` without a
    /// link (a native-CIBA IdP reaches the user itself) or a client.
    async fn live_record(&self, record: RequestRecord) -> Result<Option<Live>, UpstreamError> {
        let Some(client) = self.clients.get(&record.client_id) else {
            return Ok(None);
        };
        let id = record.id.as_str();
        let link = match &record.user_link {
            UserLink::None => None,
            UserLink::FromContext => {
                let Ok(context) = self.cipher.open(&record.sealed_upstream, id) else {
                    return Ok(None);
                };
                self.upstream
                    .user_link(&LinkFor {
                        client: &client,
                        login_hint: &record.login_hint,
                        scope: &record.scope,
                        context: &context,
                        callback_state: &self.callback_state(&record.id),
                    })
                    .await?
            }
            UserLink::Sealed(sealed) => self
                .cipher
                .open(sealed, id)
                .ok()
                .and_then(|plain| String::from_utf8(plain).ok())
                .and_then(|text| Url::parse(&text).ok()),
        };
        Ok(link.map(|link| Live {
            record,
            link,
            client,
        }))
    }

    /// Number matching: the codes the page and the devices offer. They
    /// depend only on the request (a keyed digest of its id), so every
    /// handle and every instance shows the same three: comparing two pages
    /// does not reveal the real one.
    fn match_choices(&self, live: &Live) -> Option<Vec<String>> {
        let message = live.record.binding_message.as_deref()?;
        if !number_matching(&live.client, Some(message)) {
            return None;
        }
        let seed = self
            .cipher
            .keyed_digest(DECOYS_LABEL, live.record.id.as_str().as_bytes());
        Some(choices(seed, message))
    }

    fn approval_target(&self, handle: &str) -> Option<AuthReqId> {
        AuthReqId::open_reference(&self.cipher, handle, HANDLE_AAD)
    }
}

/// The audit trail's name for an approval.
fn answer_of(approved: &Approved) -> &'static str {
    match approved {
        Approved::SignIn(_) => "approve",
        Approved::CodeMismatch => "code_mismatch",
    }
}

/// A user may answer only their own request (the hint names them).
fn check_owner(record: &RequestRecord, who: UserAnswer<'_>) -> Result<(), ApprovalRefused> {
    if user_hash(&record.login_hint) == user_hash(who.user) {
        Ok(())
    } else {
        tracing::warn!(
            via = who.via,
            "a user answered another user's request; refused"
        );
        Err(ApprovalRefused::OtherUser)
    }
}

/// Whether `client`'s user must pick `message` among decoys: a `match`
/// client, and a message with something to vary. Then nothing sent to the
/// user's device may carry the code (see [`Flow::open`]).
pub(super) fn number_matching(client: &Client, message: Option<&str>) -> bool {
    client.binding_message_check == BindingMessageCheck::Match
        && message.is_some_and(|m| m.chars().any(|c| c.is_ascii_alphanumeric()))
}

/// Number matching: the binding message and decoys of the same shape
/// (each digit a random digit, each letter a random letter of its case),
/// drawn and ordered from `seed`, so the same seed gives the same page.
fn choices(seed: [u8; 32], message: &str) -> Vec<String> {
    let mut rng = StdRng::from_seed(seed);
    let mut codes = vec![message.to_owned()];
    while codes.len() <= DECOYS {
        let decoy: String = message
            .chars()
            .map(|c| match c {
                '0'..='9' => rng.gen_range(b'0'..=b'9') as char,
                'A'..='Z' => rng.gen_range(b'A'..=b'Z') as char,
                'a'..='z' => rng.gen_range(b'a'..=b'z') as char,
                other => other,
            })
            .collect();
        if !codes.contains(&decoy) {
            codes.push(decoy);
        }
    }
    let real_at = rng.gen_range(0..codes.len());
    codes.swap(0, real_at);
    codes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::TokenCipher;
    use base64::Engine;
    use secrecy::SecretString;

    fn cipher(byte: u8) -> TokenCipher {
        let key = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
        TokenCipher::from_base64(&SecretString::from(key)).unwrap()
    }

    fn seed(cipher: &TokenCipher, id: &str) -> [u8; 32] {
        cipher.keyed_digest(DECOYS_LABEL, id.as_bytes())
    }

    #[test]
    fn decoys_have_the_shape_of_the_code() {
        let codes = choices(seed(&cipher(1), "req-1"), "W4S-CT");
        assert_eq!(codes.len(), 3);
        assert!(codes.contains(&"W4S-CT".to_owned()));
        for code in &codes {
            assert_eq!(code.len(), 6);
            assert_eq!(&code[3..4], "-");
            assert!(code[1..2].chars().all(|c| c.is_ascii_digit()), "{code}");
            assert!(code[..1].chars().all(|c| c.is_ascii_uppercase()), "{code}");
        }
    }

    #[test]
    fn every_handle_of_one_request_shows_the_same_decoys() {
        let key = cipher(1);
        let id = AuthReqId::parse("req-1").unwrap();
        // Two links to one request: different handles, one set of codes.
        let (a, b) = (
            id.seal_reference(&key, HANDLE_AAD),
            id.seal_reference(&key, HANDLE_AAD),
        );
        assert_ne!(a, b);
        let shown = |handle: &str| {
            let id = AuthReqId::open_reference(&key, handle, HANDLE_AAD).unwrap();
            choices(seed(&key, id.as_str()), "W4SCT")
        };
        assert_eq!(shown(&a), shown(&b));
        // Unpredictable without the key, and different for another request.
        assert_ne!(
            choices(seed(&cipher(2), "req-1"), "W4SCT"),
            choices(seed(&key, "req-1"), "W4SCT")
        );
        assert_ne!(
            choices(seed(&key, "req-2"), "W4SCT"),
            choices(seed(&key, "req-1"), "W4SCT")
        );
    }

    #[test]
    fn only_a_match_client_with_a_code_to_vary_matches_numbers() {
        let mut client = Client::upstream_registration(
            "shop",
            SecretString::from("s"),
            crate::domain::Scope::parse("openid").unwrap(),
        );
        assert!(!number_matching(&client, Some("W4SCT")));
        client.binding_message_check = BindingMessageCheck::Match;
        assert!(number_matching(&client, Some("W4SCT")));
        assert!(!number_matching(&client, Some("!!")));
        assert!(!number_matching(&client, None));
    }
}
