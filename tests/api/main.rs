//! The end-to-end suite: the real proxy against a real oidc-provider and a
//! real Redis, driven as a client and a user's device would drive it.
mod approval_browser;
mod approval_page;
mod backchannel_authentication;
mod bad_input;
mod browser_harness;
mod client_authentication;
mod configuration;
mod consumption_device;
mod discovery;
mod flow;
mod hints;
mod idp_reachability;
mod limits;
mod logs;
mod mtls;
mod multi_instance;
mod native_ciba;
mod outages;
mod ping;
mod request_object;
mod retry_safety;
mod store_contract;
mod test_idp_ciba;
mod token;
