//! Where the lake lives: a local folder (the default, nothing to install) or an S3 bucket
//! and prefix (`lake.root = "s3://bucket/prefix"`), behind one small blocking API over
//! paths relative to the lake root. The Delta tables use the same store.
//!
//! Locally, a file is written to a hidden temporary name, fsynced and renamed into
//! place, and its folder fsynced; on S3 one PUT is atomic. Either way no reader ever
//! sees half a file.

use crate::sinks::lake::layout::{is_table_file, TableKind};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use url::Url;

pub use crate::settings::lake_location::{LakeLocation, LakeRootError};

impl From<LakeRootError> for StoreError {
    fn from(e: LakeRootError) -> Self {
        StoreError::Location(e.to_string())
    }
}

/// How to reach S3: each unset key falls back to the usual `AWS_*` environment
/// variables (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint URL, for a server other than AWS (`http://127.0.0.1:19100`).
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints.
    pub allow_http: bool,
}

impl From<&crate::settings::LakeSettings> for S3Options {
    fn from(s: &crate::settings::LakeSettings) -> Self {
        S3Options {
            endpoint: s.s3_endpoint.clone(),
            region: s.s3_region.clone(),
            access_key_id: s.s3_access_key_id.clone(),
            secret_access_key: s.s3_secret_access_key.clone(),
            allow_http: s.s3_allow_http,
        }
    }
}

/// Lake storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `lake.root` is not a place the lake can be.
    #[error("lake.root {0}")]
    Location(String),
    /// A local file operation failed.
    #[error("lake I/O on {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An object store operation failed.
    #[error("lake object {path}: {source}")]
    Object {
        /// The key.
        path: String,
        /// The cause.
        source: object_store::Error,
    },
    /// The runtime that drives the object store could not start.
    #[error("starting the lake's I/O runtime: {0}")]
    Runtime(std::io::Error),
}

impl crate::failure::Classified for StoreError {
    fn class(&self) -> crate::failure::FailureClass {
        use crate::failure::FailureClass;
        match self {
            StoreError::Location(_) => FailureClass::Fatal,
            StoreError::Io { source, .. } => crate::failure::io_class(source),
            StoreError::Object { source, .. } => match source {
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. } => FailureClass::Fatal,
                _ => FailureClass::Transient,
            },
            StoreError::Runtime(_) => FailureClass::Transient,
        }
    }
}

/// A file under the lake root, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Path relative to the lake root, `/`-separated.
    pub path: String,
    /// Last modified.
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// The lake's storage, with blocking calls.
#[derive(Clone)]
pub struct LakeStore {
    location: LakeLocation,
    /// The bucket's root store (S3 only).
    s3: Option<Arc<dyn ObjectStore>>,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for LakeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LakeStore({})", self.describe())
    }
}

impl LakeStore {
    /// The store `lake.root` names.
    pub fn open(root: &Path, s3: &S3Options) -> Result<Self, StoreError> {
        let location = LakeLocation::parse(&root.to_string_lossy())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(Arc::new)
            .map_err(StoreError::Runtime)?;
        let s3 = match &location {
            LakeLocation::Local(_) => None,
            LakeLocation::S3 { bucket, .. } => {
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                if s3.allow_http {
                    builder = builder.with_allow_http(true);
                }
                let store = builder.build().map_err(|source| StoreError::Object {
                    path: format!("s3://{bucket}"),
                    source,
                })?;
                Some(Arc::new(store) as Arc<dyn ObjectStore>)
            }
        };
        Ok(LakeStore { location, s3, runtime })
    }

    /// The store of a local folder.
    pub fn local(root: &Path) -> Result<Self, StoreError> {
        Self::open(root, &S3Options::default())
    }

    /// The store `settings` name.
    pub fn from_settings(settings: &crate::settings::LakeSettings) -> Result<Self, StoreError> {
        Self::open(&settings.root, &S3Options::from(settings))
    }

    /// The local folder, when the lake is one.
    pub fn local_root(&self) -> Option<&Path> {
        match &self.location {
            LakeLocation::Local(root) => Some(root),
            LakeLocation::S3 { .. } => None,
        }
    }

    /// The bucket's root store, when the lake is on S3.
    pub fn s3_root_store(&self) -> Option<Arc<dyn ObjectStore>> {
        self.s3.clone()
    }

    /// Whether the table of `kind` may exist (on S3 this is not checked: opening a
    /// table that does not exist creates it, empty).
    pub fn may_hold_table(&self, kind: TableKind) -> bool {
        match self.local_root() {
            Some(root) => root.join(kind.dir()).join("_delta_log").exists(),
            None => true,
        }
    }

