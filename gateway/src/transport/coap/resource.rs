//! What a CoAP request asks of the gateway, answered in CoAP's terms: POST or PUT on a push
//! source's path (or a configured route) ingests the payload, GET on it returns the source's
//! schema as JSON, and GET /.well-known/core lists the sources the sender may read (RFC 6690).
//!
//! Everything that decides whether a request may go on comes before its body is looked at
//! (`admit`): the key (`?key=<token>`, the stop-gap until DTLS; 4.01 without a valid one
//! where anonymous clients may not do it), the grant (4.03), the resource (4.04, 4.05), the
//! Content-Format (4.15) and the preconditions (4.12, `conditions`). So a block-wise body is
//! kept only for a sender allowed to write it. Reads (schema, discovery) follow the read
//! grants, as HTTP does.
//!
//! 2.04 Changed once the payload is in the write-ahead log; 4.00 when no record fits (the
//! diagnostic payload names the record, field and reason); 5.03 with Max-Age under
//! backpressure or while the gateway cannot take data.

use std::fmt::Write as _;
use std::sync::Arc;

use coap_lite::{Packet, RequestType, ResponseType};
use serde_json::json;

use super::conditions::{self, ETag, etag_of};
use super::message::{self, Block};
use crate::access::{AccessTable, Caller, Principal};
use crate::ingest::InputFormat;
use crate::intake::{Intake, IntakeError, Parcel, Target};
use crate::odf::AddPushSource;
use crate::pipeline::{Durability, Pipeline, SubmitError};
use crate::routes::{DEFAULT_SOURCE_ROUTE, Resolved, Transport};

/// Diagnostic payloads are cut to this (a constrained device reads them).
const DIAGNOSTIC_BYTES: usize = 512;
/// GET answers bigger than this go out block-wise (Block2).
const BLOCK2_SZX: u8 = 6;

pub struct Resources {
    pub intake: Arc<Intake>,
    pub pipeline: Arc<Pipeline>,
    pub access: Arc<AccessTable>,
}

/// A reply before it becomes a packet.
#[derive(Debug)]
pub struct Reply {
    pub code: ResponseType,
    pub payload: Vec<u8>,
    pub content_format: Option<u16>,
    pub max_age: Option<u32>,
    pub etag: Option<ETag>,
    pub block2: Option<Block>,
    /// Block1 of a 2.31 Continue: the block taken.
    pub block1_echo: Option<Block>,
    /// Size1 of a 4.13: the biggest body taken.
    pub size1: Option<u32>,
    /// Handling the request changed something (a block taken, a payload logged or
    /// quarantined): a duplicate must get this reply and not be handled again. A refusal or
    /// a read changes nothing, so its duplicate can be handled anew and nothing is kept.
    pub acted: bool,
}

