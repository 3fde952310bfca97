//! A config with its destinations resolved: what `serve`, the dashboard and `check` run on.
//! Config keeps what was written; each destination's kind-specific settings (credentials,
//! batch limits, conversion actions) are resolved here, and their problems join config's own
//! so `check` lists them all at once.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{
    with_hint, Config, ConfigError, DestinationConfig, DestinationKind, EnvVars, Needs,
};
use crate::pipeline::RouteTarget;

use super::Destination;

#[derive(Debug, Clone)]
pub struct Setup {
    pub config: Config,
    /// `config.destinations` with their settings resolved, in the same order.
    pub destinations: Vec<Destination>,
}

impl Setup {
    /// Load and check a config file, resolving `env:VAR` secrets from the process environment.
    pub fn load(path: &Path) -> Result<Setup, ConfigError> {
        Self::load_for(path, &Needs::Everything)
    }

    /// Load a config for a command that uses only some of its secrets: the others are not
    /// read, and an unset variable among them is no error.
    pub fn load_for(path: &Path, needs: &Needs) -> Result<Setup, ConfigError> {
        let text = Config::read(path)?;
        Self::parse_for(&text, path, &|name| std::env::var(name).ok(), needs)
    }

    /// Parse config text and resolve its destinations; `lookup_env` resolves `env:VAR`
    /// references (injected for tests). Every problem is reported, not just the first.
    pub fn parse(
        text: &str,
        path: &Path,
        lookup_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Setup, ConfigError> {
        Self::parse_for(text, path, lookup_env, &Needs::Everything)
    }

    /// [`Setup::parse`] resolving only the secrets `needs` names.
    pub fn parse_for(
        text: &str,
        path: &Path,
        lookup_env: &dyn Fn(&str) -> Option<String>,
        needs: &Needs,
    ) -> Result<Setup, ConfigError> {
        let env_vars = EnvVars::new(lookup_env, needs);
        let (config, mut problems) = Config::parse_unresolved(text, path, &env_vars)?;
        let mut destinations = Vec::with_capacity(config.destinations.len());
        for written in &config.destinations {
            match Destination::from_config(written.index, written, &config.base_dir, &env_vars) {
                Ok(resolved) => {
                    for canonical in resolved.conversion_action_names() {
                        if !config.mapping.table.is_canonical(&canonical) {
                            problems.push(
                                format!(
                                    "destinations[{}].conversion_actions.{canonical}",
                                    written.index
                                ),
                                format!(
                                    "{} is not a canonical name in the mapping table",
                                    with_hint(&canonical, config.mapping.table.canonical_names())
                                ),
                            );
                        }
                    }
                    destinations.push(resolved);
                }
                Err(e) => problems.push(e.key, e.reason),
            }
        }
        let mut config = config;
        let mut capture: Vec<String> = destinations
            .iter()
            .flat_map(Destination::captured_paths)
            .collect();
        capture.sort();
        capture.dedup();
        config.mapping.table.capture = capture;
        problems.into_result(Setup {
            config,
            destinations,
        })
    }

    /// A config without destinations (the embedded default).
    pub fn without_destinations(config: Config) -> Setup {
        Setup {
            config,
            destinations: Vec::new(),
        }
    }

    /// Each destination's test mode (None: the platform has none), which the test walk
    /// uses to tell a safe send from a live one.
    pub fn test_modes(&self) -> BTreeMap<String, Option<bool>> {
        self.destinations
            .iter()
            .map(|d| (d.name.clone(), d.test_mode()))
            .collect()
    }

    /// The destinations that take identify calls as profile updates.
    pub fn profile_destinations(&self) -> Vec<String> {
        self.route_targets()
            .into_iter()
            .filter(|t| t.takes_profiles)
            .map(|t| t.name)
            .collect()
    }

    /// The destinations as routing sees them.
    pub fn route_targets(&self) -> Vec<RouteTarget> {
        self.config
            .destinations
            .iter()
            .map(|written| {
                let resolved = self.destinations.iter().find(|d| d.name == written.name);
                route_target(written, resolved)
            })
            .collect()
    }
}

/// One destination as routing sees it.
pub fn route_target(config: &DestinationConfig, resolved: Option<&Destination>) -> RouteTarget {
    RouteTarget {
        name: config.name.clone(),
        kind: config.kind.as_str().to_string(),
        environments: config.environments.clone(),
        consent: config.consent.clone(),
        supported_events: resolved.and_then(Destination::supported_events),
        takes_profiles: config.kind == DestinationKind::Klaviyo,
        unsupported: resolved
            .map(Destination::unsupported_events)
            .unwrap_or_default(),
    }
}

/// Loading a config file as `serve` and `check` do: config's own checks and the destinations'
/// resolved settings, every problem reported at once.
#[cfg(test)]
mod loading_tests {
    use std::path::{Path, PathBuf};

