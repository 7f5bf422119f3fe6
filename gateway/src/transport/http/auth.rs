//! Who an HTTP request is from: a bearer token, HTTP Basic (an identity's password), the
//! client certificate of its TLS connection, or nobody (anonymous, where allowed).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use base64::Engine as _;

use super::reply::ApiError;
use crate::access::{AccessTable, Denied, Principal};

/// What the server knows about a request's connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The client certificate's subject (RFC 4514) and common name, when one was presented.
    pub cert: Option<(String, Option<String>)>,
}

impl Peer {
    pub fn describe(&self, principal: &Principal) -> String {
        match principal {
            Principal::Anonymous => format!("http {}", self.addr),
            Principal::Identity(name) => format!("http {} ({name})", self.addr),
        }
    }
}

pub async fn principal(
    access: &Arc<AccessTable>,
    headers: &HeaderMap,
    peer: &Peer,
) -> Result<Principal, ApiError> {
    let denied = |e: Denied| {
        ApiError::unauthorized(format!("{e}: send `Authorization: Bearer <token>` or HTTP Basic credentials"))
    };
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value =
            value.to_str().map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
        let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
        return match scheme.to_ascii_lowercase().as_str() {
            "bearer" => access.by_token(credentials.trim()).map_err(denied),
            "basic" => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(credentials.trim())
                    .map_err(|_| ApiError::unauthorized("Basic credentials are not base64"))?;
                let text = String::from_utf8_lossy(&decoded).into_owned();
                let (name, password) = text.split_once(':').unwrap_or((&text, ""));
                access.by_password_async(name, password.as_bytes()).await.map_err(denied)
            }
            other => Err(ApiError::unauthorized(format!(
                "authorization scheme '{other}' is not supported (use Bearer or Basic)"
            ))),
        };
    }
    if let Some((subject, common_name)) = &peer.cert {
        return access.by_certificate(subject, common_name.as_deref()).map_err(|_| {
            ApiError::unauthorized(format!(
                "the client certificate '{subject}' is not an identity of this gateway"
            ))
        });
    }
    access.anonymous().map_err(denied)
}
