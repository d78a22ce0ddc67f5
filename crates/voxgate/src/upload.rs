//! Multipart uploads (transcription files, voice samples): caps enforced while reading, the
//! file streamed to a private temporary file, every field checked against the route's spec.
//!
//! - Only `multipart/form-data` is read (415 otherwise).
//! - Only the spec's fields are accepted; a field sent twice is refused unless the spec says
//!   it repeats (`timestamp_granularities[]`).
//! - The file is counted as it arrives: one byte over the tier's cap ends the read with 413,
//!   before more is buffered.
//! - The client's filename is kept only to check its extension; the file is stored under a
//!   random name in `<data_dir>/tmp/uploads` (0700), created 0600, and removed when the
//!   request ends ([`TempUpload`] deletes on drop) or, after a crash, at the next start-up
//!   ([`UploadDir::prepare`] sweeps the directory).

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{HeaderMap, header};
use tokio::io::AsyncWriteExt as _;

use voxgate_input::probe::{self, ProbeLimits, Probed};

use crate::error::ApiError;

/// The private directory uploads are spooled to.
#[derive(Debug, Clone)]
pub struct UploadDir {
    path: PathBuf,
}

impl UploadDir {
    /// Creates `<data_dir>/tmp/uploads` (0700) and removes whatever a previous run left.
    pub fn prepare(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join("tmp").join("uploads");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        let mut swept = 0usize;
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            if entry.file_type()?.is_file() && std::fs::remove_file(entry.path()).is_ok() {
                swept += 1;
            }
        }
        if swept > 0 {
            tracing::info!(files = swept, "removed uploads left by an earlier run");
        }
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes spool files older than `age` (abandoned: requests end long before); returns
    /// how many.
    pub async fn sweep_older_than(&self, age: std::time::Duration) -> u64 {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&path) else {
                return 0;
            };
            let mut swept = 0;
            for entry in entries.flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| crate::retention::older_than(t, age));
                if old && std::fs::remove_file(entry.path()).is_ok() {
                    swept += 1;
                }
            }
            swept
        })
        .await
        .unwrap_or(0)
    }

    /// A new, empty, private file under a random name.
    async fn create(&self) -> std::io::Result<(TempUpload, tokio::fs::File)> {
        let path = self
            .path
            .join(format!("{}.upload", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await?;
        Ok((TempUpload { path }, file))
    }
}

/// A spooled upload; the file is removed when this is dropped.
#[derive(Debug)]
pub struct TempUpload {
    path: PathBuf,
}

impl TempUpload {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %err, "could not remove a spooled upload");
        }
    }
}

/// What a route accepts.
#[derive(Debug, Clone)]
pub struct FormSpec {
    /// The one file field (`file`, `audio_sample`).
    pub file_field: &'static str,
    /// Text fields accepted.
    pub text_fields: &'static [&'static str],
    /// Text fields that may appear more than once.
    pub repeatable: &'static [&'static str],
    /// Largest file, enforced while reading.
    pub max_file_bytes: u64,
    /// Largest text field value.
    pub max_text_bytes: usize,
}

/// The uploaded file.
#[derive(Debug)]
pub struct FileField {
    pub temp: TempUpload,
    pub len: u64,
    /// The client's name for it: used only for the extension check, never for storage.
    pub filename: String,
}

/// A parsed form.
#[derive(Debug)]
pub struct Form {
    /// Text fields in arrival order.
    pub fields: Vec<(String, String)>,
    pub file: Option<FileField>,
}

impl Form {
    /// The value of a single-valued field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable field.
    pub fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Most text fields a form may carry (repeats included).
const MAX_FIELDS: usize = 32;

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::invalid("body", code, message)
}