    use super::Setup;
    use crate::config::*;

    fn env_with(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn parse(
        text: &str,
        vars: &'static [(&'static str, &'static str)],
    ) -> Result<Config, ConfigError> {
        Setup::parse(
            text,
            Path::new("/etc/tracklayer/tracklayer.toml"),
            &env_with(vars),
        )
        .map(|setup| setup.config)
    }

    const MINIMUM: &str = r#"
[server]
listen = "127.0.0.1:8787"

[storage]
path = "tracklayer.db"

[workspace]
account = "acct_live_123"

[[environments]]
name = "production"
secret = "env:TRACKLAYER_SECRET_PRODUCTION"

[mapping]
version = 1
[[mapping.events]]
segment = "Order Completed"
canonical = "purchase"

[[destinations]]
name = "meta"
kind = "meta_capi"
endpoint = "http://127.0.0.1:9101"
environments = ["production"]
consent = ["Advertising"]
retry_schedule = [5, 30, 300, 1800, 7200, 14400]
pixel_id = "123"
access_token = "EAAB_TEST"
"#;

    /// Two environments and a Meta token, each from a variable; only production's is set.
    fn staging_and_token_from_env() -> String {
        MINIMUM
            .replace(
                "[mapping]",
                "[[environments]]\nname = \"staging\"\nsecret = \"env:TRACKLAYER_SECRET_STAGING\"\n\n[mapping]",
            )
            .replace("\"EAAB_TEST\"", "\"env:META_TOKEN\"")
            + r#"
[[destinations]]
name = "orders"
kind = "webhook"
environments = ["production"]
consent = []
retry_schedule = [5]
url = "https://orders.internal.example/hooks"
secret = "env:ORDERS_WEBHOOK_SECRET"

[[destinations]]
name = "dw"
kind = "warehouse"
environments = ["production"]
consent = []
retry_schedule = [5]
url = "env:DW_URL"
"#
    }

    #[test]
    fn a_command_reads_only_the_secrets_it_uses() {
        let text = staging_and_token_from_env();
        let vars = env_with(&[("TRACKLAYER_SECRET_PRODUCTION", "0123456789abcdef0123")]);
        let path = Path::new("/etc/tracklayer/tracklayer.toml");
        let sending = Needs::Only {
            environment: Some("production".into()),
            storage: false,
        };
        let setup =
            Setup::parse_for(&text, path, &vars, &sending).expect("send needs production only");
        let config = &setup.config;
        assert_eq!(
            config.environments[0].secret.expose(),
            "0123456789abcdef0123"
        );
        assert!(!config.environments[1].secret.is_resolved());
        // The destinations are still there (the test send reads their test modes), their
        // credentials unread and unchecked.
        assert_eq!(setup.destinations.len(), 3);

        // The environment a command names is still required.
        let staging = Needs::Only {
            environment: Some("staging".into()),
            storage: false,
        };
        let err = Setup::parse_for(&text, path, &vars, &staging)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "environments[1].secret: environment variable TRACKLAYER_SECRET_STAGING is not set"
            ),
            "{err}"
        );
        assert!(!err.contains("META_TOKEN"), "{err}");

        // serve and check read everything and name every unset variable.
        let err = Setup::parse(&text, path, &vars).unwrap_err().to_string();
        assert!(
            err.contains("TRACKLAYER_SECRET_STAGING is not set"),
            "{err}"
        );
        assert!(
            err.contains(
                "destinations[0].access_token: environment variable META_TOKEN is not set"
            ),
            "{err}"
        );
    }

