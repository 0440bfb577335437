//! The proxy as the authentication device's server (`docs/devices.md`): a
//! device registers with the challenge of a QR code the account page
//! offered, then signs every call with its key. This module decides what a
//! verified JWS ([`jws`]) may do; the approval rules themselves stay in
//! `flow/approval.rs`, and the HTTP edge is `routes/devices.rs`.
//!
//! Nothing a device sends reaches the log: devices are named by
//! [`log_tag`] of their id and users by [`user_hash`].
use std::sync::Arc;

use ciba_proto::device::{APPROVE, AUTH_SCHEME, CLOCK_SKEW_SECS, DENY};
use sha2::{Digest, Sha256};
use url::Url;

use crate::clients::EndpointPolicy;
use crate::crypto::log_tag;
use crate::error::OAuthError;
use crate::flow::{ApprovalRefused, Approved, Flow, PendingApproval, UserAnswer};
use crate::jwt;
use crate::limits::user_hash;
use crate::net_policy;
use crate::store::accounts::challenge_digest;
use crate::store::{Device, PushTarget, StoreError};

pub mod jws;

use self::jws::{Call, JwsError};

/// What the audit trail says answered.
const VIA: &str = "device";

/// Why a device's call is refused.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Malformed input, a weak key, a missing claim (400 `invalid_request`).
    #[error("{0}")]
    BadRequest(String),
    /// Not a registered device's valid, fresh, unused JWS (401 `invalid_token`).
    #[error("{0}")]
    Unauthorized(String),
    /// Another user's request (403 `access_denied`).
    #[error("{0}")]
    Forbidden(String),
    /// Not a handle this proxy made (404).
    #[error("no such request")]
    UnknownRequest,
    /// The request expired or was answered (410).
    #[error("the request has ended: it expired or was answered")]
    Ended,
    /// The store failed (503, or 500 for corrupt data), rendered as the
    /// OAuth error it is everywhere else.
    #[error(transparent)]
    Store(OAuthError),
}

impl From<StoreError> for DeviceError {
    fn from(e: StoreError) -> Self {
        Self::Store(e.into())
    }
}

impl From<ApprovalRefused> for DeviceError {
    fn from(refused: ApprovalRefused) -> Self {
        match refused {
            ApprovalRefused::Unknown => Self::UnknownRequest,
            ApprovalRefused::Ended => Self::Ended,
            ApprovalRefused::OtherUser => Self::Forbidden("the request is another user's".into()),
            // Devices answer without a form; the store is what failed.
            ApprovalRefused::Forged | ApprovalRefused::Unavailable => {
                StoreError::Unavailable("the approval could not be read".into()).into()
            }
        }
    }
}

/// What a device's decision came to.
#[derive(Debug)]
pub enum Decision {
    /// Approved: the user signs in at the IdP here.
    SignIn(Url),
    Denied,
    /// Number matching: the code was not the binding message, so the
    /// request was cancelled.
    CodeMismatch,
}

pub struct Devices {
    flow: Arc<Flow>,
    /// Where a Web Push endpoint may lead (as for ping endpoints).
    endpoints: EndpointPolicy,
}

/// A Web Push endpoint: https (http only with
/// `ciba.allow_http_notification_endpoints`), and public unless private
/// endpoints are allowed; the sender checks resolved names again.
fn check_endpoint(endpoint: &str, policy: EndpointPolicy) -> Result<(), DeviceError> {
    let bad = |m: String| DeviceError::BadRequest(format!("push.subscription.endpoint {m}"));
    let url = Url::parse(endpoint).map_err(|_| bad("is not a URL".into()))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => return Err(bad("must be https".into())),
        _ => return Err(bad("must be an https URL".into())),
    }
    if !policy.allow_private {
        net_policy::check_url(&url).map_err(|e| bad(format!("is refused: {e}")))?;
    }
    Ok(())
}

fn unauthorized(e: JwsError) -> DeviceError {
    DeviceError::Unauthorized(e.to_string())
}

impl Devices {
    pub fn new(flow: Arc<Flow>, endpoints: EndpointPolicy) -> Self {
        Self { flow, endpoints }
    }

    /// `POST /devices`: registers the key a registration JWS carries, for
    /// the user the did's enrolment was offered to. Returns the did.
    pub async fn register(&self, body: &str) -> Result<String, DeviceError> {
        let registration = jws::registration(body).map_err(|e| match e {
            JwsError::BadSignature | JwsError::Time(_) => unauthorized(e),
            JwsError::Malformed(m) | JwsError::Key(m) | JwsError::Claims(m) => {
                DeviceError::BadRequest(m)
            }
        })?;
        if let Some(PushTarget::Webpush { subscription }) = &registration.push {
            check_endpoint(&subscription.endpoint, self.endpoints)?;
        }
        let tag = log_tag(&registration.did);
        let refused = || {
            tracing::warn!(
                device = %tag,
                "a registration without a valid enrolment; refused"
            );
            DeviceError::Unauthorized(
                "the did is unknown, or its challenge is wrong, used or expired".into(),
            )
        };
        let accounts = &self.flow.accounts;
        let enrolment = accounts
            .enrolment(&registration.did)
            .await?
            .ok_or_else(refused)?;
        let now_ms = self.flow.clock.now_ms();
        let device = Device {
            did: registration.did,
            user: enrolment.user,
            name: registration.name,
            model: registration.model,
            jwk: registration.jwk,
            push: registration.push,
            registered_at_ms: now_ms,
            last_used_at_ms: now_ms,
        };
        let digest = challenge_digest(&registration.challenge);
        if !accounts.enrol(&device, &digest, now_ms).await? {
            return Err(refused());
        }
        tracing::info!(
            device = %log_tag(&device.did),
            user = %user_hash(&device.user),
            "device registered"
        );
        Ok(device.did)
    }

