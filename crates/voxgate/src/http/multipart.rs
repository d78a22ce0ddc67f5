//! Multipart uploads (transcription files, voice samples): caps enforced while reading, the
//! file streamed to a private temporary file in the upload spool, every field checked
//! against the route's spec.
//!
//! - Only `multipart/form-data` is read (415 otherwise).
//! - Only the spec's fields are accepted; a field sent twice is refused unless the spec says
//!   it repeats (`timestamp_granularities[]`).
//! - The file is counted as it arrives: one byte over the tier's cap ends the read with 413,
//!   before more is buffered.
//! - The client's filename is kept only to check its extension; the file is stored under a
//!   random name in this process's spool ([`crate::data::spool`]) and removed when the
//!   request ends.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use tokio::io::AsyncWriteExt as _;

use super::error::ApiError;
use crate::data::spool::{SpooledFile, UploadDir};
use crate::error::Code;

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

/// A parsed form.
#[derive(Debug)]
pub struct Form {
    /// Text fields in arrival order.
    pub fields: Vec<(String, String)>,
    pub file: Option<SpooledFile>,
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

fn bad(code: Code, message: &'static str) -> ApiError {
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
    let unsupported = || {
        ApiError::new(Code::UnsupportedMediaType)
            .with_message("Content-Type must be multipart/form-data.")
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unsupported)?;
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case(expected) {
        return Err(unsupported());
    }
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        bad(
            Code::InvalidMultipart,
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
    let too_large = || {
        ApiError::invalid(
            spec.file_field,
            Code::FileTooLarge,
            format!(
                "The uploaded file is larger than {} bytes.",
                spec.max_file_bytes
            ),
        )
    };
    let read_error = |err: multer::Error| match err {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            too_large()
        }
        _ => bad(Code::InvalidMultipart, "The multipart body is malformed."),
    };
    while let Some(mut field) = multipart.next_field().await.map_err(read_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == spec.file_field {
            if form.file.is_some() {
                return Err(ApiError::invalid(
                    name,
                    Code::DuplicateParameter,
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
            form.file = Some(SpooledFile {
                temp,
                len,
                filename,
            });
        } else if spec.text_fields.contains(&name.as_str()) {
            let repeatable = spec.repeatable.contains(&name.as_str());
            if !repeatable && form.fields.iter().any(|(n, _)| *n == name) {
                return Err(ApiError::invalid(
                    name.clone(),
                    Code::DuplicateParameter,
                    format!("'{name}' was sent more than once."),
                ));
            }
            if form.fields.len() >= MAX_FIELDS {
                return Err(bad(Code::TooManyFields, "The form has too many fields."));
            }
            if field.file_name().is_some() {
                return Err(ApiError::invalid(
                    name.clone(),
                    Code::InvalidType,
                    format!("'{name}' must be a text field, not a file."),
                ));
            }
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(read_error)? {
                value.extend_from_slice(&chunk);
                if value.len() > spec.max_text_bytes {
                    return Err(ApiError::invalid(
                        name.clone(),
                        Code::ParameterTooLong,
                        format!("'{name}' is longer than {} bytes.", spec.max_text_bytes),
                    ));
                }
            }
            let value = String::from_utf8(value).map_err(|_| {
                ApiError::invalid(
                    name.clone(),
                    Code::InvalidUtf8,
                    format!("'{name}' is not valid UTF-8."),
                )
            })?;
            form.fields.push((name, value));
        } else {
            let shown = clip(&name);
            return Err(ApiError::invalid(
                shown.clone(),
                Code::UnknownParameter,
                format!("Unrecognized request argument supplied: {shown}"),
            ));
        }
    }
    Ok(form)
}