    #[test]
    fn accepts_the_design_minimum() {
        let config = parse(
            MINIMUM,
            &[("TRACKLAYER_SECRET_PRODUCTION", "0123456789abcdef0123")],
        )
        .expect("minimum config parses");
        assert_eq!(config.workspace.account, "acct_live_123");
        assert_eq!(
            config.environments[0].secret.expose(),
            "0123456789abcdef0123"
        );
        assert_eq!(
            config.storage.path,
            PathBuf::from("/etc/tracklayer/tracklayer.db")
        );
        assert_eq!(config.destinations[0].kind, DestinationKind::MetaCapi);
        assert!(config.destinations[0].settings.contains_key("pixel_id"));
    }

    #[test]
    fn names_the_missing_environment_variable() {
        let err = parse(MINIMUM, &[]).unwrap_err().to_string();
        assert_eq!(
            err,
            "environments[0].secret: environment variable TRACKLAYER_SECRET_PRODUCTION is not set"
        );
    }

    #[test]
    fn names_unknown_destination_kind_and_environment() {
        let vars: &'static [(&str, &str)] =
            &[("TRACKLAYER_SECRET_PRODUCTION", "0123456789abcdef0123")];
        let err = parse(&MINIMUM.replace("meta_capi", "facebook"), vars)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("destinations[0].kind: `facebook` is not a destination kind"),
            "{err}"
        );
        let err = parse(
            &MINIMUM.replace(
                "environments = [\"production\"]",
                "environments = [\"prod\"]",
            ),
            vars,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "destinations[0].environments: `prod` is not a configured environment"
        );
    }

    #[test]
    fn rejects_unknown_keys_with_their_line() {
        let vars: &'static [(&str, &str)] =
            &[("TRACKLAYER_SECRET_PRODUCTION", "0123456789abcdef0123")];
        let err = parse(&MINIMUM.replace("listen =", "listn ="), vars)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `listn`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn rejects_short_secrets_and_bad_listen() {
        let err = parse(MINIMUM, &[("TRACKLAYER_SECRET_PRODUCTION", "short")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("environments[0].secret: secret is 5 characters"),
            "{err}"
        );
        let vars: &'static [(&str, &str)] =
            &[("TRACKLAYER_SECRET_PRODUCTION", "0123456789abcdef0123")];
        let err = parse(&MINIMUM.replace("127.0.0.1:8787", "localhost"), vars)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("server.listen: `localhost` is not an address"),
            "{err}"
        );
    }

    #[test]
    fn retention_must_cover_the_dedup_window() {
        let vars: &'static [(&str, &str)] =
            &[("TRACKLAYER_SECRET_PRODUCTION", "0123456789abcdef0123")];
        let text = MINIMUM.replace(
            "path = \"tracklayer.db\"",
            "path = \"tracklayer.db\"\nretention_days = 1",
        );
        let err = parse(&text, vars).unwrap_err().to_string();
        assert!(
            err.starts_with("storage.retention_days: must cover the dedup window"),
            "{err}"
        );
        let config = parse(MINIMUM, vars).unwrap();
        assert_eq!(config.storage.retention_days, DEFAULT_RETENTION_DAYS);
    }

    #[test]
    fn example_config_is_valid() {
        let config = Setup::parse(EXAMPLE_CONFIG, Path::new("tracklayer.toml"), &|name| {
            Some(format!("example-value-for-{name}"))
        })
        .expect("example config is valid");
        assert!(!config.config.environments.is_empty());
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = parse(
            MINIMUM,
            &[("TRACKLAYER_SECRET_PRODUCTION", "0123456789abcdef0123")],
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("0123456789abcdef0123"));
    }

    #[test]
    fn every_problem_at_once_with_did_you_mean() {
        let vars: &'static [(&str, &str)] =
            &[("TRACKLAYER_SECRET_PRODUCTION", "0123456789abcdef0123")];
        let text = MINIMUM
            .replace("listen = \"127.0.0.1:8787\"", "listen = \"nowhere\"")
            .replace("canonical = \"purchase\"", "canonical = \"purchse\"")
            .replace(
                "environments = [\"production\"]",
                "environments = [\"prodution\"]",
            )
            .replace("pixel_id = \"123\"", "pixelid = \"123\"");
        let err = parse(&text, vars).unwrap_err().to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert!(lines.len() >= 4, "{err}");
        assert!(
            err.contains("server.listen: `nowhere` is not an address"),
            "{err}"
        );
        assert!(
            err.contains("destinations[0].environments: `prodution` (did you mean `production`?) is not a configured environment"),
            "{err}"
        );
        assert!(
            err.contains("mapping.events[0].canonical: `purchse` is not a canonical name TrackLayer knows; did you mean `purchase`?"),
            "{err}"
        );
        assert!(
            err.contains("`pixelid`") && err.contains("did you mean `pixel_id`?"),
            "{err}"
        );
    }

    #[test]
    fn default_country_is_an_iso_code() {
        let vars: &'static [(&str, &str)] =
            &[("TRACKLAYER_SECRET_PRODUCTION", "0123456789abcdef0123")];
        let with = |country: &str| {
            MINIMUM.replacen(
                "[workspace]\n",
                &format!("[workspace]\ndefault_country = \"{country}\"\n"),
                1,
            )
        };
        let config = parse(&with("nl"), vars).unwrap();
        assert_eq!(config.workspace.default_country.as_deref(), Some("NL"));
        let err = parse(&with("Holland!"), vars).unwrap_err().to_string();
        assert!(
            err.contains("workspace.default_country: `Holland!` is not an ISO 3166-1 alpha-2"),
            "{err}"
        );
    }

    #[test]
    fn a_google_conversion_action_for_an_unknown_canonical_name_is_named() {
        let vars: &'static [(&str, &str)] =
            &[("TRACKLAYER_SECRET_PRODUCTION", "0123456789abcdef0123")];
        let text = MINIMUM.replace(
            "kind = \"meta_capi\"",
            "kind = \"google_ads\"\ncustomer_id = \"1234567890\"\nconversion_actions = { purchse = \"1\" }",
        ).replace("pixel_id = \"123\"\naccess_token = \"EAAB_TEST\"", "access_token = \"ya29\"");
        let err = parse(&text, vars).unwrap_err().to_string();
        assert!(
            err.contains("destinations[0].conversion_actions.purchse: `purchse` (did you mean `purchase`?) is not a canonical name in the mapping table"),
            "{err}"
        );
    }

    #[test]
    fn credentials_shared_between_environments_are_refused() {
        let text = format!(
            "{MINIMUM}\n[[environments]]\nname = \"staging\"\nsecret = \"0123456789abcdef0123\"\n"
        );
        let err = parse(
            &text,
            &[("TRACKLAYER_SECRET_PRODUCTION", "0123456789abcdef0123")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("environments[1].secret: the same value as environments[0].secret"),
            "{err}"
        );
        let text = MINIMUM.replace(
            "secret = \"env:TRACKLAYER_SECRET_PRODUCTION\"",
            "secret = \"env:TRACKLAYER_SECRET_PRODUCTION\"\nwrite_key = \"0123456789abcdef0123\"",
        );
        let err = parse(
            &text,
            &[("TRACKLAYER_SECRET_PRODUCTION", "0123456789abcdef0123")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("environments[0].write_key: the same value as environments[0].secret"),
            "{err}"
        );
    }

    #[test]
    fn a_syntax_error_never_echoes_the_line_and_types_are_in_plain_words() {
        let text = MINIMUM.replace(
            "access_token = \"EAAB_TEST\"",
            "access_token = \"EAAB_SUPER_SECRET_LITERAL",
        );
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(!err.contains("EAAB_SUPER_SECRET_LITERAL"), "{err}");
        assert!(err.contains("line "), "{err}");
        let text = MINIMUM.replace("[server]", "[server]\nmax_body_bytes = \"big\"");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(!err.contains("usize"), "{err}");
        assert!(err.contains("expected a whole number"), "{err}");
    }
}
