//! `[[kafka]]`: topics `serve` consumes into push sources (see `crate::transport::kafka`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Size, client_tls, invalid};
use crate::routes::Resolved;
use crate::transport::kafka::{KafkaOptions, RecordField, Sasl, SaslMechanism, StartAt, Topics};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers: `"host:9092"`, `"a:9092,b:9092"` or a list.
    #[serde(alias = "bootstrap_servers")]
    pub brokers: Brokers,
    /// One topic, or several, or a regular expression over the cluster's topic names.
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default)]
    pub topic_pattern: Option<String>,
    /// Where the records go; without `dataset`, each topic takes the route table's way
    /// (`[[route]]` with `transports = ["kafka"]`, `telemetry.{vendor}.gps`).
    #[serde(default)]
    pub dataset: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    /// Where a partition without a recorded offset starts: `earliest` (the default),
    /// `latest`, or a time (`2026-12-01T00:00:00Z`).
    #[serde(default = "default_start")]
    pub start: String,
    /// Columns the payload leaves out, filled from the record: `key`, `timestamp`, `topic`,
    /// `partition`, `offset` or `header:NAME`.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// PEM CA of the brokers: TLS to them; with `tls_cert`/`tls_key`, a client certificate.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, with `username` and `password`.
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// How long a fetch waits for records at the head of a partition.
    #[serde(default = "default_max_wait", with = "super::humantime_serde")]
    pub max_wait: Duration,
    /// At most this much per fetch of one partition.
    #[serde(default = "default_fetch_bytes")]
    pub fetch_bytes: Size,
    /// How often topics and partitions are looked up again (new ones are consumed).
    #[serde(default = "default_refresh", with = "super::humantime_serde")]
    pub refresh: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Brokers {
    One(String),
    List(Vec<String>),
}

fn default_start() -> String {
    "earliest".to_owned()
}

fn default_max_wait() -> Duration {
    Duration::from_millis(500)
}

fn default_fetch_bytes() -> Size {
    Size(1024 * 1024)
}

fn default_refresh() -> Duration {
    Duration::from_secs(60)
}

