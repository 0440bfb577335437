//! What every handler shares: built once at startup, cloned cheaply.
use std::sync::Arc;

use crate::clients::ClientRegistry;
use crate::clock::Clock;
use crate::devices::Devices;
use crate::flow::Flow;
use crate::hints::Hints;
use crate::limits::Limits;
use crate::pages::Pages;
use crate::store::Store;
use crate::tls::Mtls;
use crate::upstream::Upstream;

/// Lifetimes and intervals handed to clients.
#[derive(Debug, Clone, Copy)]
pub struct CibaPolicy {
    pub expires_in: u64,
    pub max_expires_in: u64,
    pub interval: u64,
}

#[derive(Clone)]
pub struct AppState {
    /// The proxy's public base URL, without a trailing slash.
    pub issuer: String,
    pub policy: CibaPolicy,
    pub clients: ClientRegistry,
    pub hints: Arc<Hints>,
    pub limits: Arc<Limits>,
    pub mtls: Arc<Mtls>,
    pub store: Arc<dyn Store>,
    pub upstream: Arc<dyn Upstream>,
    /// Owns every request's life from here on.
    pub flow: Arc<Flow>,
    /// The authentication devices' API.
    pub devices: Arc<Devices>,
    /// The pages a person sees.
    pub pages: Arc<Pages>,
    pub clock: Arc<dyn Clock>,
}

impl AppState {
    /// The public URL of one of our endpoints.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }
}
