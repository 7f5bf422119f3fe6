//! The ODF Simple Transfer Protocol, read-only, for every dataset: `refs/head`, then
//! `blocks/{hash}`, `data/{hash}` and `checkpoints/{hash}` under `/datasets/{ds}/`, so that
//! `kamu pull http://gateway:8080/datasets/gps` (or any ODF node) can pull it. Objects are
//! named by their hash, so only a name that parses as one is looked up.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use super::auth::Peer;
use super::datasets::readable;
use super::reply::ApiError;
use crate::odf::Multihash;

pub async fn head(
    State(state): State<Arc<HttpState>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    readable(&state, &peer, &headers, &name).await?;
    let path = state.readers.data_dir().root().join(&name).join(crate::store::HEAD);
    let bytes = read(path).await?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))], bytes).into_response())
}

pub async fn object(
    State(state): State<Arc<HttpState>>,
    Extension(peer): Extension<Peer>,
    Path((name, kind, hash)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    readable(&state, &peer, &headers, &name).await?;
    let folder = match kind.as_str() {
        "blocks" => crate::store::BLOCKS,
        "data" => crate::store::DATA,
        "checkpoints" => crate::store::CHECKPOINTS,
        _ => {
            return Err(ApiError::not_found(format!(
                "no '{kind}' in a dataset (blocks, data, checkpoints, refs/head)"
            )));
        }
    };
    let hash: Multihash =
        hash.parse().map_err(|_| ApiError::not_found(format!("'{hash}' is not an object hash")))?;
    let path = state.readers.data_dir().root().join(&name).join(folder).join(hash.to_string());
    // Slices can be big: streamed from the file, not read into memory.
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "no such object"));
        }
        Err(e) => return Err(ApiError::internal(format!("cannot read the object: {e}"))),
    };
    let length = file.metadata().await.map(|m| m.len()).ok();
    let mut response =
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if let Some(length) = length.and_then(|l| HeaderValue::from_str(&l.to_string()).ok()) {
        headers.insert(header::CONTENT_LENGTH, length);
    }
    Ok(response)
}

async fn read(path: std::path::PathBuf) -> Result<Vec<u8>, ApiError> {
    match tokio::task::spawn_blocking(move || std::fs::read(&path)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "no such object"))
        }
        Ok(Err(e)) => Err(ApiError::internal(format!("cannot read the object: {e}"))),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}
