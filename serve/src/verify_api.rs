//! `POST /v1/cocoon/verify`: `{"receipt": {...}, "options": {...}}` → the report `cocoon verify
//! --json` prints. Options are the C API's where they make sense over HTTP: `allow_dev`, `at`
//! (RFC 3339), and `model_pin` (hex, instead of a directory to re-pin). The server-side paths
//! of the C API (`model`, `collateral`, `policy`) are refused: a client does not name files on
//! the server; the server's own `--collateral` is used.

use std::path::Path;

use serde_json::Value;

use cocoon_attest::appraisal::parse_rfc3339;
use cocoon_runtime::verify::{parse_receipt, verify_receipt, VerifyOptions, VerifyReport};

use crate::error::ApiError;

/// Verifies the receipt a request body holds.
pub fn verify_body(body: &[u8], collateral: Option<&Path>) -> Result<VerifyReport, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::invalid("the body must be a JSON object"))?;
    let mut receipt = None;
    let mut opts = VerifyOptions {
        collateral: collateral.map(Path::to_path_buf),
        ..Default::default()
    };
    for (k, v) in obj {
        match k.as_str() {
            "receipt" => receipt = Some(v),
            "options" => options(v, &mut opts)?,
            other => {
                return Err(ApiError::field(
                    &cocoon_runtime::escape::shown(other),
                    "unknown field",
                ))
            }
        }
    }
    let receipt = receipt.ok_or_else(|| ApiError::field("receipt", "is required"))?;
    let receipt =
        parse_receipt(&receipt.to_string()).map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(verify_receipt(&receipt, &opts))
}

fn options(v: &Value, opts: &mut VerifyOptions) -> Result<(), ApiError> {
    if v.is_null() {
        return Ok(());
    }
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::field("options", "must be an object"))?;
    for (k, v) in obj {
        let name = format!("options.{}", cocoon_runtime::escape::shown(k));
        match k.as_str() {
            "allow_dev" => {
                opts.allow_dev = v
                    .as_bool()
                    .ok_or_else(|| ApiError::field(&name, "must be a boolean"))?
            }
            "at" => {
                let s = v
                    .as_str()
                    .ok_or_else(|| ApiError::field(&name, "must be an RFC 3339 time"))?;
                opts.at = Some(parse_rfc3339(s).map_err(|e| ApiError::field(&name, e))?);
            }
            "model_pin" => {
                let s = v.as_str().unwrap_or_default();
                let pin: [u8; 32] = hex::decode(s)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| ApiError::field(&name, "must be 64 hexadecimal digits"))?;
                opts.model_pin = Some(pin);
            }
            "model" | "collateral" | "policy" => {
                return Err(ApiError::field(
                    &name,
                    "names a file on the server, which is not accepted over HTTP (use model_pin; the server's --collateral is used)",
                ))
            }
            _ => return Err(ApiError::field(&name, "unknown option")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bodies_are_named() {
        for (body, what) in [
            ("{", "not valid JSON"),
            ("{}", "`receipt`"),
            (r#"{"receipt":{},"x":1}"#, "`x`"),
            (r#"{"receipt":{}}"#, "malformed receipt"),
            (
                r#"{"receipt":{},"options":{"collateral":"/etc/passwd"}}"#,
                "over HTTP",
            ),
            (
                r#"{"receipt":{},"options":{"at":"yesterday"}}"#,
                "`options.at`",
            ),
            (
                r#"{"receipt":{},"options":{"model_pin":"ab"}}"#,
                "`options.model_pin`",
            ),
        ] {
            let e = verify_body(body.as_bytes(), None).unwrap_err();
            assert!(e.message.contains(what), "{body}: {}", e.message);
        }
    }
}
