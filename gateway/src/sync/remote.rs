//! A remote copy of a dataset, named by a URL as kamu spells them:
//!
//! - `file:///srv/odf/gps` (or a plain path): a folder;
//! - `s3://bucket/prefix/`: AWS S3, region and credentials from the usual AWS environment
//!   variables, the shared files of `aws configure`, or the instance or container role;
//! - `s3+http://host:port/bucket/prefix/`, `s3+https://...`: an S3 API at that endpoint
//!   (MinIO, Ceph, a Kamu Node's storage), addressed path-style.
//!
//! The URL is the dataset's own folder: `<prefix>refs/head`, `<prefix>blocks/<hash>`, ...

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, GetResult, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use sha3::{Digest, Sha3_256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::aws_profile::Profile;
use super::error::SyncError;
use super::pace::Pace;
use crate::odf::{self, MetadataBlock, Multihash, hash::SHA3_256};
use crate::store::{self, HEAD, IoError, ObjectKind};

/// Objects up to this size go up in one request; larger ones in parts of this size (S3's
/// smallest part is 5 MiB).
const PART_SIZE: usize = 5 << 20;
/// A block is a few hundred bytes; a remote offering more than this is not serving blocks.
const MAX_BLOCK_SIZE: u64 = 16 << 20;
const CHUNK: usize = 64 << 10;

pub struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    /// The dataset's folder in the store: empty, or ending in `/`.
    prefix: String,
    /// The folder of a `file://` remote, whose writes are synced to disk before the head moves.
    folder: Option<PathBuf>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Remote {
    /// The remote at `url`. A folder is created if missing when `create` is set (a push);
    /// nothing is contacted yet.
    pub fn open(url: &str, create: bool) -> Result<Remote, SyncError> {
        match locate(url)? {
            Location::Folder(path) => Remote::folder(url, path, create),
            Location::S3 { endpoint, bucket, prefix } => Remote::s3(url, endpoint, &bucket, prefix),
        }
    }

    /// Whether `url` is a repository URL this can open, without touching anything.
    pub fn check_url(url: &str) -> Result<(), SyncError> {
        locate(url).map(drop)
    }

    fn folder(url: &str, path: PathBuf, create: bool) -> Result<Remote, SyncError> {
        if create && !path.is_dir() {
            // Only the dataset's own folder is made: were its parent made too, a remote on a
            // disk not mounted would fill the disk underneath the mount point instead.
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(SyncError::BadUrl {
                    url: url.to_owned(),
                    reason: format!("{} is not a folder (is its disk mounted?)", parent.display()),
                });
            }
            std::fs::create_dir(&path)
                .or_else(|e| if path.is_dir() { Ok(()) } else { Err(e) })
                .map_err(|error| IoError { action: "create folder", path: path.clone(), error })?;
            store::sync_dir(parent)?;
        }
        if !path.is_dir() {
            return Err(SyncError::NoRemoteDataset { url: url.to_owned() });
        }
        if create {
            for folder in ["refs", store::BLOCKS, store::DATA, store::CHECKPOINTS] {
                store::create_dir(&path.join(folder))?;
            }
        }
        let local = LocalFileSystem::new_with_prefix(&path)
            .map_err(|e| SyncError::BadUrl { url: url.to_owned(), reason: e.to_string() })?;
        Ok(Remote { url: url.to_owned(), store: Arc::new(local), prefix: String::new(), folder: Some(path) })
    }

    fn s3(url: &str, endpoint: Option<String>, bucket: &str, prefix: String) -> Result<Remote, SyncError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(10))
                    // A whole request, a part of up to 5 MiB included: slow links need long.
                    .with_timeout(Duration::from_secs(300)),
            )
            // A few quick retries; the sync loop of `serve` backs off for longer outages.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(60),
                ..Default::default()
            });
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let profile = Profile::from_files();
        if var("AWS_ACCESS_KEY_ID").is_none()
            && let (Some(key), Some(secret)) = (profile.access_key_id, profile.secret_access_key)
        {
            builder = builder.with_access_key_id(key).with_secret_access_key(secret);
            if let Some(token) = profile.session_token {
                builder = builder.with_token(token);
            }
        }
        if var("AWS_REGION").is_none()
            && var("AWS_DEFAULT_REGION").is_none()
            && let Some(region) = profile.region
        {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = endpoint {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false)
                .with_endpoint(endpoint);
        }
        let store =
            builder.build().map_err(|e| SyncError::BadUrl { url: url.to_owned(), reason: e.to_string() })?;
        Ok(Remote { url: url.to_owned(), store: Arc::new(store), prefix, folder: None })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, name: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{name}", self.prefix))
    }

    fn object_key(&self, kind: ObjectKind, hash: &Multihash) -> ObjectPath {
        self.key(&format!("{}/{hash}", kind.folder()))
    }

    /// An object store's error, or an I/O error of a writer over one.
    fn failed(
        &self,
        action: &'static str,
        key: &ObjectPath,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> SyncError {
        SyncError::Remote { action, key: key.to_string(), url: self.url.clone(), error: error.into() }
    }

    /// The remote's head, `None` where it holds no dataset yet.
    pub async fn read_head(&self) -> Result<Option<Multihash>, SyncError> {
        let key = self.key(HEAD);
        let bytes = match self.store.get(&key).await {
            Ok(got) if got.meta.size > 1024 => {
                return Err(self.damaged("refs/head", format!("it is {} bytes long", got.meta.size)));
            }
            Ok(got) => got.bytes().await.map_err(|e| self.failed("read", &key, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed("read", &key, e)),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| self.damaged("refs/head", "not text".into()))?;
        text.trim_end()
            .parse()
            .map(Some)
            .map_err(|e| self.damaged("refs/head", format!("it does not hold a block hash: {e}")))
    }

    /// Moves the remote's head: the last write of a push.
    pub async fn write_head(&self, head: &Multihash) -> Result<(), SyncError> {
        if let Some(folder) = &self.folder {
            return Ok(store::write_atomic(&folder.join(HEAD), head.to_string().as_bytes())?);
        }
        let key = self.key(HEAD);
        let payload = PutPayload::from(head.to_string().into_bytes());
        self.store.put(&key, payload).await.map_err(|e| self.failed("write", &key, e))?;
        Ok(())
    }

    /// The datasets a repository holds: the folders right below this URL with a
    /// `refs/head`, by name, each with its own URL.
    pub async fn datasets_below(&self) -> Result<Vec<(String, String)>, SyncError> {
        let folder = ObjectPath::from(self.prefix.trim_end_matches('/'));
        let prefix = (!self.prefix.is_empty()).then_some(&folder);
        let listed =
            self.store.list_with_delimiter(prefix).await.map_err(|e| self.failed("list", &folder, e))?;
        let mut found = Vec::new();
        for below in listed.common_prefixes {
            let Some(name) = below.filename().map(str::to_owned) else { continue };
            let head = below.clone().join("refs").join("head");
            match self.store.head(&head).await {
                Ok(_) => found.push((name.clone(), format!("{}/{name}/", self.url.trim_end_matches('/')))),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.failed("look up", &head, e)),
            }
        }
        found.sort();
        Ok(found)
    }

    /// The size of the object if the remote has it.
    pub async fn size_of(&self, kind: ObjectKind, hash: &Multihash) -> Result<Option<u64>, SyncError> {
        let key = self.object_key(kind, hash);
        match self.store.head(&key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("look up", &key, e)),
        }
    }

    /// Reads a block, checked against its hash, with its bytes as stored.
    pub async fn read_block(&self, hash: &Multihash) -> Result<(Vec<u8>, MetadataBlock), SyncError> {
        let (key, got) = self.get_referenced(ObjectKind::Block, hash).await?;
        let what = || format!("block {hash}");
        if got.meta.size > MAX_BLOCK_SIZE {
            return Err(self.damaged(&what(), format!("it is {} bytes long", got.meta.size)));
        }
        let bytes = got.bytes().await.map_err(|e| self.failed("read", &key, e))?.to_vec();
        let actual = odf::block_hash(&bytes);
        if &actual != hash {
            return Err(self.damaged(&what(), format!("its content hashes to {actual}")));
        }
        let block = odf::decode_block(&bytes).map_err(|e| self.damaged(&what(), e.to_string()))?;
        Ok((bytes, block))
    }

    /// Uploads a local file as the object `hash`, in parts if large, within the pace. The
    /// object appears only once whole (a single PUT, a completed multipart upload, or a
    /// rename into place), so an interrupted upload leaves nothing under its name.
    pub async fn upload_file(
        &self,
        kind: ObjectKind,
        hash: &Multihash,
        path: &Path,
        pace: &mut Pace,
    ) -> Result<(), SyncError> {
        let key = self.object_key(kind, hash);
        let io = |action, error| IoError { action, path: path.to_owned(), error };
        let mut file = tokio::fs::File::open(path).await.map_err(|e| io("open", e))?;
        // One part at a time: parts sent side by side share a slow link, and each must
        // still finish within the request timeout.
        let mut writer =
            BufWriter::with_capacity(Arc::clone(&self.store), key.clone(), PART_SIZE).with_max_concurrency(1);
        let mut buffer = vec![0u8; CHUNK];
        let written: Result<(), SyncError> = async {
            loop {
                let n = file.read(&mut buffer).await.map_err(|e| io("read", e))?;
                if n == 0 {
                    return Ok(());
                }
                writer.write_all(&buffer[..n]).await.map_err(|e| self.failed("upload", &key, e))?;
                pace.sent(n).await;
            }
        }
        .await;
        if let Err(e) = written {
            // Parts already sent are dropped (an abort once shut down would panic).
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.shutdown().await.map_err(|e| self.failed("upload", &key, e))?;
        self.sync_object(kind, hash)
    }

    /// Uploads bytes as the object `hash` of `kind`, within the pace.
    pub async fn upload(
        &self,
        kind: ObjectKind,
        hash: &Multihash,
        bytes: Vec<u8>,
        pace: &mut Pace,
    ) -> Result<(), SyncError> {
        let key = self.object_key(kind, hash);
        let len = bytes.len();
        self.store.put(&key, PutPayload::from(bytes)).await.map_err(|e| self.failed("upload", &key, e))?;
        pace.sent(len).await;
        self.sync_object(kind, hash)
    }

    /// Downloads the object `hash` into `dest`, hashing it on the way; refused (and `dest`
    /// removed) if it is not `size` bytes or does not hash to its name.
    pub async fn download(
        &self,
        kind: ObjectKind,
        hash: &Multihash,
        size: u64,
        dest: &Path,
    ) -> Result<(), SyncError> {
        let (key, got) = self.get_referenced(kind, hash).await?;
        let what = || format!("{kind} {hash}");
        if got.meta.size != size {
            return Err(
                self.damaged(&what(), format!("it is {} bytes, its block says {size}", got.meta.size))
            );
        }
        let io = |action, error| IoError { action, path: dest.to_owned(), error };
        let result: Result<(), SyncError> = async {
            let mut file = tokio::fs::File::create(dest).await.map_err(|e| io("create", e))?;
            let mut hasher = Sha3_256::new();
            let mut received = 0u64;
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.failed("read", &key, e))?;
                received += chunk.len() as u64;
                if received > size {
                    return Err(
                        self.damaged(&what(), format!("it is longer than the {size} bytes its block says"))
                    );
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(|e| io("write", e))?;
            }
            let actual = Multihash::from_digest(SHA3_256, &hasher.finalize().into());
            if &actual != hash || received != size {
                return Err(self.damaged(&what(), format!("its {received} bytes hash to {actual}")));
            }
            file.sync_all().await.map_err(|e| io("sync", e).into())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(dest).await;
        }
        result
    }

    /// Starts reading an object the chain refers to: one that is missing is damage.
    async fn get_referenced(
        &self,
        kind: ObjectKind,
        hash: &Multihash,
    ) -> Result<(ObjectPath, GetResult), SyncError> {
        let key = self.object_key(kind, hash);
        match self.store.get(&key).await {
            Ok(got) => Ok((key, got)),
            Err(object_store::Error::NotFound { .. }) => {
                Err(self.damaged(&format!("{kind} {hash}"), "it is missing (the chain refers to it)".into()))
            }
            Err(e) => Err(self.failed("read", &key, e)),
        }
    }

    /// On a folder remote, makes the object just written durable: the head must never
    /// reach the disk before what it refers to.
    fn sync_object(&self, kind: ObjectKind, hash: &Multihash) -> Result<(), SyncError> {
        let Some(folder) = &self.folder else { return Ok(()) };
        let path = folder.join(kind.folder()).join(hash.to_string());
        std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(|error| IoError {
            action: "sync",
            path,
            error,
        })?;
        Ok(())
    }

    /// On a folder remote, makes the objects' names durable before the head moves.
    pub fn sync_folders(&self) -> Result<(), SyncError> {
        let Some(folder) = &self.folder else { return Ok(()) };
        for kind in [ObjectKind::Data, ObjectKind::Checkpoint, ObjectKind::Block] {
            store::sync_dir(&folder.join(kind.folder()))?;
        }
        Ok(())
    }

    fn damaged(&self, what: &str, reason: String) -> SyncError {
        SyncError::RemoteDamaged { url: self.url.clone(), what: what.to_owned(), reason }
    }
}