/// Field names are echoed only in a short, printable form.
fn clip(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

/// Reads a `multipart/form-data` body against `spec`, spooling the file to `dir`.
pub async fn read_form(
    headers: &HeaderMap,
    body: Body,
    dir: &UploadDir,
    spec: &FormSpec,
) -> Result<Form, ApiError> {
    let expected = "multipart/form-data";
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::UnsupportedMediaType { expected })?;
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case(expected) {
        return Err(ApiError::UnsupportedMediaType { expected });
    }
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        bad(
            "invalid_multipart",
            "The multipart boundary is missing or malformed.",
        )
    })?;
    let text_budget = (spec.max_text_bytes as u64).saturating_mul(MAX_FIELDS as u64);
    let whole = spec
        .max_file_bytes
        .saturating_add(text_budget)
        .saturating_add(64 * 1024);
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(whole)
            .for_field(spec.file_field, spec.max_file_bytes.saturating_add(1)),
    );
    let mut multipart =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut form = Form {
        fields: Vec::new(),
        file: None,
    };
    let too_large = || ApiError::FileTooLarge {
        param: spec.file_field,
        limit: spec.max_file_bytes,
    };
    let read_error = |err: multer::Error| match err {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            too_large()
        }
        _ => bad("invalid_multipart", "The multipart body is malformed."),
    };
    while let Some(mut field) = multipart.next_field().await.map_err(read_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == spec.file_field {
            if form.file.is_some() {
                return Err(ApiError::invalid(
                    name,
                    "duplicate_parameter",
                    "The file was sent more than once.",
                ));
            }
            let filename = field.file_name().unwrap_or_default().to_owned();
            let (temp, mut out) = dir.create().await.map_err(ApiError::internal)?;
            let mut len: u64 = 0;
            while let Some(chunk) = field.chunk().await.map_err(read_error)? {
                len += chunk.len() as u64;
                if len > spec.max_file_bytes {
                    return Err(too_large());
                }
                out.write_all(&chunk).await.map_err(ApiError::internal)?;
            }
            out.flush().await.map_err(ApiError::internal)?;
            form.file = Some(FileField {
                temp,
                len,
                filename,
            });
        } else if spec.text_fields.contains(&name.as_str()) {
            let repeatable = spec.repeatable.contains(&name.as_str());
            if !repeatable && form.fields.iter().any(|(n, _)| *n == name) {
                return Err(ApiError::invalid(
                    name.clone(),
                    "duplicate_parameter",
                    format!("'{name}' was sent more than once."),
                ));
            }
            if form.fields.len() >= MAX_FIELDS {
                return Err(bad("too_many_fields", "The form has too many fields."));
            }
            if field.file_name().is_some() {
                return Err(ApiError::invalid(
                    name.clone(),
                    "invalid_type",
                    format!("'{name}' must be a text field, not a file."),
                ));
            }
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(read_error)? {
                value.extend_from_slice(&chunk);
                if value.len() > spec.max_text_bytes {
                    return Err(ApiError::invalid(
                        name.clone(),
                        "parameter_too_long",
                        format!("'{name}' is longer than {} bytes.", spec.max_text_bytes),
                    ));
                }
            }
            let value = String::from_utf8(value).map_err(|_| {
                ApiError::invalid(
                    name.clone(),
                    "invalid_utf8",
                    format!("'{name}' is not valid UTF-8."),
                )
            })?;
            form.fields.push((name, value));
        } else {
            let shown = clip(&name);
            return Err(ApiError::invalid(
                shown.clone(),
                "unknown_parameter",
                format!("Unrecognized request argument supplied: {shown}"),
            ));
        }
    }
    Ok(form)
}

/// Checks and decodes the spooled file on a blocking thread (see `voxgate_input::probe`):
/// extension allow-list, magic bytes, polyglot checks, a real decode with duration counted
/// from decoded frames.
pub async fn probe(
    file: &FileField,
    param: &'static str,
    limits: ProbeLimits,
) -> Result<Probed, ApiError> {
    let path = file.temp.path().to_path_buf();
    let (len, filename, max_bytes) = (file.len, file.filename.clone(), limits.max_bytes);
    let probed = tokio::task::spawn_blocking(move || {
        let handle = std::fs::File::open(path).map_err(ApiError::internal)?;
        Ok::<_, ApiError>(probe::probe_file(handle, len, &filename, &limits))
    })
    .await
    .map_err(ApiError::internal)??;
    probed.map_err(|err| {
        let code = err.code();
        match err.status() {
            413 => ApiError::FileTooLarge {
                param,
                limit: max_bytes,
            },
            415 => ApiError::UnsupportedFile {
                param,
                code,
                message: err.to_string(),
            },
            400 => ApiError::InvalidFile {
                param,
                code,
                message: err.to_string(),
            },
            _ => ApiError::internal(err),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_makes_a_private_directory_and_sweeps_leftovers() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = UploadDir::prepare(data.path()).expect("prepare");
        std::fs::write(dir.path().join("left.upload"), b"old").expect("write");
        let dir = UploadDir::prepare(data.path()).expect("prepare again");
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);
        let mode = std::fs::metadata(dir.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[tokio::test]
    async fn spooled_files_are_private_and_removed_on_drop() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = UploadDir::prepare(data.path()).expect("prepare");
        let (temp, _file) = dir.create().await.expect("create");
        let path = temp.path().to_path_buf();
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(temp);
        assert!(!path.exists());
    }
}
