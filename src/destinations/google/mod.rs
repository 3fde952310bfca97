//! Google Ads, two ways in. By default the Data Manager API (`POST /v1/events:ingest`, OAuth
//! with the `datamanager` scope, no developer token): since 2026-06-15 the Google Ads API's
//! `uploadClickConversions` refuses new adopters with CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE.
//! `api = "google_ads_api"` keeps that legacy upload for developer tokens still allowlisted.

pub mod ads_api;
pub mod data_manager;
pub mod oauth;

use std::collections::BTreeMap;

use super::{Built, Destination, HttpResponse, Outcome, SettingsError, SettingsReader, Subject};

/// The scheme and host of each API, unless `endpoint` overrides them.
pub const DATA_MANAGER_BASE: &str = "https://datamanager.googleapis.com";
pub const ADS_API_BASE: &str = "https://googleads.googleapis.com";

/// Which API a Google destination speaks.
#[derive(Debug, Clone)]
pub enum GoogleApi {
    /// Data Manager API `IngestEvents` (the default).
    DataManager,
    /// Google Ads API `customers/{id}:uploadClickConversions` (allowlisted tokens only).
    AdsApi(ads_api::AdsApiSettings),
}

#[derive(Debug, Clone)]
pub struct GoogleSettings {
    pub api: GoogleApi,
    /// The Google Ads account that owns the conversion actions (Data Manager's
    /// `operatingAccount`; the Ads API's customer).
    pub customer_id: String,
    /// Canonical name → conversion action id (Data Manager's `productDestinationId`).
    pub conversion_actions: BTreeMap<String, String>,
    /// OAuth: the `datamanager` scope for the Data Manager API, `adwords` for the Ads API; a
    /// static access token, or a refresh token TrackLayer exchanges as tokens run out.
    pub auth: oauth::GoogleAuth,
    /// The manager account the credentials' user logs in through (`loginAccount`).
    pub login_customer_id: Option<String>,
    /// Validate only (the test mode): Google checks the request and records nothing.
    pub validate_only: bool,
    /// Data Manager `eventSource`: WEB (default), APP, IN_STORE, PHONE or OTHER.
    pub event_source: String,
    /// The consent categories that grant Google's `adUserData` and `adPersonalization`.
    pub ad_user_data_category: String,
    pub ad_personalization_category: String,
}

fn digits(value: &str) -> String {
    value.chars().filter(char::is_ascii_digit).collect()
}

/// Keys only the legacy Ads API path reads.
const ADS_API_ONLY: [&str; 3] = ["developer_token", "api_version", "utc_offset"];
const EVENT_SOURCES: [&str; 5] = ["WEB", "APP", "IN_STORE", "PHONE", "OTHER"];

