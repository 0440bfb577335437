//! The approval page's side of a request's life: the link the user's
//! device gets, what the page shows, and the user's answer. Approve leads
//! to the IdP's sign-in (the flow then goes on as before); deny decides the
//! request at once.
//!
//! The link's handle is the auth_req_id and 128 random bits, sealed with the
//! token key: unguessable, unrelated to anything the client or the IdP
//! sees, and resolved with one store read on any instance. It works while
//! the request is pending; the forms carry a token bound to the handle.
//!
//! A signed-in user may also answer for themselves, without the page's
//! form: from a registered device (`devices/`) or the account page. The
//! same rules apply, and the request must be that user's.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use url::Url;

use super::Flow;
use crate::audit;
use crate::clients::Client;
use crate::configuration::BindingMessageCheck;
use crate::domain::AuthReqId;
use crate::limits::user_hash;
use crate::store::{Denial, Outcome, RequestRecord, Status, StoreError};
use crate::telemetry::{record_auth_req, record_client};

/// Associated data of approval handles and of the pages' form tokens.
const HANDLE_AAD: &str = "approval-link";
const FORM_TOKEN_AAD: &str = "approval-form";
/// Number matching: the real code and this many decoys.
const DECOYS: usize = 2;

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
    pub binding_message: Option<String>,
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
        format!(
            "{}{}",
            self.approval_base,
            id.seal_reference(&self.cipher, HANDLE_AAD)
        )
    }

    /// What the approval page for `handle` shows.
    pub async fn approval(&self, handle: &str) -> Result<Approval, ApprovalRefused> {
        let live = self.live(handle).await?;
        let expires_in_secs = live
            .record
            .expires_at_ms
            .saturating_sub(self.clock.now_ms())
            .div_ceil(1000);
        tracing::info!("approval page shown");
        let choices = match (
            live.client.binding_message_check,
            &live.record.binding_message,
        ) {
            (BindingMessageCheck::Match, Some(message)) => choices(handle, message),
            _ => None,
        };
        Ok(Approval {
            client_name: live.client.name.clone(),
            binding_message: live.record.binding_message.clone(),
            scope: live.record.scope.clone(),
            expires_in_secs,
            choices,
            form_token: self.cipher.seal(handle.as_bytes(), FORM_TOKEN_AAD),
            link_origin: live.link.origin().ascii_serialization(),
        })
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
        let approved = self.approval_of(handle, &live, code).await?;
        if matches!(approved, Approved::SignIn(_)) {
            tracing::info!("the user approved on the approval page");
        }
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
        let approved = self.approval_of(handle, &live, code).await?;
        let answer = match approved {
            Approved::SignIn(_) => "approve",
            Approved::CodeMismatch => "code_mismatch",
        };
        audit::record(
            audit::Step::Answered {
                via: who.via,
                answer,
            },
            &live.record,
            self.clock.now_ms(),
        );
        Ok(approved)
    }

    /// `who` denies their own request: it ends `access_denied` at once.
    pub async fn deny_as(&self, handle: &str, who: UserAnswer<'_>) -> Result<(), ApprovalRefused> {
        let live = self.live(handle).await?;
        check_owner(&live.record, who)?;
        self.end(&live.record, "the user declined", Denial::Declined)
            .await?;
        audit::record(
            audit::Step::Answered {
                via: who.via,
                answer: "deny",
            },
            &live.record,
            self.clock.now_ms(),
        );
        Ok(())
    }

    /// The user's requests that still wait for an answer and have an
    /// approval link, newest first, each with a fresh handle.
    pub async fn pending_approvals(&self, user: &str) -> Result<Vec<PendingApproval>, StoreError> {
        let now_ms = self.clock.now_ms();
        let mut pending = Vec::new();
        for id in self.accounts.requests(user, now_ms).await? {
            let Some((record, Status::Pending)) = self.store.get(&id).await? else {
                continue;
            };
            let theirs = user_hash(&record.login_hint) == user_hash(user);
            if !theirs || now_ms >= record.expires_at_ms || record.sealed_link.is_none() {
                continue;
            }
            let Some(client) = self.clients.get(&record.client_id) else {
                continue;
            };
            pending.push(PendingApproval {
                handle: id.seal_reference(&self.cipher, HANDLE_AAD),
                client_name: client.name.clone(),
                binding_message: record.binding_message,
                scope: record.scope,
                expires_at_ms: record.expires_at_ms,
            });
        }
        Ok(pending)
    }

    /// The approval rules once the answer is known to be the user's: with
    /// number matching, a wrong code ends the request.
    async fn approval_of(
        &self,
        handle: &str,
        live: &Live,
        code: Option<&str>,
    ) -> Result<Approved, ApprovalRefused> {
        let must_match = live.client.binding_message_check == BindingMessageCheck::Match
            && choices(handle, live.record.binding_message.as_deref().unwrap_or("")).is_some();
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
            .await
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
        let link = record
            .sealed_link
            .as_deref()
            .and_then(|sealed| self.cipher.open(sealed, id.as_str()).ok())
            .and_then(|plain| String::from_utf8(plain).ok())
            .and_then(|text| Url::parse(&text).ok())
            .ok_or(ApprovalRefused::Unknown)?;
        let client = self
            .clients
            .get(&record.client_id)
            .ok_or(ApprovalRefused::Ended)?;
        Ok(Live {
            record,
            link,
            client,
        })
    }

    fn approval_target(&self, handle: &str) -> Option<AuthReqId> {
        AuthReqId::open_reference(&self.cipher, handle, HANDLE_AAD)
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

/// Number matching: the binding message and decoys of the same shape
/// (each digit a random digit, each letter a random letter of its case),
/// in an order fixed per handle so a reload shows the same page. `None`
/// when the message has nothing to vary.
fn choices(handle: &str, message: &str) -> Option<Vec<String>> {
    if !message.chars().any(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let seed: [u8; 32] = Sha256::digest(format!("decoys:{handle}").as_bytes()).into();
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
    Some(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoys_have_the_shape_of_the_code_and_are_stable_per_page() {
        let codes = choices("handle-1", "W4S-CT").unwrap();
        assert_eq!(codes.len(), 3);
        assert!(codes.contains(&"W4S-CT".to_owned()));
        for code in &codes {
            assert_eq!(code.len(), 6);
            assert_eq!(&code[3..4], "-");
            assert!(code[1..2].chars().all(|c| c.is_ascii_digit()), "{code}");
            assert!(code[..1].chars().all(|c| c.is_ascii_uppercase()), "{code}");
        }
        assert_eq!(choices("handle-1", "W4S-CT"), Some(codes));
        assert!(choices("!!", "!!").is_none());
    }
}
