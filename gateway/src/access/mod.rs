//! Who may do what, the same for every transport: identities with their secrets (an argon2
//! password hash for MQTT and HTTP Basic, SHA-256 digests of bearer tokens for HTTP and
//! CoAP, a client-certificate subject) and their grants (the (dataset, source) pairs they
//! may write, the values they may write into bound columns (`binding`), the datasets they
//! may query, the MQTT topics they may subscribe to).
//!
//! Passwords are hashed with argon2, which is slow on purpose: a verified password is
//! remembered (by its SHA-256, never in clear) so that a device reconnecting every minute
//! costs one hash. Tokens are long random strings, so a SHA-256 digest is enough for them
//! and is looked up directly.

mod binding;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::password_hash::PasswordVerifier;
use argon2::password_hash::phc::PasswordHash;
use sha2::{Digest, Sha256};

pub use binding::{Caller, GrantBinding, PLACEHOLDERS, Template};

use crate::ingest::{ColumnBinding, Pattern};
use crate::routes::Resolved;

/// Remembered password verifications, at most.
const VERIFIED_CACHE: usize = 4096;
/// Password verifications running at once (each takes about 19 MiB and a core for a while).
const VERIFYING: usize = 2;

/// What an identity (or an anonymous client) may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// `dataset/source` patterns it may write to: `gps/vendorA`, `gps/*`, `*`.
    pub write: Vec<String>,
    /// Datasets it may read (tail, query, transfer, quarantine): `gps`, `*`.
    pub query: Vec<String>,
    /// MQTT topic filters it may subscribe to (`replies/vendorA/#`).
    pub subscribe: Vec<String>,
    /// What it may write into bound columns (its device ids), on the sources it writes.
    pub bind: Vec<GrantBinding>,
    /// Whether it may read every dataset's metrics (a Prometheus scraper); without it,
    /// `/metrics` shows only the series of the datasets it may query.
    pub metrics: bool,
}

impl Grants {
    /// Everything: what anonymous clients get when the gateway runs without a configuration.
    pub fn all() -> Grants {
        Grants {
            write: vec!["*".into()],
            query: vec!["*".into()],
            subscribe: vec!["#".into()],
            bind: Vec::new(),
            metrics: true,
        }
    }

    pub fn may_write(&self, dataset: &str, source: &str) -> bool {
        self.write.iter().any(|grant| covers_source(grant, dataset, source))
    }

    /// The bindings that hold for a write to (dataset, source).
    pub fn bindings_on<'g>(&'g self, dataset: &str, source: &str) -> impl Iterator<Item = &'g GrantBinding> {
        let (dataset, source) = (dataset.to_owned(), source.to_owned());
        self.bind.iter().filter(move |b| {
            b.sources.is_empty() || b.sources.iter().any(|s| covers_source(s, &dataset, &source))
        })
    }

    /// Whether any source of `dataset` may be written.
    pub fn may_write_some(&self, dataset: &str) -> bool {
        self.write
            .iter()
            .any(|grant| grant == "*" || grant.split('/').next().is_some_and(|d| d == "*" || d == dataset))
    }

    pub fn may_query(&self, dataset: &str) -> bool {
        self.query.iter().any(|grant| grant == "*" || grant == dataset)
    }

    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.subscribe.iter().any(|grant| topic_filter_covers(grant, filter))
    }
}

/// One configured identity.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    /// An argon2 PHC string (`$argon2id$...`).
    pub password_hash: Option<String>,
    /// Lower-case hex SHA-256 digests of its bearer tokens.
    pub token_sha256: Vec<String>,
    /// The subject of its client certificate (`CN=tracker-17,O=Acme`), or its common name.
    pub cert_subject: Option<String>,
    /// MQTT client ids bound to it (`vendorA-*`): it may use only these, and nobody else may.
    pub client_ids: Vec<String>,
    pub grants: Grants,
}

/// Who a request is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    Identity(String),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("anonymous"),
            Principal::Identity(name) => f.write_str(name),
        }
    }
}

/// Why a client was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("credentials are required")]
    NoCredentials,
    #[error("the credentials are not valid")]
    BadCredentials,
}

