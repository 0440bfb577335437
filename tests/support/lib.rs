//! The end-to-end harness: a real oidc-provider ([`idp`]), a simulated
//! authentication device that receives the proxy's webhook and signs in
//! ([`device`]), and a proxy started in-process on port 0 ([`app`]).
//! [`browser`] drives headless Chromium over WebDriver for the pages a
//! person sees. The notification channels' counterparts: a real SMTP
//! server ([`smtp`]), a local Web Push service ([`push_service`]), a fake
//! of FCM ([`fcm_fake`]), and devices with push targets ([`push_devices`]).
pub mod account;
pub mod app;
pub mod balancer;
pub mod browser;
pub mod device;
pub mod device_key;
pub mod fcm_fake;
pub mod idp;
pub mod keys;
pub mod ping_receiver;
pub mod pki;
pub mod push_devices;
pub mod push_service;
pub mod redis_cluster;
pub mod redis_deployments;
pub mod redis_process;
pub mod redis_sentinel;
pub mod redis_server;
pub mod redis_tls;
pub mod server;
pub mod smtp;
