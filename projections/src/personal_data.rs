//! Customers' personal data, sealed with a key per customer (brief rule 11).
//!
//! Names, handles and message texts enter events only as [`Sealed`] text: AES-256-GCM with
//! the customer's own key, a fresh nonce per value and the customer id as associated data
//! (a value cannot be moved to another customer). The keys live in `customer_keys`, outside
//! the event log; deleting a customer's key erases everything sealed with it, while the
//! log, its replay and its audit chain stay as they were. A value whose key is gone reads
//! as [`ERASED`].
//!
//! A customer erased who writes again gets a new key, so one conversation can hold values
//! sealed with an erased key beside values sealed with the new one. Each sealed value
//! therefore names its key by a fingerprint (`v2:<fingerprint>:<nonce and ciphertext>`):
//! a value of another key reads as [`ERASED`], while a value of *this* key that does not
//! open is corruption and is reported as such.

use std::collections::HashMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Utc;
use domain::conversation::Sealed;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::{timestamp, Database, DbError};
use crate::on_backend;

/// What a sealed value reads as once its customer's key was erased.
pub const ERASED: &str = "[erased]";

/// The prefix of values sealed before keys had fingerprints (still opened).
const PREFIX_V1: &str = "v1:";

/// The prefix of values sealed now: `v2:<key fingerprint>:<base64 nonce and ciphertext>`.
const PREFIX_V2: &str = "v2:";

/// A customer's key, ready to seal and open.
#[derive(Clone)]
pub struct CustomerKey {
    customer_id: String,
    cipher: Aes256Gcm,
    /// Names the key in the values it seals: the first 8 bytes of the SHA-256 of its
    /// material, in hex (says nothing about the material or the texts).
    fingerprint: String,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("CustomerKey")
            .field("customer_id", &self.customer_id)
            .finish_non_exhaustive()
    }
}

impl CustomerKey {
    /// The key of `customer_id` from its stored form (the `secret_key` column of
    /// `customer_keys`): for code that reads the table itself, such as a projection inside
    /// its transaction.
    pub fn from_stored(customer_id: &str, stored: &str) -> Result<Self, DbError> {
        let bytes = STANDARD
            .decode(stored)
            .map_err(|e| DbError::Corrupt(format!("customer key of {customer_id}: {e}")))?;
        if bytes.len() != 32 {
            return Err(DbError::Corrupt(format!(
                "customer key of {customer_id} has {} bytes",
                bytes.len()
            )));
        }
        Ok(Self {
            customer_id: customer_id.to_string(),
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
            fingerprint: hex::encode(&Sha256::digest(&bytes)[..8]),
        })
    }

    /// Seals `plain` for this customer.
    pub fn seal(&self, plain: &str) -> Sealed {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: self.customer_id.as_bytes(),
                },
            )
            // AES-GCM fails only beyond 64 GiB of plaintext; texts are capped far below.
            .expect("AES-GCM encryption of a bounded text");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Sealed(format!(
            "{PREFIX_V2}{}:{}",
            self.fingerprint,
            STANDARD.encode(bytes)
        ))
    }

    /// Reads a value of this customer: opened when sealed with this key, [`ERASED`] when
    /// sealed with an earlier key of the customer (erased since).
    pub fn read(&self, sealed: &Sealed) -> Result<String, DbError> {
        if self.sealed_with_another_key(sealed) {
            return Ok(ERASED.to_string());
        }
        self.open(sealed)
    }

    /// Whether `sealed` names a key other than this one.
    fn sealed_with_another_key(&self, sealed: &Sealed) -> bool {
        sealed
            .0
            .strip_prefix(PREFIX_V2)
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(fingerprint, _)| fingerprint != self.fingerprint)
    }

    /// Opens a value sealed with this key; any other value is an error.
    pub fn open(&self, sealed: &Sealed) -> Result<String, DbError> {
        let corrupt = |why: &str| {
            DbError::Corrupt(format!(
                "sealed value of customer {}: {why}",
                self.customer_id
            ))
        };
        let body = match sealed.0.strip_prefix(PREFIX_V2) {
            Some(rest) => match rest.split_once(':') {
                Some((fingerprint, body)) if fingerprint == self.fingerprint => body,
                Some(_) => return Err(corrupt("sealed with another key")),
                None => return Err(corrupt("no key fingerprint")),
            },
            None => sealed
                .0
                .strip_prefix(PREFIX_V1)
                .ok_or_else(|| corrupt("no v1 or v2 prefix"))?,
        };
        let bytes = STANDARD.decode(body).map_err(|_| corrupt("not base64"))?;
        if bytes.len() < 12 {
            return Err(corrupt("too short"));
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: self.customer_id.as_bytes(),
                },
            )
            .map_err(|_| corrupt("does not open with the customer's key"))?;
        String::from_utf8(plain).map_err(|_| corrupt("not UTF-8"))
    }
}

/// The key of `customer_id`, created on first use. Two replicas creating it at once agree
/// on one key (the first insert wins; both read it back).
pub async fn key_for(
    db: &Database,
    organization: &str,
    customer_id: &str,
) -> Result<CustomerKey, DbError> {
    let mut fresh = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut fresh);
    let fresh = STANDARD.encode(fresh);
    let stored: String = on_backend!(db, |pool| {
        sqlx::query(
            "INSERT INTO customer_keys (customer_id, organization_id, secret_key, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(customer_id)
        .bind(organization)
        .bind(&fresh)
        .bind(timestamp(Utc::now()))
        .execute(pool)
        .await?;
        sqlx::query_scalar(
            "SELECT secret_key FROM customer_keys WHERE customer_id = $1 AND organization_id = $2",
        )
        .bind(customer_id)
        .bind(organization)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| {
            DbError::Corrupt(format!(
                "customer {customer_id} belongs to another organization"
            ))
        })?
    });
    CustomerKey::from_stored(customer_id, &stored)
}