pub struct AccessTable {
    identities: Vec<Identity>,
    /// What clients without credentials get; `None`: they are refused.
    anonymous: Option<Grants>,
    by_token: HashMap<String, usize>,
    /// Keyed SHA-256 of (name, password) verified before, to the identity's index.
    verified: Mutex<HashMap<[u8; 32], usize>>,
    cache_key: [u8; 32],
    verifying: tokio::sync::Semaphore,
}

impl AccessTable {
    pub fn new(identities: Vec<Identity>, anonymous: Option<Grants>) -> AccessTable {
        let mut by_token = HashMap::new();
        for (i, identity) in identities.iter().enumerate() {
            for token in &identity.token_sha256 {
                by_token.insert(token.to_ascii_lowercase(), i);
            }
        }
        let mut cache_key = [0u8; 32];
        // Without randomness the key is still unknown outside the process: the clock and pid.
        if getrandom::fill(&mut cache_key).is_err() {
            let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
            cache_key = Sha256::digest(seed.as_bytes()).into();
        }
        let verifying = tokio::sync::Semaphore::new(VERIFYING);
        AccessTable {
            identities,
            anonymous,
            by_token,
            verified: Mutex::new(HashMap::new()),
            cache_key,
            verifying,
        }
    }

    /// Anyone may do anything: the gateway without a configuration (loopback only).
    pub fn open() -> AccessTable {
        AccessTable::new(Vec::new(), Some(Grants::all()))
    }

    pub fn allows_anonymous(&self) -> bool {
        self.anonymous.is_some()
    }

    pub fn identities(&self) -> &[Identity] {
        &self.identities
    }

    /// A client that presented nothing.
    pub fn anonymous(&self) -> Result<Principal, Denied> {
        self.anonymous.as_ref().map(|_| Principal::Anonymous).ok_or(Denied::NoCredentials)
    }

    /// As `by_password`, off the caller's runtime and at most `VERIFYING` at a time: argon2
    /// takes tens of milliseconds and megabytes on purpose, so wrong passwords sent in a
    /// flood must queue, not exhaust the machine.
    pub async fn by_password_async(
        self: &Arc<Self>,
        name: &str,
        password: &[u8],
    ) -> Result<Principal, Denied> {
        let _permit = self.verifying.acquire().await.map_err(|_| Denied::BadCredentials)?;
        let (table, name, password) = (self.clone(), name.to_owned(), password.to_vec());
        tokio::task::spawn_blocking(move || table.by_password(&name, &password))
            .await
            .unwrap_or(Err(Denied::BadCredentials))
    }