    /// The runtime blocking calls run on.
    pub fn runtime(&self) -> Arc<tokio::runtime::Runtime> {
        self.runtime.clone()
    }

    /// `lake.root` as a person reads it.
    pub fn describe(&self) -> String {
        match &self.location {
            LakeLocation::Local(root) => root.display().to_string(),
            LakeLocation::S3 { bucket, prefix } if prefix.is_empty() => format!("s3://{bucket}"),
            LakeLocation::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }

    /// The URL of a table's root.
    pub fn table_url(&self, kind: TableKind) -> Result<Url, StoreError> {
        let base = match &self.location {
            LakeLocation::Local(root) => {
                let dir = root.join(kind.dir());
                std::fs::create_dir_all(&dir)
                    .map_err(|source| StoreError::Io { path: dir.display().to_string(), source })?;
                let absolute = root.canonicalize().map_err(|source| StoreError::Io {
                    path: root.display().to_string(),
                    source,
                })?;
                Url::from_directory_path(&absolute)
                    .map_err(|()| StoreError::Location(absolute.display().to_string()))?
            }
            LakeLocation::S3 { .. } => Url::parse(&format!("{}/", self.describe()))
                .map_err(|e| StoreError::Location(format!("{}: {e}", self.describe())))?,
        };
        let url = match kind.dir() {
            "" => base,
            dir => {
                base.join(&format!("{dir}/")).map_err(|e| StoreError::Location(e.to_string()))?
            }
        };
        // Delta table URLs have no trailing slash.
        Ok(Url::parse(url.as_str().trim_end_matches('/')).expect("a URL stays one"))
    }

    fn key(&self, relative: &str) -> StorePath {
        match &self.location {
            LakeLocation::S3 { prefix, .. } if !prefix.is_empty() => {
                StorePath::from(format!("{prefix}/{relative}"))
            }
            _ => StorePath::from(relative),
        }
    }

    fn local_path(&self, relative: &str) -> Option<PathBuf> {
        self.local_root().map(|root| root.join(relative))
    }

    fn object_error(&self, relative: &str) -> impl FnOnce(object_store::Error) -> StoreError {
        let path = format!("{}/{relative}", self.describe());
        move |source| StoreError::Object { path, source }
    }

    /// Writes a whole file at `relative`, atomically. Returns its size.
    pub fn put(&self, relative: &str, bytes: Vec<u8>) -> Result<u64, StoreError> {
        let size = bytes.len() as u64;
        if let Some(path) = self.local_path(relative) {
            write_local_atomically(&path, &bytes)?;
            return Ok(size);
        }
        let store = self.s3.as_ref().expect("an S3 lake has a store");
        let key = self.key(relative);
        let put = store.put(&key, PutPayload::from(bytes));
        self.runtime.block_on(put).map_err(self.object_error(relative))?;
        Ok(size)
    }

    /// Reads a whole file.
    pub fn get(&self, relative: &str) -> Result<Bytes, StoreError> {
        if let Some(path) = self.local_path(relative) {
            let io = |source| StoreError::Io { path: path.display().to_string(), source };
            return std::fs::read(&path).map(Bytes::from).map_err(io);
        }
        let store = self.s3.as_ref().expect("an S3 lake has a store");
        let key = self.key(relative);
        let read = async { store.get(&key).await?.bytes().await };
        self.runtime.block_on(read).map_err(self.object_error(relative))
    }

    /// Whether a file exists.
    pub fn exists(&self, relative: &str) -> Result<bool, StoreError> {
        if let Some(path) = self.local_path(relative) {
            return Ok(path.exists());
        }
        let store = self.s3.as_ref().expect("an S3 lake has a store");
        match self.runtime.block_on(store.head(&self.key(relative))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.object_error(relative)(e)),
        }
    }

    /// Deletes a file; one that is already gone counts as deleted.
    pub fn delete(&self, relative: &str) -> Result<(), StoreError> {
        if let Some(path) = self.local_path(relative) {
            return match std::fs::remove_file(&path) {
                Ok(()) => {
                    if let Some(dir) = path.parent() {
                        let _ = File::open(dir).and_then(|d| d.sync_all());
                    }
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(StoreError::Io { path: path.display().to_string(), source }),
            };
        }
        let store = self.s3.as_ref().expect("an S3 lake has a store");
        match self.runtime.block_on(store.delete(&self.key(relative))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.object_error(relative)(e)),
        }
    }
    /// Every file under the table of `kind` that [`is_table_file`] accepts.
    pub fn table_files(&self, kind: TableKind) -> Result<Vec<Listed>, StoreError> {
        let listed = self.list(kind.dir())?;
        Ok(listed.into_iter().filter(|l| is_table_file(kind, &l.path)).collect())
    }

