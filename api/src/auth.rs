//! Bearer tokens: HS256 JWTs with `sub`, `org`, `role`, `exp`.

use domain::{Actor, Role};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

use crate::config::Config;

/// The claims of a helpdesk token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The subject: a user, agent or integration id.
    pub sub: String,
    /// The organization the subject belongs to.
    pub org: String,
    /// `admin`, `agent`, `analyst` or `service`.
    pub role: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issue time, seconds since the epoch.
    #[serde(default)]
    pub iat: u64,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its organization: every read and write is confined to it.
    pub organization: String,
    /// Its id and role.
    pub actor: Actor,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// Bad signature, malformed, expired, or unknown role.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Why the signing secret is not available.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// PostgreSQL deployments must share one explicit secret across replicas.
    #[error("HELPDESK_JWT_SECRET must be set when DATABASE_URL points at PostgreSQL (all replicas must share one secret)")]
    MissingForPostgres,
    /// The generated secret file could not be read or written.
    #[error("cannot read or create the JWT secret file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The IO failure.
        source: std::io::Error,
    },
}

/// Signs and checks tokens with one HS256 secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    /// Keys from a secret.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// The configured secret: `HELPDESK_JWT_SECRET`, or on SQLite a random one created once
    /// in the data folder and reused.
    pub fn from_config(config: &Config) -> Result<Self, SecretError> {
        if let Some(secret) = &config.jwt_secret {
            return Ok(Self::new(secret.as_bytes()));
        }
        match config.sqlite_data_folder() {
            None => Err(SecretError::MissingForPostgres),
            Some(folder) => Ok(Self::new(&stored_secret(&folder.join("jwt-secret"))?)),
        }
    }

    /// Issues a token for `sub` of `org` with `role`, valid for `ttl`.
    pub fn issue(&self, sub: &str, org: &str, role: Role, ttl: Duration) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: sub.into(),
            org: org.into(),
            role: role.as_str().into(),
            exp: now + ttl.as_secs(),
            iat: now,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// Checks an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let header = header.map(str::trim).filter(|h| !h.is_empty());
        let token = match header {
            None => return Err(AuthError::Missing),
            Some(h) => h
                .strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
                .ok_or_else(|| AuthError::Invalid("expected 'Bearer <token>'".into()))?,
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        let claims = decode::<Claims>(token.trim(), &self.decoding, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .claims;
        let role: Role = claims.role.parse().map_err(AuthError::Invalid)?;
        if claims.org.trim().is_empty() || claims.sub.trim().is_empty() {
            return Err(AuthError::Invalid("empty org or sub".into()));
        }
        Ok(Caller {
            organization: claims.org,
            actor: Actor::new(claims.sub, role),
        })
    }
}

fn stored_secret(path: &Path) -> Result<Vec<u8>, SecretError> {
    let failed = |source| SecretError::File {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(failed)?;
    }
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // create_new: if two processes race, one wins and the other reads the winner's secret.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            use std::io::Write;
            file.write_all(secret.as_bytes()).map_err(failed)?;
            file.sync_all().map_err(failed)?;
            Ok(secret.into_bytes())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(path)
            .map(|s| s.trim().as_bytes().to_vec())
            .map_err(failed),
        Err(e) => Err(failed(e)),
    }
}

/// Parses a token lifetime such as `90s`, `30m`, `24h` or `7d`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid ttl '{text}': expected e.g. 30m, 24h, 7d"))?;
    let seconds = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("invalid ttl unit in '{text}': use s, m, h or d")),
    };
    if seconds == 0 {
        return Err("ttl must be positive".into());
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_authenticate() {
        let keys = TokenKeys::new(b"secret");
        let token = keys.issue("ann", "acme", Role::Agent, Duration::from_secs(60));
        let caller = keys.authenticate(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(caller.organization, "acme");
        assert_eq!(caller.actor, Actor::new("ann", Role::Agent));
    }

    #[test]
    fn missing_foreign_and_expired_tokens_are_refused() {
        let keys = TokenKeys::new(b"secret");
        assert_eq!(keys.authenticate(None), Err(AuthError::Missing));
        let other =
            TokenKeys::new(b"other").issue("a", "acme", Role::Admin, Duration::from_secs(60));
        assert!(matches!(
            keys.authenticate(Some(&format!("Bearer {other}"))),
            Err(AuthError::Invalid(_))
        ));
        let claims = Claims {
            sub: "a".into(),
            org: "acme".into(),
            role: "admin".into(),
            exp: 1_000,
            iat: 0,
        };
        let expired = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(matches!(
            keys.authenticate(Some(&format!("Bearer {expired}"))),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            keys.authenticate(Some("Basic abc")),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn ttl_parses_units() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_ttl("0h").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn the_generated_secret_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("helpdesk-secret-{}", uuid::Uuid::new_v4()));
        let path = dir.join("jwt-secret");
        let first = stored_secret(&path).unwrap();
        let second = stored_secret(&path).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 64);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