    /// Every other call: `Authorization: Device <jws>`, signed by the
    /// registered key of the device its `kid` names, fresh and never used
    /// before. A good call is the device's last use.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<(Device, Call), DeviceError> {
        let jws = authorization
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(AUTH_SCHEME))
            .map(|(_, jws)| jws.trim())
            .ok_or_else(|| {
                DeviceError::Unauthorized(format!(
                    "an Authorization: {AUTH_SCHEME} <jws> header is required"
                ))
            })?;
        let did = jws::caller(jws).map_err(unauthorized)?;
        let accounts = &self.flow.accounts;
        let Some(device) = accounts.device(&did).await? else {
            tracing::warn!(device = %log_tag(&did), "a call from an unknown or removed device");
            return Err(DeviceError::Unauthorized(
                "the device is unknown or was removed".into(),
            ));
        };
        let now_ms = self.flow.clock.now_ms();
        let now = now_ms / 1000;
        let call = jws::call(jws, &did, &device.jwk, now).map_err(|e| {
            tracing::warn!(device = %log_tag(&did), reason = %e, "a device call refused");
            unauthorized(e)
        })?;
        // Single use: remembered for as long as the JWS could be accepted.
        let once = format!(
            "device-jti:{}:{}",
            log_tag(&did),
            hex::encode(&Sha256::digest(call.jti.as_bytes())[..16])
        );
        let ttl = call.exp.saturating_sub(now) + CLOCK_SKEW_SECS;
        if !self.flow.store.use_once(&once, ttl).await? {
            tracing::warn!(device = %log_tag(&did), "a device call replayed");
            return Err(DeviceError::Unauthorized(
                "this JWS was used before (jti)".into(),
            ));
        }
        accounts.touch_device(&did, now_ms).await?;
        Ok((device, call))
    }

    /// `GET /devices/requests`: the device user's pending requests.
    pub async fn pending(&self, device: &Device) -> Result<Vec<PendingApproval>, DeviceError> {
        Ok(self.flow.pending_approvals(&device.user).await?)
    }

    /// `POST /devices/decision`: the claims `handle`, `res` and `match`.
    pub async fn decide(&self, device: &Device, call: &Call) -> Result<Decision, DeviceError> {
        let claim = |name: &str| jwt::string(&call.claims, name).map_err(DeviceError::BadRequest);
        let handle = claim("handle")?;
        let code = match call.claims.get("match") {
            None | Some(serde_json::Value::Null) => None,
            Some(_) => Some(claim("match")?),
        };
        let who = UserAnswer {
            user: &device.user,
            via: VIA,
        };
        match claim("res")? {
            APPROVE => Ok(match self.flow.approve_as(handle, who, code).await? {
                Approved::SignIn(link) => Decision::SignIn(link),
                Approved::CodeMismatch => Decision::CodeMismatch,
            }),
            DENY => {
                self.flow.deny_as(handle, who).await?;
                Ok(Decision::Denied)
            }
            _ => Err(DeviceError::BadRequest(format!(
                "res must be {APPROVE} or {DENY}"
            ))),
        }
    }

    /// `POST /devices/remove`: the device unregisters itself.
    pub async fn remove(&self, device: &Device) -> Result<(), DeviceError> {
        self.flow.accounts.remove_device(&device.did).await?;
        tracing::info!(
            device = %log_tag(&device.did),
            user = %user_hash(&device.user),
            "device removed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_push_endpoints_are_https_and_public_unless_allowed() {
        let strict = EndpointPolicy::default();
        let development = EndpointPolicy::from(true);
        assert!(check_endpoint("https://push.example/sub/1", strict).is_ok());
        for refused in [
            "http://push.example/sub/1",
            "https://127.0.0.1/sub",
            "https://localhost/sub",
            "https://10.0.0.1/sub",
            "ftp://push.example/1",
            "not a url",
        ] {
            assert!(
                matches!(
                    check_endpoint(refused, strict),
                    Err(DeviceError::BadRequest(_))
                ),
                "{refused}"
            );
        }
        assert!(check_endpoint("http://127.0.0.1:8080/sub", development).is_ok());
        assert!(check_endpoint("ftp://push.example/1", development).is_err());
    }
}
