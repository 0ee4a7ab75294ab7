//! Settings read from the environment once at start.

use domain::PriorityKeywords;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use projections::db::DEFAULT_SQLITE_PATH;

/// Everything the server and the command line need to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`: unset -> the default SQLite file.
    pub database_url: Option<String>,
    /// `HELPDESK_ADDR`, default `127.0.0.1:8080`.
    pub addr: SocketAddr,
    /// `HELPDESK_JWT_SECRET`.
    pub jwt_secret: Option<String>,
    /// `HELPDESK_URGENT_KEYWORDS` / `HELPDESK_LOW_KEYWORDS`: comma-separated phrases.
    pub priority_keywords: PriorityKeywords,
    /// `HELPDESK_CONSISTENCY_TIMEOUT_MS`: how long a mutation waits for its projections.
    pub consistency_timeout: Duration,
    /// `HELPDESK_READY_MAX_BEHIND`: `/readyz` fails when a projection is more events behind.
    pub ready_max_behind: i64,
    /// `HELPDESK_FAILPOINT`: test hook, e.g. `projection-before-commit:tickets`.
    pub failpoint: Option<String>,
    /// Whether this process delivers the outbox (while it holds the lease); tests that
    /// drive the delivery worker themselves turn it off. `HELPDESK_OUTBOX_DELIVERY=on|off`.
    pub outbox_delivery: bool,
}

/// A setting could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}: {why}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// What is wrong with it.
    pub why: String,
}

impl Config {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let addr = get("HELPDESK_ADDR")
            .unwrap_or_else(|| "127.0.0.1:8080".into())
            .parse()
            .map_err(|e| ConfigError {
                name: "HELPDESK_ADDR",
                why: format!("{e}"),
            })?;
        let defaults = PriorityKeywords::default();
        let priority_keywords = PriorityKeywords::from_lists(
            &get("HELPDESK_URGENT_KEYWORDS").unwrap_or_else(|| defaults.urgent.join(",")),
            &get("HELPDESK_LOW_KEYWORDS").unwrap_or_else(|| defaults.low.join(",")),
        );
        let number = |name: &'static str, default: i64| -> Result<i64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|e| ConfigError {
                    name,
                    why: format!("{e}"),
                }),
            }
        };
        Ok(Self {
            database_url: get("DATABASE_URL"),
            addr,
            jwt_secret: get("HELPDESK_JWT_SECRET"),
            priority_keywords,
            consistency_timeout: Duration::from_millis(
                number("HELPDESK_CONSISTENCY_TIMEOUT_MS", 5_000)?.max(0) as u64,
            ),
            ready_max_behind: number("HELPDESK_READY_MAX_BEHIND", 1_000)?,
            failpoint: get("HELPDESK_FAILPOINT"),
            outbox_delivery: match get("HELPDESK_OUTBOX_DELIVERY").as_deref().map(str::trim) {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(ConfigError {
                        name: "HELPDESK_OUTBOX_DELIVERY",
                        why: format!("expected on or off, got {other:?}"),
                    })
                }
            },
        })
    }

    /// Whether the configured database is PostgreSQL.
    pub fn uses_postgres(&self) -> bool {
        self.database_url
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
    }

    /// The folder holding the SQLite file (and the generated JWT secret), if SQLite is used.
    pub fn sqlite_data_folder(&self) -> Option<PathBuf> {
        if self.uses_postgres() {
            return None;
        }
        let path = match self.database_url.as_deref() {
            None => DEFAULT_SQLITE_PATH,
            Some(u) => u
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:"),
        };
        let path = PathBuf::from(path.split('?').next().unwrap_or(path));
        Some(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_sqlite_on_port_8080() {
        let c = config(&[]).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:8080");
        assert!(!c.uses_postgres());
        assert_eq!(c.sqlite_data_folder(), Some(PathBuf::from("./data")));
        assert_eq!(c.priority_keywords, PriorityKeywords::default());
    }

    #[test]
    fn sqlite_urls_put_the_secret_beside_the_file() {
        let c = config(&[("DATABASE_URL", "sqlite:///tmp/x/h.db")]).unwrap();
        assert_eq!(c.sqlite_data_folder(), Some(PathBuf::from("/tmp/x")));
        let c = config(&[("DATABASE_URL", "postgres://u@h/db")]).unwrap();
        assert!(c.uses_postgres());
        assert_eq!(c.sqlite_data_folder(), None);
    }

    #[test]
    fn bad_values_are_reported_by_name() {
        let e = config(&[("HELPDESK_ADDR", "nowhere")]).unwrap_err();
        assert_eq!(e.name, "HELPDESK_ADDR");
        let e = config(&[("HELPDESK_CONSISTENCY_TIMEOUT_MS", "soon")]).unwrap_err();
        assert_eq!(e.name, "HELPDESK_CONSISTENCY_TIMEOUT_MS");
    }

    #[test]
    fn keyword_lists_are_configurable() {
        let c = config(&[("HELPDESK_URGENT_KEYWORDS", "asap, darurat")]).unwrap();
        assert_eq!(c.priority_keywords.urgent, vec!["asap", "darurat"]);
        assert_eq!(c.priority_keywords.low, PriorityKeywords::default().low);
    }
}