enum Location {
    Folder(PathBuf),
    S3 { endpoint: Option<String>, bucket: String, prefix: String },
}

fn locate(url: &str) -> Result<Location, SyncError> {
    let bad = |reason: &str| SyncError::BadUrl { url: url.to_owned(), reason: reason.to_owned() };
    if !url.contains("://") {
        return Ok(Location::Folder(PathBuf::from(url)));
    }
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "credentials do not belong in the URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or an AWS profile",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("a repository URL has no query or fragment"));
    }
    match parsed.scheme() {
        "file" => Ok(Location::Folder(
            parsed.to_file_path().map_err(|()| bad("a file URL needs an absolute path"))?,
        )),
        "s3" => {
            let bucket = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("no bucket"))?;
            let prefix = prefix_of(parsed.path_segments().into_iter().flatten()).map_err(|r| bad(&r))?;
            Ok(Location::S3 { endpoint: None, bucket: bucket.to_owned(), prefix })
        }
        scheme @ ("s3+http" | "s3+https") => {
            let host = parsed.host_str().ok_or_else(|| bad("no host"))?;
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            let endpoint = format!("{}://{host}{port}", &scheme[3..]);
            let mut segments = parsed.path_segments().into_iter().flatten().filter(|s| !s.is_empty());
            let bucket = segments.next().ok_or_else(|| bad("no bucket after the host"))?.to_owned();
            let prefix = prefix_of(segments).map_err(|r| bad(&r))?;
            Ok(Location::S3 { endpoint: Some(endpoint), bucket, prefix })
        }
        other => Err(bad(&format!("scheme '{other}' is not one of file, s3, s3+http, s3+https"))),
    }
}