impl GoogleSettings {
    pub fn read(r: &SettingsReader<'_>) -> Result<GoogleSettings, SettingsError> {
        r.deny_unknown(&[
            "api",
            "customer_id",
            "conversion_actions",
            "access_token",
            "refresh_token",
            "client_id",
            "client_secret",
            "token_url",
            "login_customer_id",
            "validate_only",
            "event_source",
            "ad_user_data_consent",
            "ad_personalization_consent",
            "developer_token",
            "api_version",
            "utc_offset",
        ])?;
        let api = match r.optional_str("api")?.as_deref() {
            None | Some("data_manager") => GoogleApi::DataManager,
            Some("google_ads_api") => GoogleApi::AdsApi(ads_api::AdsApiSettings::read(r)?),
            Some(other) => {
                return Err(r.error(
                    "api",
                    format!(
                        "`{other}` is not a Google API TrackLayer speaks; leave `api` out for the Data Manager API (the default), or set api = \"google_ads_api\" for the legacy uploadClickConversions (allowlisted developer tokens only)"
                    ),
                ))
            }
        };
        if matches!(api, GoogleApi::DataManager) {
            if let Some(key) = ADS_API_ONLY
                .iter()
                .find(|k| r.optional_str(k).ok().flatten().is_some())
            {
                return Err(r.error(
                    key,
                    "belongs to the Google Ads API's uploadClickConversions, which refuses new developer tokens since 2026-06-15; this destination uses the Data Manager API (no developer token; an OAuth token with the https://www.googleapis.com/auth/datamanager scope). Remove it, or set api = \"google_ads_api\" if your token is still allowlisted",
                ));
            }
        }
        let customer_id = digits(&r.required_str("customer_id")?);
        if customer_id.len() != 10 {
            return Err(r.error(
                "customer_id",
                "must be the 10-digit customer id of the account that owns the conversion actions (dashes are fine)",
            ));
        }
        let conversion_actions = r.string_map("conversion_actions")?;
        if conversion_actions.is_empty() {
            return Err(r.error("conversion_actions", "map at least one canonical event to a conversion action id, e.g. { purchase = \"555000111\" }"));
        }
        for (name, id) in &conversion_actions {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(r.error(
                    &format!("conversion_actions.{name}"),
                    format!("`{id}` must be a numeric conversion action id"),
                ));
            }
        }
        let event_source = r
            .optional_str("event_source")?
            .unwrap_or_else(|| "WEB".into())
            .to_ascii_uppercase();
        if !EVENT_SOURCES.contains(&event_source.as_str()) {
            return Err(r.error(
                "event_source",
                format!(
                    "`{event_source}` must be one of {}",
                    EVENT_SOURCES.join(", ")
                ),
            ));
        }
        let login_customer_id = r.optional_str("login_customer_id")?.map(|s| digits(&s));
        if login_customer_id.as_ref().is_some_and(|id| id.len() != 10) {
            return Err(r.error(
                "login_customer_id",
                "must be a 10-digit customer id (the manager account you log in through)",
            ));
        }
        Ok(GoogleSettings {
            api,
            customer_id,
            conversion_actions,
            auth: oauth::GoogleAuth::read(r)?,
            login_customer_id,
            validate_only: r.optional_bool("validate_only")?.unwrap_or(false),
            event_source,
            ad_user_data_category: r
                .optional_str("ad_user_data_consent")?
                .unwrap_or_else(|| "Advertising".into()),
            ad_personalization_category: r
                .optional_str("ad_personalization_consent")?
                .unwrap_or_else(|| "Advertising".into()),
        })
    }

    /// Where requests go by default.
    pub fn default_base(&self) -> &'static str {
        match self.api {
            GoogleApi::DataManager => DATA_MANAGER_BASE,
            GoogleApi::AdsApi(_) => ADS_API_BASE,
        }
    }

    /// Which path this destination uses, in words (`check` says it).
    pub fn describe(&self) -> String {
        let path = match &self.api {
            GoogleApi::DataManager => format!(
                "Google Ads through the Data Manager API (POST /v1/events:ingest, operatingAccount {}, {} conversion action(s){})",
                self.customer_id,
                self.conversion_actions.len(),
                if self.validate_only { ", validateOnly" } else { "" }
            ),
            GoogleApi::AdsApi(s) => format!(
                "Google Ads API uploadClickConversions ({}, customer {}; legacy: allowlisted developer tokens only)",
                s.api_version, self.customer_id
            ),
        };
        let token = match &self.auth {
            oauth::GoogleAuth::AccessToken(_) => {
                "a static access_token (Google's expire after an hour: keep it fresh, or set refresh_token)".to_string()
            }
            oauth::GoogleAuth::Refresh(r) => format!(
                "access tokens refreshed by TrackLayer from refresh_token through {}",
                r.token_url
            ),
        };
        format!("{path}; {token}")
    }

    /// Canonical names this destination sends: those with a conversion action, and refunds as
    /// adjustments of the purchase's conversion (Data Manager only).
    pub fn supported_events(&self) -> Vec<String> {
        let mut names: Vec<String> = self.conversion_actions.keys().cloned().collect();
        if matches!(self.api, GoogleApi::DataManager)
            && self.conversion_actions.contains_key("purchase")
            && !names.iter().any(|n| n == "refund")
        {
            names.push("refund".into());
        }
        names
    }

    /// Canonical names the platform takes but this path cannot, with why.
    pub fn unsupported_events(&self) -> Vec<(String, String)> {
        match self.api {
            GoogleApi::AdsApi(_) => vec![(
                "refund".into(),
                "the legacy Google Ads API path sends no conversion adjustments; the Data Manager API (leave `api` out) restates the purchase's value".into(),
            )],
            GoogleApi::DataManager => Vec::new(),
        }
    }

    /// The signal for one of Google's consent fields from the event's categories: granted or
    /// denied when the event carried consent, None (unspecified) when it carried none.
    pub fn consent_signal(
        &self,
        event_consent: Option<&BTreeMap<String, bool>>,
        category: &str,
    ) -> Option<bool> {
        event_consent.map(|c| c.get(category).copied().unwrap_or(false))
    }
}

pub fn build(dest: &Destination, settings: &GoogleSettings, items: &[Subject]) -> Built {
    match &settings.api {
        GoogleApi::DataManager => data_manager::build(dest, settings, items),
        GoogleApi::AdsApi(legacy) => ads_api::build(dest, settings, legacy, items),
    }
}

pub fn classify(settings: &GoogleSettings, count: usize, response: &HttpResponse) -> Vec<Outcome> {
    match &settings.api {
        GoogleApi::DataManager => data_manager::classify(settings, count, response),
        GoogleApi::AdsApi(_) => ads_api::classify(count, response),
    }
}
