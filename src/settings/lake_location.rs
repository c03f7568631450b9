//! Where `lake.root` points: a local folder or `s3://bucket/prefix`. Parsed here, with
//! the settings, so that `eventline config` refuses the roots `eventline run` cannot use
//! (`gs://...`, `s3://` without a bucket), naming the key.

use std::path::PathBuf;

/// Where `lake.root` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeLocation {
    /// A local folder.
    Local(PathBuf),
    /// A bucket and a key prefix (no leading or trailing `/`).
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix.
        prefix: String,
    },
}

/// Why `lake.root` cannot be a lake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LakeRootError {
    /// `s3://` with nothing after it.
    #[error("{0}: no bucket after s3://")]
    NoBucket(String),
    /// A scheme other than `s3://`.
    #[error("{root}: the lake is a local folder or s3://bucket/prefix, not {scheme}://")]
    Scheme {
        /// The root as given.
        root: String,
        /// Its scheme.
        scheme: String,
    },
}

impl LakeLocation {
    /// Parses `lake.root`: `s3://bucket/prefix`, or a local path.
    pub fn parse(root: &str) -> Result<Self, LakeRootError> {
        if let Some(rest) = root.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(LakeRootError::NoBucket(root.to_string()));
            }
            let prefix = prefix.trim_matches('/').to_string();
            return Ok(LakeLocation::S3 { bucket: bucket.to_string(), prefix });
        }
        if let Some((scheme, _)) = root.split_once("://") {
            return Err(LakeRootError::Scheme {
                root: root.to_string(),
                scheme: scheme.to_string(),
            });
        }
        Ok(LakeLocation::Local(PathBuf::from(root)))
    }
}
