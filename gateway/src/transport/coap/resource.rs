//! What a CoAP request asks of the gateway, answered in CoAP's terms: POST or PUT on a push
//! source's path (or a configured route) ingests the payload, GET on it returns the source's
//! schema as JSON, and GET /.well-known/core lists every writable resource (RFC 6690).
//!
//! 2.04 Changed once the payload is in the write-ahead log; 4.00 when no record fits (the
//! diagnostic payload names the record, field and reason); 4.01 when a key is needed or
//! wrong (`?key=<token>`, the stop-gap until DTLS); 4.03 when the key may not write there;
//! 4.04 no such resource; 4.05 another method; 4.15 a Content-Format the gateway does not
//! read; 5.03 with Max-Age under backpressure or while the gateway cannot take data.

use std::fmt::Write as _;
use std::sync::Arc;

use coap_lite::{Packet, RequestType, ResponseType};
use serde_json::json;

use super::message::{self, Block};
use crate::access::{AccessTable, Caller, Principal};
use crate::ingest::InputFormat;
use crate::pipeline::{Durability, Pipeline, Submission, SubmitError};
use crate::routes::{DEFAULT_SOURCE_ROUTE, RouteTable, Transport};

/// Diagnostic payloads are cut to this (a constrained device reads them).
const DIAGNOSTIC_BYTES: usize = 512;
/// GET answers bigger than this go out block-wise (Block2).
const BLOCK2_SZX: u8 = 6;

pub struct Resources {
    pub pipeline: Arc<Pipeline>,
    pub routes: Arc<RouteTable>,
    pub access: Arc<AccessTable>,
}

/// A reply before it becomes a packet.
#[derive(Debug)]
pub struct Reply {
    pub code: ResponseType,
    pub payload: Vec<u8>,
    pub content_format: Option<u16>,
    pub max_age: Option<u32>,
    pub block2: Option<Block>,
    /// Block1 of a 2.31 Continue: the block taken.
    pub block1_echo: Option<Block>,
    /// Size1 of a 4.13: the biggest body taken.
    pub size1: Option<u32>,
}

impl Reply {
    pub fn new(code: ResponseType) -> Reply {
        Reply {
            code,
            payload: Vec::new(),
            content_format: None,
            max_age: None,
            block2: None,
            block1_echo: None,
            size1: None,
        }
    }

    /// An error (or a partly good answer) with a diagnostic payload: UTF-8 text, no
    /// Content-Format (RFC 7252 §5.5.2).
    pub fn diagnostic(code: ResponseType, text: &str) -> Reply {
        let mut end = text.len().min(DIAGNOSTIC_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Reply { payload: text.as_bytes()[..end].to_vec(), ..Reply::new(code) }
    }
}

impl Resources {
    /// Answers a request whose body (all its blocks) is `body`.
    pub async fn handle(
        &self,
        peer: std::net::SocketAddr,
        request: &Packet,
        path: &str,
        body: Vec<u8>,
    ) -> Reply {
        let method = match request.header.code {
            coap_lite::MessageClass::Request(method) => method,
            _ => return Reply::diagnostic(ResponseType::BadRequest, "not a request"),
        };
        if path == "/.well-known/core" {
            return match method {
                RequestType::Get => self.discovery(request),
                _ => Reply::diagnostic(ResponseType::MethodNotAllowed, "/.well-known/core only answers GET"),
            };
        }
        let Some(target) = self.routes.resolve(path, Transport::Coap) else {
            return Reply::diagnostic(
                ResponseType::NotFound,
                &format!(
                    "no resource {path}: POST to /datasets/{{dataset}}/sources/{{source}}; GET /.well-known/core lists them"
                ),
            );
        };
        match method {
            RequestType::Post | RequestType::Put => self.ingest(peer, request, target, path, body).await,
            RequestType::Get => self.describe(request, &target),
            _ => Reply::diagnostic(
                ResponseType::MethodNotAllowed,
                "a source takes POST or PUT (and GET for its schema)",
            ),
        }
    }

