//! "Register a device": each render of the account page offers a new
//! enrolment (a fresh device id and a single-use challenge, of which the
//! store keeps only the SHA-256), shown as a QR code and as the same JSON
//! in text. The app scans it and registers at `POST /devices`
//! (`docs/devices.md`).
use ciba_proto::device::{DECISION_PATH, REGISTER_PATH, REMOVE_PATH};
use ciba_proxy_client::device::Qr;
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

use crate::crypto::random_token;
use crate::store::accounts::{challenge_digest, Accounts, Enrolment};
use crate::store::StoreError;

/// A device-registration offer, ready for the page.
#[derive(Debug)]
pub struct Offer {
    /// The QR payload as text.
    pub json: String,
    /// The same, as an inline SVG QR code.
    pub svg: String,
}

/// Saves a new enrolment for `user` and renders its QR code.
pub async fn offer(
    accounts: &dyn Accounts,
    user: &str,
    issuer: &str,
    ttl_ms: u64,
    now_ms: u64,
) -> Result<Offer, StoreError> {
    // The payload `ciba-proxy device` reads: one definition for both.
    let payload = Qr {
        did: random_token(16),
        un: user.to_owned(),
        hst: issuer.to_owned(),
        re: REGISTER_PATH.to_owned(),
        ae: DECISION_PATH.to_owned(),
        rde: REMOVE_PATH.to_owned(),
        chg: random_token(32),
    };
    accounts
        .offer_enrolment(&Enrolment {
            did: payload.did.clone(),
            user: user.to_owned(),
            challenge_digest: challenge_digest(&payload.chg),
            expires_at_ms: now_ms + ttl_ms,
        })
        .await?;
    // Serialising this plain struct cannot fail.
    let json = serde_json::to_string(&payload).unwrap_or_default();
    let svg = qr_svg(&json);
    Ok(Offer { json, svg })
}

/// `text` as an SVG QR code (error correction M), without the XML
/// declaration so it can sit inline in the page. Empty if the text does
/// not fit in a QR code (a login hint of hundreds of bytes).
fn qr_svg(text: &str) -> String {
    match QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M) {
        Ok(code) => {
            let image = code
                .render::<svg::Color>()
                .min_dimensions(240, 240)
                .quiet_zone(true)
                .dark_color(svg::Color("#000000"))
                .light_color(svg::Color("#ffffff"))
                .build();
            match image.find("<svg") {
                Some(start) => image[start..].to_owned(),
                None => image,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "the device-registration QR code could not be made");
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_code_is_an_inline_svg() {
        let svg = qr_svg(r#"{"did":"d"}"#);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(!svg.contains("<?xml"));
        assert!(!svg.contains("<script"));
    }

    #[test]
    fn the_payload_has_the_contracts_fields_in_order() {
        let payload = Qr {
            did: "d".into(),
            un: "alice".into(),
            hst: "https://proxy.example".into(),
            re: REGISTER_PATH.into(),
            ae: DECISION_PATH.into(),
            rde: REMOVE_PATH.into(),
            chg: "c".into(),
        };
        assert_eq!(
            serde_json::to_string(&payload).unwrap(),
            r#"{"did":"d","un":"alice","hst":"https://proxy.example","re":"/devices","ae":"/devices/decision","rde":"/devices/remove","chg":"c"}"#
        );
    }
}
