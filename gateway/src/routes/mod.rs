//! The route table every transport uses: a topic (MQTT) or a path (HTTP, CoAP) to a
//! (dataset, source) and the column values captured from it.
//!
//! A pattern is `/`-separated segments: a literal, `{name}` (one segment, captured), `+` (one
//! segment, not captured) or, last, `#` (the rest). `{dataset}` and `{source}` choose the
//! target; any other capture fills the read-schema column of that name (a device id in
//! `trackers/{device_id}/gps`). Configured routes are tried first, in order; then the
//! defaults `datasets/{dataset}/sources/{source}` and `datasets/{dataset}` (for a dataset
//! with one active source). Paths and topics are matched without a leading `/`. A route
//! that binds its captures makes them rules as well as values: a record whose column holds
//! another value than the topic's is rejected.

use std::fmt;

use crate::ingest::{BindingRule, ColumnBinding, Part, Pattern};

/// Which transport a request came over; a route may be limited to some.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Http,
    Mqtt,
    Coap,
    /// Records consumed from Kafka topics; a topic's segments are separated by `.`.
    Kafka,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Mqtt => "mqtt",
            Transport::Coap => "coap",
            Transport::Kafka => "kafka",
        }
    }

    /// What separates the segments of its addresses: `/` in topics and paths, `.` in Kafka
    /// topic names (`telemetry.acme.gps`).
    pub fn separator(self) -> char {
        match self {
            Transport::Kafka => '.',
            Transport::Http | Transport::Mqtt | Transport::Coap => '/',
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(String),
    One,
    Rest,
}

/// One configured (or default) route.
#[derive(Debug, Clone)]
pub struct Route {
    pattern: String,
    segments: Vec<Segment>,
    dataset: Option<String>,
    source: Option<String>,
    /// `None`: every transport.
    transports: Option<Vec<Transport>>,
    /// Whether a record must hold the captured values (else they only fill what it leaves out).
    bind_captures: bool,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub dataset: String,
    /// `None`: the dataset's only active source.
    pub source: Option<String>,
    /// Captured values for columns, by column name.
    pub columns: Vec<(String, String)>,
    /// The pattern that matched, for metrics and errors.
    pub route: String,
    /// Whether records must hold the captured values (`columns`), not only be filled by them.
    pub bind_captures: bool,
}

pub const DEFAULT_SOURCE_ROUTE: &str = "datasets/{dataset}/sources/{source}";
pub const DEFAULT_DATASET_ROUTE: &str = "datasets/{dataset}";

impl Route {
    /// A route from a pattern to a target; the target's parts may come from captures
    /// (`{dataset}`, `{source}`) instead.
    pub fn new(
        pattern: &str,
        dataset: Option<String>,
        source: Option<String>,
        transports: Option<Vec<Transport>>,
    ) -> Result<Route, String> {
        let trimmed = pattern.trim_start_matches('/');
        if trimmed.is_empty() {
            return Err(format!("route pattern '{pattern}' is empty"));
        }
        // A route for Kafka alone may be written as its topics are (`telemetry.{vendor}.gps`).
        let kafka_only = transports.as_ref().is_some_and(|t| t.iter().all(|&t| t == Transport::Kafka));
        let separator = if kafka_only && !trimmed.contains('/') { '.' } else { '/' };
        let parts: Vec<&str> = trimmed.split(separator).collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut captured = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let segment = match *part {
                "#" if i + 1 == parts.len() => Segment::Rest,
                "#" => return Err(format!("route pattern '{pattern}': '#' may only be the last segment")),
                "+" => Segment::One,
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                    let name = &p[1..p.len() - 1];
                    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(format!(
                            "route pattern '{pattern}': capture '{{{name}}}' is not a column name"
                        ));
                    }
                    if captured.contains(&name) {
                        return Err(format!("route pattern '{pattern}' captures '{name}' twice"));
                    }
                    captured.push(name);
                    Segment::Capture(name.to_owned())
                }
                p if p.is_empty() || p.contains(['{', '}', '+', '#']) => {
                    return Err(format!(
                        "route pattern '{pattern}': segment '{p}' is not a literal, {{name}}, + or #"
                    ));
                }
                p => Segment::Literal(p.to_owned()),
            };
            segments.push(segment);
        }
        if dataset.is_none() && !captured.contains(&"dataset") {
            return Err(format!("route '{pattern}' names no dataset: give `dataset` or capture {{dataset}}"));
        }
        if dataset.is_some() && captured.contains(&"dataset") {
            return Err(format!("route '{pattern}' both names a dataset and captures {{dataset}}"));
        }
        if source.is_some() && captured.contains(&"source") {
            return Err(format!("route '{pattern}' both names a source and captures {{source}}"));
        }
        Ok(Route { pattern: pattern.to_owned(), segments, dataset, source, transports, bind_captures: false })
    }

    /// The route with its captures binding: a record must hold the captured values.
    pub fn binding_captures(self, bind: bool) -> Route {
        Route { bind_captures: bind, ..self }
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The MQTT topic filter this route listens on (captures become `+`).
    pub fn topic_filter(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.as_str(),
                Segment::Capture(_) | Segment::One => "+",
                Segment::Rest => "#",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn matches(&self, address: &str, transport: Transport) -> Option<Resolved> {
        if self.transports.as_ref().is_some_and(|t| !t.contains(&transport)) {
            return None;
        }
        let parts: Vec<&str> = address.trim_start_matches('/').split(transport.separator()).collect();
        let mut columns = Vec::new();
        let (mut dataset, mut source) = (self.dataset.clone(), self.source.clone());
        let mut i = 0;
        for segment in &self.segments {
            match segment {
                Segment::Rest => {
                    i = parts.len();
                    break;
                }
                _ if i >= parts.len() => return None,
                Segment::Literal(l) if parts[i] != l => return None,
                Segment::Literal(_) | Segment::One => {}
                // An empty segment (`a//b`) captures nothing: it is not a value.
                Segment::Capture(_) if parts[i].is_empty() => return None,
                Segment::Capture(name) => {
                    // A URL path arrives percent-encoded; a topic or a CoAP option does not.
                    let value = match transport {
                        Transport::Http => {
                            percent_encoding::percent_decode_str(parts[i]).decode_utf8_lossy().into_owned()
                        }
                        Transport::Mqtt | Transport::Coap | Transport::Kafka => parts[i].to_owned(),
                    };
                    match name.as_str() {
                        "dataset" => dataset = Some(value),
                        "source" => source = Some(value),
                        _ => columns.push((name.clone(), value)),
                    }
                }
            }
            i += 1;
        }
        if i != parts.len() {
            return None;
        }
        Some(Resolved {
            dataset: dataset?,
            source,
            columns,
            route: self.pattern.clone(),
            bind_captures: self.bind_captures,
        })
    }
}

impl Resolved {
    /// The rules its captures make, when its route binds them: each record must hold the
    /// captured value.
    pub fn bindings(&self) -> Vec<ColumnBinding> {
        if !self.bind_captures {
            return Vec::new();
        }
        let bind = |(column, value): &(String, String)| ColumnBinding {
            column: column.clone(),
            rule: BindingRule::Pattern(Pattern::new(vec![Part::Text(value.clone())])),
            by: format!("route '{}'", self.route),
        };
        self.columns.iter().map(bind).collect()
    }
}

/// Configured routes, then the defaults.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// How many of `routes` are configured (they come first).
    configured: usize,
}