    pub fn by_password(&self, name: &str, password: &[u8]) -> Result<Principal, Denied> {
        // Keyed with a secret of this process: the cache never holds a plain digest of a
        // password.
        let mut key = Sha256::new();
        key.update(self.cache_key);
        key.update((name.len() as u64).to_le_bytes());
        key.update(name.as_bytes());
        key.update(password);
        let key: [u8; 32] = key.finalize().into();
        if let Some(&i) = self.verified.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(Principal::Identity(self.identities[i].name.clone()));
        }
        let found =
            self.identities.iter().enumerate().find(|(_, id)| id.name == name && id.password_hash.is_some());
        let Some((i, identity)) = found else {
            // The same work for a name that is not there, so that timing does not tell.
            let _ = PasswordHash::new(dummy_hash())
                .map(|h| argon2::Argon2::default().verify_password(password, &h));
            return Err(Denied::BadCredentials);
        };
        let hash = identity.password_hash.as_deref().ok_or(Denied::BadCredentials)?;
        let parsed = PasswordHash::new(hash).map_err(|_| Denied::BadCredentials)?;
        argon2::Argon2::default().verify_password(password, &parsed).map_err(|_| Denied::BadCredentials)?;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_CACHE {
            verified.clear();
        }
        verified.insert(key, i);
        Ok(Principal::Identity(identity.name.clone()))
    }

    pub fn by_token(&self, token: &str) -> Result<Principal, Denied> {
        let digest = hex::encode(Sha256::digest(token.as_bytes()));
        self.by_token
            .get(&digest)
            .map(|&i| Principal::Identity(self.identities[i].name.clone()))
            .ok_or(Denied::BadCredentials)
    }

    /// A client certificate's subject (RFC 4514 string) or common name.
    pub fn by_certificate(&self, subject: &str, common_name: Option<&str>) -> Result<Principal, Denied> {
        self.identities
            .iter()
            .find(|id| id.cert_subject.as_deref().is_some_and(|s| s == subject || Some(s) == common_name))
            .map(|id| Principal::Identity(id.name.clone()))
            .ok_or(Denied::BadCredentials)
    }

    pub fn grants(&self, principal: &Principal) -> Option<&Grants> {
        match principal {
            Principal::Anonymous => self.anonymous.as_ref(),
            Principal::Identity(name) => {
                self.identities.iter().find(|id| &id.name == name).map(|id| &id.grants)
            }
        }
    }

    pub fn may_write_some(&self, principal: &Principal, dataset: &str) -> bool {
        self.grants(principal).is_some_and(|g| g.may_write_some(dataset))
    }

    pub fn may_write(&self, principal: &Principal, dataset: &str, source: &str) -> bool {
        self.grants(principal).is_some_and(|g| g.may_write(dataset, source))
    }

    pub fn may_query(&self, principal: &Principal, dataset: &str) -> bool {
        self.grants(principal).is_some_and(|g| g.may_query(dataset))
    }

    pub fn may_subscribe(&self, principal: &Principal, filter: &str) -> bool {
        self.grants(principal).is_some_and(|g| g.may_subscribe(filter))
    }

    /// Whether `principal` may use MQTT client id `client_id` as far as the configuration
    /// says: an id that an identity's `client_ids` patterns match is that identity's alone,
    /// and an identity with patterns uses only ids they match. `Err` says why not.
    pub fn may_use_client_id(&self, principal: &Principal, client_id: &str) -> Result<(), String> {
        let matches = |id: &Identity| id.client_ids.iter().any(|p| Pattern::parse(p).matches(client_id));
        if let Some(owner) = self.identities.iter().find(|id| matches(id)) {
            return match principal {
                Principal::Identity(name) if *name == owner.name => Ok(()),
                _ => Err(format!("client id '{client_id}' is bound to identity '{}'", owner.name)),
            };
        }
        match principal {
            Principal::Identity(name) => match self.identities.iter().find(|id| &id.name == name) {
                Some(id) if !id.client_ids.is_empty() => {
                    Err(format!("{name} may use only the client ids {:?}, not '{client_id}'", id.client_ids))
                }
                _ => Ok(()),
            },
            Principal::Anonymous => Ok(()),
        }
    }

    /// The rules every record of a write from `caller` to `target` (whose push source is
    /// `source`) must keep: the route's captures, where the route binds them, and the
    /// bindings of the caller's grant. Every transport hands them to the pipeline with the
    /// payload, so they hold the same over HTTP, MQTT and CoAP.
    pub fn bindings(&self, caller: &Caller, target: &Resolved, source: &str) -> Vec<ColumnBinding> {
        let mut bindings = target.bindings();
        if let Some(grants) = self.grants(caller.principal) {
            bindings.extend(grants.bindings_on(&target.dataset, source).map(|b| b.bind(caller)));
        }
        bindings
    }
}

/// Whether a `write` pattern (`gps/vendorA`, `gps/*`, `gps`, `*`) covers (dataset, source).
fn covers_source(grant: &str, dataset: &str, source: &str) -> bool {
    match grant.split_once('/') {
        _ if grant == "*" => true,
        Some((d, s)) => (d == "*" || d == dataset) && (s == "*" || s == source),
        None => grant == dataset,
    }
}

/// Whether topic filter `grant` matches every topic that `filter` can (MQTT wildcards).
fn topic_filter_covers(grant: &str, filter: &str) -> bool {
    let mut grant = grant.split('/');
    let mut filter = filter.split('/');
    loop {
        match (grant.next(), filter.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(f)) if f != "#" => {}
            (Some(g), Some(f)) if g == f => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A hash no password matches, to spend the same time on an unknown name.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(b"not a password of anyone's").unwrap_or_default())
}