    async fn ingest(
        &self,
        peer: std::net::SocketAddr,
        request: &Packet,
        target: crate::routes::Resolved,
        path: &str,
        body: Vec<u8>,
    ) -> Reply {
        let who = match self.principal(request) {
            Ok(who) => who,
            Err(reply) => return reply,
        };
        if !self.access.may_write_some(&who, &target.dataset) {
            // Anonymous clients are told to bring a key; a known one that it may not.
            return match who {
                Principal::Anonymous => {
                    Reply::diagnostic(ResponseType::Unauthorized, "a key is required: add ?key=<token>")
                }
                who => Reply::diagnostic(
                    ResponseType::Forbidden,
                    &format!("{who} may not write to dataset '{}'", target.dataset),
                ),
            };
        }
        let dataset = match self.pipeline.dataset(&target.dataset) {
            Ok(dataset) => dataset,
            Err(e) => return submit_error(e),
        };
        let source = match dataset.resolve(target.source.as_deref()) {
            Ok(source) => source.definition.source_name.clone(),
            Err(e) => return Reply::diagnostic(ResponseType::NotFound, &e.to_string()),
        };
        if !self.access.may_write(&who, &target.dataset, &source) {
            return Reply::diagnostic(
                ResponseType::Forbidden,
                &format!("{who} may not write to {}/{source}", target.dataset),
            );
        }
        let format = match message::uint_option(request, coap_lite::CoapOption::ContentFormat) {
            None => None,
            Some(Ok(number)) => match format_of(number) {
                Ok(format) => format,
                Err(reply) => return reply,
            },
            Some(Err(())) => {
                return Reply::diagnostic(ResponseType::BadOption, "Content-Format is not a number");
            }
        };
        let caller =
            Caller { principal: &who, transport: Transport::Coap.as_str(), client_id: None, cert: None };
        let bindings = self.access.bindings(&caller, &target, &source);
        let submission = Submission {
            dataset: target.dataset,
            source: Some(source),
            format,
            payload: body,
            columns: target.columns,
            bindings,
            event_time: None,
            transport: Transport::Coap.as_str(),
            route: target.route,
            address: format!("coap {path}"),
            sender: match &who {
                Principal::Anonymous => format!("coap {peer}"),
                Principal::Identity(name) => format!("coap {peer} ({name})"),
            },
            durability: Durability::Synced,
        };
        match dataset.submit(submission).await {
            Ok(accepted) if accepted.rejected.is_empty() => Reply::new(ResponseType::Changed),
            Ok(accepted) => {
                let first = accepted.rejected.first().map(ToString::to_string).unwrap_or_default();
                let text =
                    format!("accepted {}, rejected {}: {first}", accepted.records, accepted.rejected.len());
                Reply::diagnostic(ResponseType::Changed, &text)
            }
            Err(e) => submit_error(e),
        }
    }

    /// A pre-shared token in `?key=` (until DTLS), else anonymous where allowed.
    fn principal(&self, request: &Packet) -> Result<Principal, Reply> {
        let key = message::queries(request).into_iter().find(|(name, _)| name == "key").map(|(_, v)| v);
        match key {
            Some(key) => self
                .access
                .by_token(&key)
                .map_err(|_| Reply::diagnostic(ResponseType::Unauthorized, "the key is not valid")),
            None => self.access.anonymous().map_err(|_| {
                Reply::diagnostic(ResponseType::Unauthorized, "a key is required: add ?key=<token>")
            }),
        }
    }

    /// GET on a source: its read format, schema and merge, as JSON.
    fn describe(&self, request: &Packet, target: &crate::routes::Resolved) -> Reply {
        let found = self.pipeline.dataset(&target.dataset).map_err(submit_error).and_then(|d| {
            d.resolve(target.source.as_deref())
                .map(|s| s.definition.clone())
                .map_err(|e| Reply::diagnostic(ResponseType::NotFound, &e.to_string()))
        });
        let definition = match found {
            Ok(definition) => definition,
            Err(reply) => return reply,
        };
        let body = json!({
            "dataset": target.dataset,
            "source": definition.source_name,
            "read": serde_json::to_value(&definition.read).unwrap_or_default(),
            "merge": serde_json::to_value(&definition.merge).unwrap_or_default(),
        });
        let reply = Reply {
            payload: serde_json::to_vec(&body).unwrap_or_default(),
            content_format: Some(message::JSON),
            ..Reply::new(ResponseType::Content)
        };
        block2(request, reply)
    }

