//! Sealed requests through the C API (docs/sealed.md): the worker's side (its key document,
//! answering a sealed request on a model handle) and the client's side (check a key and seal,
//! open an answer), so that an integrator in another language needs nothing else.

use std::ffi::c_char;

use serde_json::{Map, Value};

use cocoon_engine::sealed::{answer_blocking, SealedFailure};
use cocoon_runtime::notary::Attestation;
use cocoon_sealed::client::{check_key, open_response, seal_request, ClientSecret, KeyCheck};
use cocoon_sealed::plaintext::{messages_from_json, Prompt};
use cocoon_sealed::{SealError, Sealed};

use crate::cocoon_status::{self, *};
use crate::{cocoon_model, give_string, guard, invalid, opt_str_arg, str_arg, Failure};

/// Largest `max_tokens` a sealed request answered through the C API may ask for (and its
/// default).
pub const SEALED_MAX_TOKENS: u32 = 4096;

/// Writes the model's attested key document `{"sign", "hpke", "evidence"}` (what a client
/// checks before sealing) to `*key_json_out` (free with cocoon_string_free). The model must have
/// been opened with `"attest_key": true`; otherwise COCOON_ERR_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn cocoon_worker_key(
    model: *const cocoon_model,
    key_json_out: *mut *mut c_char,
) -> cocoon_status {
    guard(|| {
        if model.is_null() || key_json_out.is_null() {
            return Err(invalid("model and key_json_out must not be NULL"));
        }
        // SAFETY: a live handle from cocoon_model_open (header contract).
        let model = unsafe { &*model };
        let Attestation::Key(k) = &model.attestation else {
            return Err(invalid(
                "the model has no attested key: open it with \"attest_key\": true",
            ));
        };
        let json = serde_json::to_string(k.json()).map_err(|e| invalid(e.to_string()))?;
        // SAFETY: checked non-NULL.
        unsafe { give_string(key_json_out, json) };
        Ok(COCOON_OK)
    })
}

/// Answers a sealed request (`request_json`: `{"version": 1, "enc", "ciphertext"}`) on `model`:
/// opens it with the attested HPKE key, generates, and writes the sealed response to
/// `*response_json_out` (free with cocoon_string_free). A request that does not open returns
/// COCOON_ERR_INVALID_ARGUMENT with the one message "the sealed request could not be opened";
/// a malformed opened request names the field, never a value. Safe to call from several threads
/// on one handle (the calls are batched).
#[no_mangle]
pub unsafe extern "C" fn cocoon_answer_sealed(
    model: *const cocoon_model,
    request_json: *const c_char,
    response_json_out: *mut *mut c_char,
) -> cocoon_status {
    guard(|| {
        if model.is_null() || response_json_out.is_null() {
            return Err(invalid("model and response_json_out must not be NULL"));
        }
        // SAFETY: a live handle and a NUL-terminated string (header contract).
        let (model, request) = unsafe { (&*model, str_arg(request_json, "request_json")?) };
        let sealed = answer_blocking(
            &model.engine,
            &model.attestation,
            request.as_bytes(),
            SEALED_MAX_TOKENS,
        )
        .map_err(|e| match e {
            SealedFailure::Failed(m) => Failure(COCOON_ERR_BACKEND, m),
            other => invalid(other.to_string()),
        })?;
        // SAFETY: checked non-NULL.
        unsafe { give_string(response_json_out, sealed.to_json().to_string()) };
        Ok(COCOON_OK)
    })
}

/// A request as `cocoon_seal` takes it: prompt, params, job id, nonce.
type ClientRequest = (Prompt, Map<String, Value>, Option<String>, Option<String>);

/// The request a client seals: `{"messages": [{"role", "content"}...]}` or `{"prompt", "raw"}`,
/// with optional `params`, `job_id`, `nonce`.
fn read_request(text: &str) -> Result<ClientRequest, Failure> {
    let v: Value = serde_json::from_str(text).map_err(|e| invalid(format!("request_json: {e}")))?;
    let o = v
        .as_object()
        .ok_or_else(|| invalid("request_json must be an object"))?;
    if let Some(k) = o
        .keys()
        .find(|k| !["messages", "prompt", "raw", "params", "job_id", "nonce"].contains(&k.as_str()))
    {
        return Err(invalid(format!("request_json: unknown field {k:?}")));
    }
    let text_of = |k: &str| match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        _ => Err(invalid(format!("request_json: `{k}` must be a string"))),
    };
    let prompt = match (o.get("messages"), text_of("prompt")?) {
        (Some(list @ Value::Array(_)), None) => Prompt::Messages(
            messages_from_json(list).map_err(|e| invalid(format!("request_json: {e}")))?,
        ),
        (None, Some(p)) => Prompt::Text {
            prompt: p,
            raw: o.get("raw").and_then(Value::as_bool).unwrap_or(false),
        },
        _ => {
            return Err(invalid(
                "request_json: give `messages` (a list) or `prompt`",
            ))
        }
    };
    let params = match o.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        _ => return Err(invalid("request_json: `params` must be an object")),
    };
    Ok((prompt, params, text_of("job_id")?, text_of("nonce")?))
}