/// Checks the `[[kafka]]` entries.
pub fn check(entries: &[KafkaConfig]) -> Result<Vec<KafkaOptions>, ConfigError> {
    let mut checked = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let field = |f: &str| format!("kafka[{i}].{f}");
        let brokers: Vec<String> = match &entry.brokers {
            Brokers::One(list) => list.split(',').map(|b| b.trim().to_owned()).collect(),
            Brokers::List(list) => list.iter().map(|b| b.trim().to_owned()).collect(),
        };
        if brokers.is_empty() || brokers.iter().any(|b| b.is_empty() || !b.contains(':')) {
            return Err(invalid(
                field("brokers"),
                "give host:port of one broker or more (\"127.0.0.1:9092\")",
            ));
        }
        let topics = match (&entry.topic, entry.topics.as_slice(), &entry.topic_pattern) {
            (Some(topic), [], None) => Topics::Names(vec![topic.clone()]),
            (None, names, None) if !names.is_empty() => Topics::Names(names.to_vec()),
            (None, [], Some(pattern)) => Topics::Pattern(
                regex::Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| invalid(field("topic_pattern"), e.to_string()))?,
            ),
            _ => return Err(invalid(field("topic"), "give one of topic, topics or topic_pattern")),
        };
        if let Topics::Names(names) = &topics {
            if let Some(bad) = names.iter().find(|t| !is_topic_name(t)) {
                return Err(invalid(field("topics"), format!("'{bad}' is not a Kafka topic name")));
            }
        }
        let target = match (&entry.dataset, &entry.source) {
            (Some(dataset), source) => Some(Resolved {
                dataset: dataset.clone(),
                source: source.clone(),
                columns: Vec::new(),
                route: format!("kafka[{i}]"),
                bind_captures: false,
            }),
            (None, Some(_)) => return Err(invalid(field("source"), "give the dataset too")),
            (None, None) => None,
        };
        let start = match entry.start.as_str() {
            "earliest" => StartAt::Earliest,
            "latest" => StartAt::Latest,
            time => StartAt::Time(time.parse().map_err(|e| {
                invalid(field("start"), format!("'{time}' is not earliest, latest or an RFC 3339 time: {e}"))
            })?),
        };
        let columns = entry
            .columns
            .iter()
            .map(|(column, from)| {
                RecordField::parse(from)
                    .map(|f| (column.clone(), f))
                    .map_err(|e| invalid(field("columns"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = client_tls(&field, &entry.tls_ca, &entry.tls_cert, &entry.tls_key)?;
        let sasl = match (&entry.sasl_mechanism, &entry.username, &entry.password) {
            (None, None, None) => None,
            (Some(mechanism), Some(username), Some(password)) => Some(Sasl {
                mechanism: SaslMechanism::parse(mechanism)
                    .map_err(|e| invalid(field("sasl_mechanism"), e))?,
                username: username.clone(),
                password: password.clone(),
            }),
            _ => {
                return Err(invalid(
                    field("sasl_mechanism"),
                    "SASL needs sasl_mechanism, username and password",
                ));
            }
        };
        if entry.max_wait.is_zero() || entry.refresh.is_zero() || entry.fetch_bytes.0 == 0 {
            return Err(invalid(field("max_wait"), "max_wait, refresh and fetch_bytes must be above 0"));
        }
        checked.push(KafkaOptions {
            name: format!("kafka[{i}]"),
            brokers,
            topics,
            target,
            start,
            columns,
            client_id: entry.client_id.clone().unwrap_or_else(|| "odf-gateway".to_owned()),
            tls,
            sasl,
            max_wait: entry.max_wait,
            fetch_bytes: entry.fetch_bytes.0.min(i32::MAX as u64) as i32,
            refresh: entry.refresh,
        });
    }
    Ok(checked)
}

/// Kafka's rule for topic names.
fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    fn checked(text: &str) -> Result<Vec<KafkaOptions>, ConfigError> {
        check(&RawConfig::from_toml(text).map_err(|e| invalid(e.field, e.message))?.kafka)
    }

    #[test]
    fn the_smallest_entry_reads_as_written() {
        let options = checked(
            "[[kafka]]\nbrokers = \"127.0.0.1:9092\"\ntopic = \"trackers.vendorA\"\ndataset = \"gps\"\nsource = \"vendorA\"\n",
        )
        .unwrap();
        let o = &options[0];
        assert_eq!(
            (o.name.as_str(), o.brokers.as_slice()),
            ("kafka[0]", ["127.0.0.1:9092".to_owned()].as_slice())
        );
        assert!(matches!(&o.topics, Topics::Names(n) if n == &["trackers.vendorA"]));
        let target = o.target.as_ref().unwrap();
        assert_eq!((target.dataset.as_str(), target.source.as_deref()), ("gps", Some("vendorA")));
        assert_eq!(o.start, StartAt::Earliest);
    }

    #[test]
    fn the_full_entry_and_its_mistakes() {
        let options = checked(
            r#"[[kafka]]
bootstrap_servers = ["a:9092", "b:9092"]
topic_pattern = "telemetry\\..*\\.gps"
start = "2026-12-01T00:00:00Z"
columns = { device_id = "key", vendor = "header:x-vendor", at = "timestamp" }
sasl_mechanism = "scram-sha-512"
username = "gw"
password = "secret"
"#,
        )
        .unwrap();
        let o = &options[0];
        assert!(
            matches!(&o.topics, Topics::Pattern(p) if p.is_match("telemetry.acme.gps") && !p.is_match("x.telemetry.acme.gps"))
        );
        assert!(matches!(o.start, StartAt::Time(_)));
        assert!(o.columns.contains(&("vendor".to_owned(), RecordField::Header("x-vendor".to_owned()))));
        assert_eq!(o.sasl.as_ref().map(|s| s.mechanism), Some(SaslMechanism::ScramSha512));

        let error = |text: &str| checked(text).unwrap_err().to_string();
        assert!(
            error("[[kafka]]\nbrokers = \"a:9092\"\n").contains("give one of topic, topics or topic_pattern")
        );
        assert!(error("[[kafka]]\nbrokers = \"a\"\ntopic = \"t\"\n").contains("host:port"));
        assert!(error("[[kafka]]\nbrokers = \"a:1\"\ntopic = \"t/x\"\n").contains("not a Kafka topic name"));
        assert!(
            error("[[kafka]]\nbrokers = \"a:1\"\ntopic = \"t\"\nstart = \"soon\"\n")
                .contains("earliest, latest")
        );
        assert!(
            error("[[kafka]]\nbrokers = \"a:1\"\ntopic = \"t\"\ncolumns = { a = \"value\" }\n")
                .contains("header:NAME")
        );
        assert!(
            error("[[kafka]]\nbrokers = \"a:1\"\ntopic = \"t\"\nusername = \"u\"\n").contains("SASL needs")
        );
        assert!(
            error("[[kafka]]\nbrokers = \"a:1\"\ntopic = \"t\"\nsource = \"s\"\n").contains("dataset too")
        );
    }
}