impl Reply {
    pub fn new(code: ResponseType) -> Reply {
        Reply {
            code,
            payload: Vec::new(),
            content_format: None,
            max_age: None,
            etag: None,
            block2: None,
            block1_echo: None,
            size1: None,
            acted: false,
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

    /// This reply after the request changed something.
    pub fn acted(self) -> Reply {
        Reply { acted: true, ..self }
    }
}

/// What may happen to a request once its options, key, grants and resource are checked.
pub enum Admission {
    /// Answered already: a refusal, or a read.
    Answered(Reply),
    /// A write the sender may make: take its body (all its blocks), then `ingest` it.
    Write(Write),
}

/// A write admitted: who, into which source, in which format.
pub struct Write {
    who: Principal,
    target: Target,
    format: Option<InputFormat>,
}

impl Resources {
    /// Decides a request from its options and path alone, before any of its body is kept.
    pub fn admit(&self, request: &Packet, path: &str) -> Admission {
        let method = match request.header.code {
            coap_lite::MessageClass::Request(method) => method,
            _ => return refuse(ResponseType::BadRequest, "not a request"),
        };
        if path == "/.well-known/core" {
            return match method {
                RequestType::Get => Admission::Answered(self.discovery(request).unwrap_or_else(|r| r)),
                _ => refuse(ResponseType::MethodNotAllowed, "/.well-known/core only answers GET"),
            };
        }
        let Ok(route) = self.intake.route(path, Transport::Coap) else {
            return refuse(
                ResponseType::NotFound,
                &format!(
                    "no resource {path}: POST to /datasets/{{dataset}}/sources/{{source}}; GET /.well-known/core lists them"
                ),
            );
        };
        let admitted = match method {
            RequestType::Post | RequestType::Put => self.admit_write(request, route).map(Admission::Write),
            RequestType::Get => self.describe(request, &route).map(Admission::Answered),
            _ => Err(Reply::diagnostic(
                ResponseType::MethodNotAllowed,
                "a source takes POST or PUT (and GET for its schema)",
            )),
        };
        admitted.unwrap_or_else(Admission::Answered)
    }

    fn admit_write(&self, request: &Packet, route: Resolved) -> Result<Write, Reply> {
        let who = self.principal(request)?;
        let caller = Caller { principal: &who, transport: Transport::Coap, client_id: None, cert: None };
        let target = self.intake.admit_to(route, &caller).map_err(intake_error)?;
        let format = match message::uint_option(request, coap_lite::CoapOption::ContentFormat) {
            None => None,
            Some(Ok(number)) => format_of(number)?,
            Some(Err(())) => {
                return Err(Reply::diagnostic(ResponseType::BadOption, "Content-Format is not a number"));
            }
        };
        let etag = || etag_of(&description(target.dataset().name().as_str(), &target.source().definition));
        conditions::preconditions(request, etag)?;
        Ok(Write { who, target, format })
    }

    /// Ingests the body of an admitted write.
    pub async fn ingest(&self, peer: std::net::SocketAddr, write: Write, path: &str, body: Vec<u8>) -> Reply {
        let Write { who, target, format } = write;
        let parcel = Parcel {
            payload: body.into(),
            format,
            event_time: None,
            address: format!("coap {path}"),
            sender: match &who {
                Principal::Anonymous => format!("coap {peer}"),
                Principal::Identity(name) => format!("coap {peer} ({name})"),
            },
            durability: Durability::Synced,
        };
        match target.submit(parcel).await {
            Ok(accepted) if accepted.rejected.is_empty() => Reply::new(ResponseType::Changed).acted(),
            Ok(accepted) => {
                let first = accepted.rejected.first().map(ToString::to_string).unwrap_or_default();
                let text =
                    format!("accepted {}, rejected {}: {first}", accepted.records, accepted.rejected.len());
                Reply::diagnostic(ResponseType::Changed, &text).acted()
            }
            // In the quarantine, or perhaps in the log: a duplicate must not go there again.
            Err(e @ (SubmitError::Rejected { .. } | SubmitError::Uncertain(_))) => submit_error(e).acted(),
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
            None => self.access.anonymous().map_err(|_| key_required()),
        }
    }

    /// GET on a source: its read format, schema and merge, as JSON, for a sender that may
    /// read its dataset.
    fn describe(&self, request: &Packet, route: &Resolved) -> Result<Reply, Reply> {
        let who = self.principal(request)?;
        if !self.access.may_query(&who, &route.dataset) {
            return Err(not_allowed(&who, &format!("may not read dataset '{}'", route.dataset)));
        }
        let (_, source) = self.intake.locate(route).map_err(intake_error)?;
        representation(request, description(&route.dataset, &source.definition), message::JSON)
    }

    /// GET /.well-known/core: every active source of the datasets the sender may read, with
    /// the formats it takes. A sender that may read nothing is refused, as on a source.
    fn discovery(&self, request: &Packet) -> Result<Reply, Reply> {
        let who = self.principal(request)?;
        let grants = self.access.grants(&who).ok_or_else(key_required)?;
        if grants.query.is_empty() {
            return Err(not_allowed(&who, "may not read any dataset"));
        }
        let mut links = String::new();
        for dataset in self.pipeline.datasets().filter(|d| grants.may_query(d.name().as_str())) {
            for source in dataset.sources().iter().filter(|s| s.active) {
                let path = DEFAULT_SOURCE_ROUTE
                    .replace("{dataset}", dataset.name().as_str())
                    .replace("{source}", source.name.as_str());
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
                    source.name
                );
            }
        }
        representation(request, links.into_bytes(), message::LINK_FORMAT)
    }
}

/// A read's answer: its representation with its ETag, once the request's conditions hold;
/// 2.03 Valid when the sender already has it; the block asked for when it needs blocks.
fn representation(request: &Packet, body: Vec<u8>, format: u16) -> Result<Reply, Reply> {
    let etag = etag_of(&body);
    conditions::preconditions(request, || etag)?;
    conditions::acceptable(request, format)?;
    if conditions::still_valid(request, etag) {
        return Ok(Reply { etag: Some(etag), ..Reply::new(ResponseType::Valid) });
    }
    let reply = Reply {
        payload: body,
        content_format: Some(format),
        etag: Some(etag),
        ..Reply::new(ResponseType::Content)
    };
    Ok(block2(request, reply))
}

/// What GET on a source returns: its read format, schema and merge, as JSON.
fn description(dataset: &str, definition: &AddPushSource) -> Vec<u8> {
    let body = json!({
        "dataset": dataset,
        "source": definition.source_name,
        "read": serde_json::to_value(&definition.read).unwrap_or_default(),
        "merge": serde_json::to_value(&definition.merge).unwrap_or_default(),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

fn refuse(code: ResponseType, text: &str) -> Admission {
    Admission::Answered(Reply::diagnostic(code, text))
}

fn key_required() -> Reply {
    Reply::diagnostic(ResponseType::Unauthorized, "a key is required: add ?key=<token>")
}

/// Anonymous senders are told to bring a key; a known one that it may not.
fn not_allowed(who: &Principal, what: &str) -> Reply {
    match who {
        Principal::Anonymous => key_required(),
        who => Reply::diagnostic(ResponseType::Forbidden, &format!("{who} {what}")),
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

/// An intake's refusal in CoAP's terms: 4.01 for a sender without a key, 4.03, 4.04, 4.15.
fn intake_error(error: IntakeError) -> Reply {
    let text = error.to_string();
    match error {
        IntakeError::NoRoute(_) => Reply::diagnostic(ResponseType::NotFound, &text),
        IntakeError::CredentialsRequired(_) => key_required(),
        IntakeError::Forbidden(_) => Reply::diagnostic(ResponseType::Forbidden, &text),
        IntakeError::UnsupportedFormat(_) => Reply::diagnostic(ResponseType::UnsupportedContentFormat, &text),
        IntakeError::Submit(e) => submit_error(e),
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
