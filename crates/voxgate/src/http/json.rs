//! `ApiJson<T>`: the JSON body extractor. Checks `Content-Type`, enforces the JSON size limit
//! while reading, and maps every serde failure to a 400 naming the parameter.

use axum::extract::{FromRequest, Request};
use axum::http::header;
use http_body_util::LengthLimitError;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::error::Code;

/// A JSON body deserialized into `T`, rejected in the error envelope.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let principal = req
            .extensions()
            .get::<crate::identity::auth::Principal>()
            .cloned();
        let route = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|p| p.as_str().to_owned());
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::new(Code::UnsupportedMediaType)
                .with_message("Content-Type must be application/json."));
        }
        let limit = state.config.server.json_body_limit_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(too_large(limit));
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|e| {
                let source = e.into_inner();
                if source.downcast_ref::<LengthLimitError>().is_some() {
                    too_large(limit)
                } else {
                    ApiError::new(Code::InvalidJson)
                }
            })?;
        if crate::identity::auth::key::looks_like_key(&String::from_utf8_lossy(&bytes)) {
            let err = match (principal, route) {
                (Some(principal), Some(route)) => {
                    state.refuse_credentials_in_body(&principal, &route).await
                }
                _ => crate::error::Error::from_code(Code::CredentialsInBody),
            };
            return Err(err.into());
        }
        parse(&bytes).map(ApiJson)
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(Code::PayloadTooLarge)
        .with_message(format!("The request body is larger than {limit} bytes."))
}

fn is_json(value: Option<&header::HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Deserializes `bytes`, naming the offending parameter on failure.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first (including trailing data), so a broken document is always invalid_json.
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|_| ApiError::new(Code::InvalidJson))?;
    // serde accepts arrays for structs; the API takes objects only.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid(
            "body",
            Code::InvalidType,
            "The request body must be a JSON object.",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        classify(&path, &inner)
    })?;
    de.end().map_err(|_| ApiError::new(Code::InvalidJson))?;
    Ok(value)
}

/// Classifies an error of the typed pass. The syntax is known to be valid by then, so every
/// error is about data, even those serde_json files as syntax (a boolean where an enum is
/// expected reads as "expected value").
fn classify(path: &str, err: &serde_json::Error) -> ApiError {
    let message = err.to_string();
    let named = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(|field| join(path, field))
    };
    if let Some(param) = named("unknown field `") {
        return ApiError::invalid(
            param.clone(),
            Code::UnknownParameter,
            format!("Unrecognized request argument supplied: {}", short(&param)),
        );
    }
    if let Some(param) = named("missing field `") {
        return ApiError::invalid(
            param.clone(),
            Code::MissingRequiredParameter,
            format!("Missing required parameter: '{}'.", short(&param)),
        );
    }
    if let Some(param) = named("duplicate field `") {
        return ApiError::invalid(
            param.clone(),
            Code::DuplicateParameter,
            format!("Duplicate parameter: '{}'.", short(&param)),
        );
    }
    let param = if path == "." {
        String::new()
    } else {
        path.to_owned()
    };
    if param.is_empty() {
        return ApiError::invalid(
            "body",
            Code::InvalidType,
            "The request body must be a JSON object.",
        );
    }
    // serde's own text can quote the offending value; say what was expected instead.
    let expected = message
        .split("expected ")
        .nth(1)
        .map(|e| e.split(" at line").next().unwrap_or(e).to_owned());
    let message = match expected {
        Some(expected) => format!(
            "Invalid value for '{}': expected {}.",
            short(&param),
            short(&expected)
        ),
        None => format!("Invalid value for '{}'.", short(&param)),
    };
    ApiError::invalid(param, Code::InvalidValue, message)
}

/// The full parameter path: serde_path_to_error's path ends at the field for some errors
/// (unknown field) and at its parent for others (missing field).
fn join(path: &str, field: &str) -> String {
    if path.is_empty() || path == "." {
        field.to_owned()
    } else if path == field || path.ends_with(&format!(".{field}")) {
        path.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// Bounds what is echoed back.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        model: String,
        speed: Option<f64>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        id: String,
    }

    fn param_and_code(json: &str) -> (String, String) {
        let err = parse::<Body>(json.as_bytes()).unwrap_err();
        (
            err.param().unwrap_or_default().to_owned(),
            err.code().as_str().unwrap_or_default().to_owned(),
        )
    }

    #[test]
    fn names_the_parameter_for_every_data_error() {
        let cases = [
            (r#"{"model":"m","nope":1}"#, "nope", "unknown_parameter"),
            (r#"{"speed":1}"#, "model", "missing_required_parameter"),
            (
                r#"{"model":"a","model":"b"}"#,
                "model",
                "duplicate_parameter",
            ),
            (r#"{"model":7}"#, "model", "invalid_value"),
            (r#"{"model":"m","speed":"fast"}"#, "speed", "invalid_value"),
            (
                r#"{"model":"m","inner":{"id":"x","x":1}}"#,
                "inner.x",
                "unknown_parameter",
            ),
            (r#"[1,2]"#, "body", "invalid_type"),
        ];
        for (json, param, code) in cases {
            assert_eq!(
                param_and_code(json),
                (param.to_owned(), code.to_owned()),
                "{json}"
            );
        }
    }

    #[test]
    fn syntax_errors_are_invalid_json() {
        for json in ["", "{", r#"{"model":"m"} trailing"#, "{'model':1}", "\u{0}"] {
            assert!(
                matches!(parse::<Body>(json.as_bytes()), Err(e) if e.code() == Code::InvalidJson),
                "{json:?}"
            );
        }
    }

    #[test]
    fn content_type_must_be_json() {
        let ok = |v: &str| is_json(Some(&header::HeaderValue::from_str(v).expect("header")));
        assert!(ok("application/json"));
        assert!(ok("application/json; charset=utf-8"));
        assert!(ok("Application/JSON"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/jsonx"));
        assert!(!is_json(None));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::parse;
    use crate::error::Code;
    use crate::http::speech::SpeechRequest;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "\\PC{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("model".to_owned()),
                        Just("input".to_owned()),
                        Just("voice".to_owned()),
                        Just("speed".to_owned()),
                        Just("response_format".to_owned()),
                        Just("stream_format".to_owned()),
                        Just("instructions".to_owned()),
                        Just("id".to_owned()),
                        "[a-z_]{1,8}",
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any bytes: parsed, or refused as a client error; never a panic, never a 5xx.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Err(err) = parse::<SpeechRequest>(&bytes) {
                prop_assert_eq!(err.code().spec().status, 400, "{:?}", err);
            }
        }

        /// Any JSON document: refusals name a parameter (or the body) and are 400s.
        #[test]
        fn arbitrary_json_is_parsed_or_refused_with_a_param(value in json_value()) {
            let bytes = serde_json::to_vec(&value).expect("serializes");
            match parse::<SpeechRequest>(&bytes) {
                Ok(_) => prop_assert!(["model", "input", "voice"].iter().all(|k| value.get(k).is_some())),
                Err(err) => {
                    prop_assert!(err.code() != Code::InvalidJson, "{:?}", err);
                    prop_assert!(!err.param().unwrap_or_default().is_empty(), "{:?}", err);
                }
            }
        }
    }
}