/// Client side: checks the worker's key document `key_json` (evidence, binding; `options_json`,
/// NULL for defaults: `allow_dev`, `collateral`, `at`, `policy` as for cocoon_verify_receipt)
/// and only then seals `request_json` to it. `*sealed_json_out` receives the request to send,
/// `*secret_json_out` the secret that opens its answer (both freed with cocoon_string_free;
/// keep the secret private). A key that fails its check: COCOON_ERR_REJECTED, nothing sealed.
#[no_mangle]
pub unsafe extern "C" fn cocoon_seal(
    key_json: *const c_char,
    request_json: *const c_char,
    options_json: *const c_char,
    sealed_json_out: *mut *mut c_char,
    secret_json_out: *mut *mut c_char,
) -> cocoon_status {
    guard(|| {
        if sealed_json_out.is_null() || secret_json_out.is_null() {
            return Err(invalid(
                "sealed_json_out and secret_json_out must not be NULL",
            ));
        }
        // SAFETY: NUL-terminated strings (header contract).
        let (key, request, options) = unsafe {
            (
                str_arg(key_json, "key_json")?,
                str_arg(request_json, "request_json")?,
                opt_str_arg(options_json, "options_json")?,
            )
        };
        let check = crate::options::SealParams::parse(options).map_err(invalid)?;
        let (prompt, params, job_id, nonce) = read_request(request)?;
        let trusted = check_key(
            key.as_bytes(),
            &KeyCheck {
                allow_dev: check.allow_dev,
                collateral: check.checks.collateral,
                policy: check.checks.policy,
                at: check.checks.at,
                gpu_collateral: check.gpu_collateral,
            },
        )
        .map_err(|e| match e {
            SealError::Untrusted(_) => Failure(COCOON_ERR_REJECTED, e.to_string()),
            other => invalid(other.to_string()),
        })?;
        let (sealed, secret) = seal_request(&trusted, prompt, params, job_id, nonce)
            .map_err(|e| invalid(e.to_string()))?;
        // SAFETY: checked non-NULL.
        unsafe {
            give_string(sealed_json_out, sealed.to_json().to_string());
            give_string(secret_json_out, secret.to_json().to_string());
        }
        Ok(COCOON_OK)
    })
}

/// Client side: opens the sealed answer `response_json` with `secret_json` (from cocoon_seal),
/// checks that its receipt names the request and is signed by the key it was sealed to, and
/// writes `{"text", "output_ids", "finish", "receipt"}` to `*plaintext_json_out` (free with
/// cocoon_string_free). Not its answer, or not opened: COCOON_ERR_REJECTED.
#[no_mangle]
pub unsafe extern "C" fn cocoon_unseal(
    secret_json: *const c_char,
    response_json: *const c_char,
    plaintext_json_out: *mut *mut c_char,
) -> cocoon_status {
    guard(|| {
        if plaintext_json_out.is_null() {
            return Err(invalid("plaintext_json_out must not be NULL"));
        }
        // SAFETY: NUL-terminated strings (header contract).
        let (secret, response) = unsafe {
            (
                str_arg(secret_json, "secret_json")?,
                str_arg(response_json, "response_json")?,
            )
        };
        let secret =
            ClientSecret::from_json(secret.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let sealed = Sealed::parse(response.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let plain = open_response(&secret, &sealed).map_err(|e| match e {
            SealError::NotOpened | SealError::Mismatch(_) => {
                Failure(COCOON_ERR_REJECTED, e.to_string())
            }
            other => invalid(other.to_string()),
        })?;
        let json = serde_json::json!({"text": plain.text, "output_ids": plain.output_ids,
            "finish": plain.finish, "receipt": plain.receipt});
        // SAFETY: checked non-NULL.
        unsafe { give_string(plaintext_json_out, json.to_string()) };
        Ok(COCOON_OK)
    })
}