/// The keys of these customers that still exist (erased customers are missing).
pub async fn keys(
    db: &Database,
    organization: &str,
    customer_ids: &[String],
) -> Result<HashMap<String, CustomerKey>, DbError> {
    let mut found = HashMap::new();
    // One statement per few hundred ids keeps the statement small on both backends.
    for chunk in customer_ids.chunks(200) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT customer_id, secret_key FROM customer_keys
              WHERE organization_id = $1 AND customer_id IN ({})",
            placeholders.join(", ")
        );
        let rows: Vec<(String, String)> = on_backend!(db, |pool| {
            let mut query = sqlx::query_as(&sql).bind(organization);
            for id in chunk {
                query = query.bind(id);
            }
            query.fetch_all(pool).await?
        });
        for (customer_id, stored) in rows {
            let key = CustomerKey::from_stored(&customer_id, &stored)?;
            found.insert(customer_id, key);
        }
    }
    Ok(found)
}

/// What [`erase_customer`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erasure {
    /// The key was deleted now: everything sealed with it reads as [`ERASED`].
    Erased,
    /// The customer is known but was erased before.
    AlreadyErased,
    /// No such customer in the organization.
    Unknown,
}

/// Erases a customer's personal data (brief rule 11): deletes their key, and in the same
/// transaction the only plaintext derived from it that a read model keeps (the chatbot's
/// unmatched questions, see [`crate::chatbot::forget_customer`]). The log is not touched,
/// so replay and the audit chain still hold.
pub async fn erase_customer(
    db: &Database,
    organization: &str,
    customer_id: &str,
) -> Result<Erasure, DbError> {
    let mut tx = db.begin().await?;
    let deleted = on_backend!(&mut tx, |t| sqlx::query(
        "DELETE FROM customer_keys WHERE customer_id = $1 AND organization_id = $2"
    )
    .bind(customer_id)
    .bind(organization)
    .execute(&mut **t)
    .await?
    .rows_affected());
    crate::chatbot::forget_customer(&mut tx, organization, customer_id).await?;
    tx.commit().await?;
    if deleted > 0 {
        return Ok(Erasure::Erased);
    }
    let known: i64 = on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT COUNT(*) FROM conversations WHERE customer_id = $1 AND organization_id = $2"
    )
    .bind(customer_id)
    .bind(organization)
    .fetch_one(pool)
    .await?);
    Ok(if known > 0 {
        Erasure::AlreadyErased
    } else {
        Erasure::Unknown
    })
}

/// Opens `sealed` with the customer's key when it still exists and sealed it, else
/// [`ERASED`] (see [`CustomerKey::read`]).
pub fn open_or_erased(
    keys: &HashMap<String, CustomerKey>,
    customer_id: &str,
    sealed: &Sealed,
) -> Result<String, DbError> {
    match keys.get(customer_id) {
        Some(key) => key.read(sealed),
        None => Ok(ERASED.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(customer: &str) -> CustomerKey {
        CustomerKey::from_stored(customer, &STANDARD.encode([7u8; 32])).expect("key")
    }

    #[test]
    fn sealed_values_open_with_their_key_only() {
        let alice = key("alice");
        let sealed = alice.seal("Saya mau bayar tagihan");
        assert!(sealed.0.starts_with("v2:"));
        assert!(!sealed.0.contains("tagihan"));
        assert_eq!(alice.open(&sealed).expect("open"), "Saya mau bayar tagihan");
        // Same text, fresh nonce: equal texts do not look equal in the log.
        assert_ne!(alice.seal("Saya mau bayar tagihan"), sealed);
        // The same key material under another customer id does not open it (bound by AAD).
        assert!(key("bob").open(&sealed).is_err());
        assert!(alice.open(&Sealed("v1:AAAA".into())).is_err());
        assert!(alice.open(&Sealed("plain".into())).is_err());
        // Values sealed before fingerprints still open.
        let v1 = Sealed(format!("v1:{}", sealed.0.rsplit(':').next().expect("body")));
        assert_eq!(alice.open(&v1).expect("open v1"), "Saya mau bayar tagihan");
    }

    #[test]
    fn a_value_of_an_erased_key_reads_as_erased_beside_the_new_keys_values() {
        let old = key("alice");
        let new = CustomerKey::from_stored("alice", &STANDARD.encode([9u8; 32])).expect("key");
        let before = old.seal("tagihan saya salah");
        let after = new.seal("halo lagi");
        assert_eq!(new.read(&before).expect("read"), ERASED);
        assert_eq!(new.read(&after).expect("read"), "halo lagi");
        // A value that names this key yet does not open is corruption, not erasure.
        let mut tampered = after.0.clone();
        tampered.replace_range(tampered.len() - 4.., "AAAA");
        assert!(new.read(&Sealed(tampered)).is_err());
        assert!(new.open(&before).is_err());
    }

    #[test]
    fn a_missing_key_reads_as_erased() {
        let alice = key("alice");
        let sealed = alice.seal("+62 812 0000 1111");
        let mut keys = HashMap::new();
        assert_eq!(
            open_or_erased(&keys, "alice", &sealed).expect("erased"),
            ERASED
        );
        keys.insert("alice".to_string(), alice);
        assert_eq!(
            open_or_erased(&keys, "alice", &sealed).expect("open"),
            "+62 812 0000 1111"
        );
    }
}