    /// Every file under the folder `relative` ("" for the whole lake), recursively,
    /// except the Delta logs.
    pub fn list(&self, relative: &str) -> Result<Vec<Listed>, StoreError> {
        self.list_files(relative, false)
    }

    /// Every object of the lake, the Delta logs too (to move or delete a whole lake).
    pub fn list_everything(&self) -> Result<Vec<Listed>, StoreError> {
        self.list_files("", true)
    }

    fn list_files(&self, relative: &str, with_logs: bool) -> Result<Vec<Listed>, StoreError> {
        let mut out = Vec::new();
        if let Some(root) = self.local_root() {
            walk_local(root, &root.join(relative), with_logs, &mut out);
        } else {
            let store = self.s3.as_ref().expect("an S3 lake has a store");
            let base = self.key("");
            let prefix = self.key(relative.trim_end_matches('/'));
            let prefix = (!relative.is_empty())
                .then_some(&prefix)
                .or((!base.as_ref().is_empty()).then_some(&base));
            let listed: Vec<object_store::ObjectMeta> = self
                .runtime
                .block_on(store.list(prefix).try_collect())
                .map_err(self.object_error(relative))?;
            for meta in listed {
                let key = meta.location.as_ref();
                let rel = match base.as_ref() {
                    "" => key.to_string(),
                    base => {
                        key.strip_prefix(base).unwrap_or(key).trim_start_matches('/').to_string()
                    }
                };
                if with_logs || !rel.split('/').any(|part| part == "_delta_log") {
                    out.push(Listed { path: rel, modified: meta.last_modified });
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

fn walk_local(root: &Path, dir: &Path, with_logs: bool, out: &mut Vec<Listed>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if !with_logs && path.file_name().is_some_and(|n| n == "_delta_log") {
            continue;
        }
        if path.is_dir() {
            walk_local(root, &path, with_logs, out);
        } else if let Ok(meta) = entry.metadata() {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            let modified = meta.modified().map(chrono::DateTime::from).unwrap_or_default();
            out.push(Listed { path: rel, modified });
        }
    }
}

/// Writes `bytes` at `path` so that no reader ever sees it half-written: into a hidden
/// temporary file beside it, fsynced, renamed into place, the folder fsynced.
pub fn write_local_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io = |source| StoreError::Io { path: path.display().to_string(), source };
    let dir = path.parent().expect("a file in a folder");
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let written =
        File::create(&tmp).and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_local_folders_or_s3_buckets_with_a_prefix() {
        assert_eq!(LakeLocation::parse("lake").unwrap(), LakeLocation::Local("lake".into()));
        assert_eq!(
            LakeLocation::parse("s3://bucket/a/b/").unwrap(),
            LakeLocation::S3 { bucket: "bucket".into(), prefix: "a/b".into() }
        );
        assert_eq!(
            LakeLocation::parse("s3://bucket").unwrap(),
            LakeLocation::S3 { bucket: "bucket".into(), prefix: String::new() }
        );
        assert!(LakeLocation::parse("s3:///x").is_err());
        let gcs = LakeLocation::parse("gs://bucket/x").unwrap_err().to_string();
        assert!(gcs.contains("not gs://"), "{gcs}");
    }

    #[test]
    fn a_local_store_writes_lists_reads_and_deletes_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = LakeStore::local(dir.path()).unwrap();
        store.put("a=1/x.parquet", b"one".to_vec()).unwrap();
        store.put("_delta_log/0.json", b"{}".to_vec()).unwrap();
        let listed: Vec<String> = store.list("").unwrap().into_iter().map(|l| l.path).collect();
        assert_eq!(listed, vec!["a=1/x.parquet"], "the Delta log is never listed");
        assert_eq!(&store.get("a=1/x.parquet").unwrap()[..], b"one");
        store.delete("a=1/x.parquet").unwrap();
        store.delete("a=1/x.parquet").unwrap();
        assert!(!store.exists("a=1/x.parquet").unwrap());
        let url = store.table_url(TableKind::Retractions).unwrap();
        assert!(url.as_str().starts_with("file:///") && url.as_str().ends_with("/_retractions"));
    }
}