impl RouteTable {
    pub fn new(configured: Vec<Route>) -> RouteTable {
        let defaults = [DEFAULT_SOURCE_ROUTE, DEFAULT_DATASET_ROUTE]
            .into_iter()
            .filter_map(|pattern| Route::new(pattern, None, None, None).ok());
        let count = configured.len();
        RouteTable { routes: configured.into_iter().chain(defaults).collect(), configured: count }
    }

    /// The target of `address` by a configured route only (they win over a transport's own
    /// paths, as over the defaults).
    pub fn resolve_configured(&self, address: &str, transport: Transport) -> Option<Resolved> {
        self.routes[..self.configured].iter().find_map(|route| route.matches(address, transport))
    }

    /// The target of `address` (a topic, or a path without its query), or `None` when no
    /// route matches.
    pub fn resolve(&self, address: &str, transport: Transport) -> Option<Resolved> {
        self.routes.iter().find_map(|route| route.matches(address, transport))
    }

    /// Every route, configured first, then the defaults.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::new(vec![
            Route::new("trackers/{device_id}/gps", Some("gps".into()), Some("vendorA".into()), None).unwrap(),
            Route::new("acme/+/{station}/#", Some("air-quality".into()), None, Some(vec![Transport::Mqtt]))
                .unwrap(),
        ])
    }

    #[test]
    fn configured_routes_capture_columns_and_defaults_follow() {
        let t = table();
        let r = t.resolve("trackers/A-17/gps", Transport::Mqtt).unwrap();
        assert_eq!((r.dataset.as_str(), r.source.as_deref()), ("gps", Some("vendorA")));
        assert_eq!(r.columns, vec![("device_id".to_string(), "A-17".to_string())]);
        assert_eq!(r.route, "trackers/{device_id}/gps");

        let r = t.resolve("/datasets/gps/sources/vendorB", Transport::Http).unwrap();
        assert_eq!((r.dataset.as_str(), r.source.as_deref()), ("gps", Some("vendorB")));
        let r = t.resolve("/datasets/fleet", Transport::Coap).unwrap();
        assert_eq!((r.dataset.as_str(), r.source), ("fleet", None));

        let r = t.resolve("/trackers/A%2017/gps", Transport::Http).unwrap();
        assert_eq!(r.columns[0].1, "A 17", "a URL path is decoded");
        assert!(t.resolve_configured("/datasets/gps", Transport::Http).is_none());
        let r = t.resolve("acme/eu/S-1/raw/v2", Transport::Mqtt).unwrap();
        assert_eq!(r.columns, vec![("station".to_string(), "S-1".to_string())]);
        assert!(t.resolve("acme/eu/S-1/raw", Transport::Http).is_none(), "limited to MQTT");
        assert!(t.resolve("trackers//gps", Transport::Mqtt).is_none());
        assert!(t.resolve("datasets/gps/sources/a/extra", Transport::Http).is_none());
        assert!(t.resolve("nothing/here", Transport::Http).is_none());
    }

    #[test]
    fn bad_patterns_say_why() {
        let err = |p: &str, d: Option<&str>| Route::new(p, d.map(Into::into), None, None).unwrap_err();
        assert!(err("a/#/b", Some("x")).contains("last segment"));
        assert!(err("a/{b}/{b}", Some("x")).contains("twice"));
        assert!(err("a/{b-c}", Some("x")).contains("not a column name"));
        assert!(err("a/b", None).contains("names no dataset"));
        assert!(err("a/x{b}", Some("x")).contains("not a literal"));
        assert_eq!(table().routes()[0].topic_filter(), "trackers/+/gps");
    }

    #[test]
    fn kafka_topics_are_split_on_dots() {
        let kafka = Some(vec![Transport::Kafka]);
        let t = RouteTable::new(vec![
            Route::new("telemetry.{vendor}.gps", Some("gps".into()), None, kafka).unwrap(),
        ]);
        let r = t.resolve("telemetry.acme.gps", Transport::Kafka).unwrap();
        assert_eq!(r.columns, vec![("vendor".to_string(), "acme".to_string())]);
        assert!(t.resolve("telemetry/acme/gps", Transport::Mqtt).is_none(), "limited to Kafka");
        let r = t.resolve("datasets.gps.sources.vendorA", Transport::Kafka).unwrap();
        assert_eq!((r.dataset.as_str(), r.source.as_deref()), ("gps", Some("vendorA")), "the default route");
    }
}