/// The key prefix from the URL's path segments: empty or ending in `/`.
fn prefix_of<'a>(segments: impl Iterator<Item = &'a str>) -> Result<String, String> {
    let mut prefix = String::new();
    for segment in segments.filter(|s| !s.is_empty()) {
        let segment = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| "the path is not UTF-8".to_owned())?;
        if segment == "." || segment == ".." {
            return Err("the path may not hold '.' or '..'".into());
        }
        prefix.push_str(&segment);
        prefix.push('/');
    }
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_a_prefix() {
        let prefix = |url: &str| Remote::open(url, false).map(|r| (r.prefix, r.folder.is_some()));
        assert_eq!(prefix("s3://bucket/fleet/gps/").unwrap(), ("fleet/gps/".to_owned(), false));
        assert_eq!(prefix("s3://bucket/fleet/gps").unwrap(), ("fleet/gps/".to_owned(), false));
        assert_eq!(prefix("s3://bucket").unwrap(), (String::new(), false));
        assert_eq!(prefix("s3+http://127.0.0.1:9000/bucket/gps/").unwrap(), ("gps/".to_owned(), false));
        assert_eq!(prefix("s3+https://minio.example/bucket/a%20b/").unwrap(), ("a b/".to_owned(), false));
        for bad in [
            "s3+http://127.0.0.1:9000/",
            "s3://key:secret@bucket/x/",
            "s3://bucket/x?versionId=1",
            "ftp://host/x",
            "file://relative",
        ] {
            assert!(matches!(Remote::open(bad, false), Err(SyncError::BadUrl { .. })), "{bad} accepted");
        }
    }

    #[test]
    fn a_missing_folder_is_no_dataset_unless_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("remote");
        let url = format!("file://{}", path.display());
        assert!(matches!(Remote::open(&url, false), Err(SyncError::NoRemoteDataset { .. })));
        let remote = Remote::open(&url, true).unwrap();
        assert_eq!(remote.prefix, "");
        assert!(path.join("blocks").is_dir());
    }
}
