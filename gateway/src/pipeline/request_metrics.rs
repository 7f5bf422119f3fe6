//! The counters of the requests a dataset takes, by (source, transport, route): registered
//! at the first request through each and kept. Building their labels and looking them up for
//! every message cost more than the rest of a small publish's bookkeeping. Routes are the
//! patterns of the configuration, not the concrete topics or paths, so the list stays short.

use std::sync::Mutex;

use crate::routes::Transport;

/// The counters of requests through one (source, transport, route).
#[derive(Clone)]
pub struct RequestCounters {
    pub requests: metrics::Counter,
    pub bytes: metrics::Counter,
    pub busy: metrics::Counter,
    pub accepted: metrics::Counter,
    pub rejected: metrics::Counter,
}

pub(super) struct RequestMetrics {
    dataset: String,
    known: Mutex<Vec<Known>>,
}

struct Known {
    source: String,
    transport: Transport,
    route: String,
    counters: RequestCounters,
}

impl RequestMetrics {
    pub(super) fn new(dataset: &str) -> RequestMetrics {
        RequestMetrics { dataset: dataset.to_owned(), known: Mutex::new(Vec::new()) }
    }

    pub(super) fn of(&self, source: &str, transport: Transport, route: &str) -> RequestCounters {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let found = known.iter().find(|k| k.source == source && k.transport == transport && k.route == route);
        if let Some(found) = found {
            return found.counters.clone();
        }
        let labels = [
            ("dataset", self.dataset.clone()),
            ("source", source.to_owned()),
            ("transport", transport.as_str().to_owned()),
            ("route", route.to_owned()),
        ];
        let counters = RequestCounters {
            requests: metrics::counter!("odf_requests_total", &labels),
            bytes: metrics::counter!("odf_request_bytes_total", &labels),
            busy: metrics::counter!("odf_requests_busy_total", &labels),
            accepted: metrics::counter!("odf_records_accepted_total", &labels),
            rejected: metrics::counter!("odf_records_rejected_total", &labels),
        };
        known.push(Known {
            source: source.to_owned(),
            transport,
            route: route.to_owned(),
            counters: counters.clone(),
        });
        counters
    }
}