/// The argon2 hash of a password, for the configuration file.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default().hash_password(password).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// The SHA-256 digest of a token, for the configuration file.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::BindingRule;

    fn table() -> AccessTable {
        let vendor_a = Identity {
            name: "vendorA".into(),
            password_hash: Some(hash_password(b"secret-a").unwrap()),
            token_sha256: vec![token_digest("tok-a")],
            cert_subject: Some("CN=vendorA".into()),
            client_ids: vec!["vendorA-*".into()],
            grants: Grants {
                write: vec!["gps/vendorA".into()],
                query: vec!["gps".into()],
                subscribe: vec!["replies/vendorA/#".into()],
                bind: vec![GrantBinding {
                    column: "device_id".into(),
                    value: Template::parse("A-*").unwrap(),
                    sources: vec!["gps/vendorA".into()],
                }],
                metrics: false,
            },
        };
        AccessTable::new(vec![vendor_a], None)
    }

    #[test]
    fn credentials_map_to_identities_and_grants_stay_within_their_routes() {
        let t = table();
        let a = Principal::Identity("vendorA".into());
        assert_eq!(t.by_password("vendorA", b"secret-a"), Ok(a.clone()));
        assert_eq!(t.by_password("vendorA", b"secret-a"), Ok(a.clone()), "remembered");
        assert_eq!(t.by_password("vendorA", b"wrong"), Err(Denied::BadCredentials));
        assert_eq!(t.by_password("nobody", b"secret-a"), Err(Denied::BadCredentials));
        assert_eq!(t.by_token("tok-a"), Ok(a.clone()));
        assert_eq!(t.by_token("tok-b"), Err(Denied::BadCredentials));
        assert_eq!(t.by_certificate("CN=vendorA", None), Ok(a.clone()));
        assert_eq!(t.anonymous(), Err(Denied::NoCredentials));
        assert!(t.may_write(&a, "gps", "vendorA"));
        assert!(!t.may_write(&a, "gps", "vendorB"));
        assert!(t.may_query(&a, "gps") && !t.may_query(&a, "fleet"));
        assert!(t.may_subscribe(&a, "replies/vendorA/A-1"));
        assert!(!t.may_subscribe(&a, "replies/#"));
        assert!(!t.may_write(&Principal::Anonymous, "gps", "vendorA"));
    }

    #[test]
    fn client_ids_bound_by_configuration_belong_to_their_identity() {
        let t = table();
        let a = Principal::Identity("vendorA".into());
        assert_eq!(t.may_use_client_id(&a, "vendorA-17"), Ok(()));
        assert!(t.may_use_client_id(&a, "tracker-17").is_err(), "vendorA uses only its own ids");
        assert!(t.may_use_client_id(&Principal::Anonymous, "vendorA-17").is_err());
        assert_eq!(t.may_use_client_id(&Principal::Anonymous, "tracker-17"), Ok(()));
    }

    #[test]
    fn bindings_come_from_the_grant_on_its_sources_and_from_binding_routes() {
        let t = table();
        let a = Principal::Identity("vendorA".into());
        let caller =
            Caller { principal: &a, transport: crate::routes::Transport::Http, client_id: None, cert: None };
        let mut target = Resolved {
            dataset: "gps".into(),
            source: Some("vendorA".into()),
            columns: vec![("device_id".into(), "A-7".into())],
            route: "trackers/{device_id}/gps".into(),
            bind_captures: false,
        };
        let bindings = t.bindings(&caller, &target, "vendorA");
        assert_eq!(bindings.len(), 1);
        assert_eq!(bindings[0].rule, BindingRule::Pattern(Pattern::parse("A-*")));
        assert!(bindings[0].by.contains("vendorA"));
        assert!(t.bindings(&caller, &target, "vendorB").is_empty(), "bound on gps/vendorA only");
        target.bind_captures = true;
        let bindings = t.bindings(&caller, &target, "vendorA");
        assert_eq!(bindings.len(), 2);
        assert_eq!(bindings[0].rule, BindingRule::Pattern(Pattern::parse("A-7")));
        assert_eq!(bindings[0].by, "route 'trackers/{device_id}/gps'");
    }

    #[test]
    fn topic_filters_cover_narrower_ones() {
        assert!(topic_filter_covers("a/+/c", "a/b/c"));
        assert!(topic_filter_covers("a/#", "a/b/#"));
        assert!(!topic_filter_covers("a/+/c", "a/#"));
        assert!(!topic_filter_covers("a/+", "a/+/c"));
        assert!(topic_filter_covers("#", "anything/at/all"));
    }
}
