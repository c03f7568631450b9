//! Where `lake.root` points: a local folder or `s3://bucket/prefix`. Parsed here, with
//! the settings, so that `eventline config` refuses the roots `eventline run` cannot use
//! (`gs://...`, `s3://` without a bucket), naming the key.

use std::path::{Path, PathBuf};

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
    /// A local root this process cannot write.
    #[error("{root}: not a writable folder: {reason}")]
    NotWritable {
        /// The root as given.
        root: String,
        /// What the probe met.
        reason: String,
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

    /// Whether this process can write a local root, without creating anything: the
    /// folder itself or, while it does not exist yet, the nearest folder above it gets
    /// a probe file that is removed at once. An S3 root is probed by the run's start,
    /// which needs the credentials and the server.
    pub fn check_writable(&self) -> Result<(), LakeRootError> {
        let LakeLocation::Local(root) = self else { return Ok(()) };
        let fail = |reason: String| LakeRootError::NotWritable {
            root: root.display().to_string(),
            reason,
        };
        let folder = existing_ancestor(root).map_err(|e| fail(e.to_string()))?;
        if !folder.is_dir() {
            return Err(fail(format!("{} is not a folder", folder.display())));
        }
        let probe = folder.join(format!(".eventline-probe-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&probe, b"").map_err(|e| fail(format!("{}: {e}", folder.display())))?;
        std::fs::remove_file(&probe).map_err(|e| fail(format!("{}: {e}", probe.display())))
    }
}

/// `path`, or the nearest of its ancestors that exists (the current folder for a
/// relative path with none).
fn existing_ancestor(path: &Path) -> std::io::Result<PathBuf> {
    for candidate in path.ancestors() {
        let candidate = if candidate.as_os_str().is_empty() { Path::new(".") } else { candidate };
        match std::fs::symlink_metadata(candidate) {
            Ok(_) => return Ok(candidate.to_path_buf()),
            // A file on the way: found further up, and named there.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
    }
    Ok(PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_folder_under_a_writable_one_passes_and_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b/lake");
        LakeLocation::Local(root.clone()).check_writable().unwrap();
        assert!(!dir.path().join("a").exists(), "the check creates nothing");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no probe left");
    }

    #[test]
    fn a_file_on_the_way_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, b"").unwrap();
        let error = LakeLocation::Local(blocker.join("lake")).check_writable().unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("not a writable folder") && text.contains("is not a folder"),
            "{text}"
        );
    }

    #[test]
    fn other_schemes_are_refused_and_s3_is_left_to_the_start() {
        assert!(matches!(LakeLocation::parse("gs://b/l"), Err(LakeRootError::Scheme { .. })));
        assert_eq!(LakeLocation::parse("s3://"), Err(LakeRootError::NoBucket("s3://".into())));
        let s3 = LakeLocation::parse("s3://bucket/a/b/").unwrap();
        assert_eq!(s3, LakeLocation::S3 { bucket: "bucket".into(), prefix: "a/b".into() });
        s3.check_writable().unwrap();
    }
}