    /// GET /.well-known/core: every active source's path, with the formats it reads.
    fn discovery(&self, request: &Packet) -> Reply {
        let mut links = String::new();
        for dataset in self.pipeline.datasets() {
            for source in dataset.sources().iter().filter(|s| s.active) {
                let path = DEFAULT_SOURCE_ROUTE
                    .replace("{dataset}", dataset.name())
                    .replace("{source}", &source.definition.source_name);
                if !links.is_empty() {
                    links.push(',');
                }
                let _ = write!(
                    links,
                    "</{path}>;rt=\"odf.push-source\";if=\"odf.ingest\";ct=\"{} {} {} {} {}\";title=\"{} {}\"",
                    message::JSON,
                    message::CBOR,
                    message::TEXT_PLAIN,
                    message::SENML_JSON,
                    message::SENML_CBOR,
                    dataset.name(),
                    source.definition.source_name
                );
            }
        }
        let reply = Reply {
            payload: links.into_bytes(),
            content_format: Some(message::LINK_FORMAT),
            ..Reply::new(ResponseType::Content)
        };
        block2(request, reply)
    }
}

/// The format a Content-Format names; 0 (text/plain) and none mean the source's own.
fn format_of(number: u32) -> Result<Option<InputFormat>, Reply> {
    match u16::try_from(number) {
        Ok(message::TEXT_PLAIN) => Ok(None),
        Ok(message::JSON) => Ok(Some(InputFormat::Json)),
        Ok(message::CBOR | message::CBOR_SEQ) => Ok(Some(InputFormat::Cbor)),
        Ok(message::SENML_JSON) => Ok(Some(InputFormat::SenmlJson)),
        Ok(message::SENML_CBOR) => Ok(Some(InputFormat::SenmlCbor)),
        _ => Err(Reply::diagnostic(
            ResponseType::UnsupportedContentFormat,
            &format!("Content-Format {number} is not one the gateway reads (0, 50, 60, 63, 110, 112)"),
        )),
    }
}

fn submit_error(error: SubmitError) -> Reply {
    let text = error.to_string();
    match error {
        SubmitError::UnknownDataset { .. } | SubmitError::Source(_) => {
            Reply::diagnostic(ResponseType::NotFound, &text)
        }
        SubmitError::Rejected { rejections, .. } => {
            let first = rejections.first().map(ToString::to_string).unwrap_or_default();
            let more = if rejections.len() > 1 {
                format!(" (and {} more)", rejections.len() - 1)
            } else {
                String::new()
            };
            Reply::diagnostic(ResponseType::BadRequest, &format!("no record fits: {first}{more}"))
        }
        SubmitError::Busy { retry_after, .. } => Reply {
            max_age: Some(retry_after.as_secs().max(1) as u32),
            ..Reply::diagnostic(ResponseType::ServiceUnavailable, &text)
        },
        SubmitError::Unavailable(_) => {
            Reply { max_age: Some(5), ..Reply::diagnostic(ResponseType::ServiceUnavailable, &text) }
        }
        SubmitError::Uncertain(_) => Reply::diagnostic(ResponseType::InternalServerError, &text),
    }
}

/// The block of a GET answer the request asks for (Block2), when the answer needs blocks.
fn block2(request: &Packet, mut reply: Reply) -> Reply {
    let asked = request.get_first_option(coap_lite::CoapOption::Block2).and_then(|v| Block::decode(v));
    let szx = asked.map_or(BLOCK2_SZX, |b| b.szx.min(BLOCK2_SZX));
    let size = 1usize << (szx + 4);
    if asked.is_none() && reply.payload.len() <= size {
        return reply;
    }
    let num = asked.map_or(0, |b| b.num);
    let start = num as usize * size;
    if start >= reply.payload.len() && start > 0 {
        return Reply::diagnostic(ResponseType::BadOption, "Block2 asks for a block past the end");
    }
    let end = (start + size).min(reply.payload.len());
    reply.block2 = Some(Block { num, more: end < reply.payload.len(), szx });
    reply.payload = reply.payload[start..end].to_vec();
    reply
}
