//! C ABI of the Cocoon runtime (docs/design.md §8): `libcocoon` as a shared and a static library,
//! with the header `include/cocoon.h` generated from this file by cbindgen.
//!
//! Every entry point checks its pointers and UTF-8, runs inside one panic boundary
//! ([`guard`]), and leaves a message for [`cocoon_last_error`] on failure. A model handle may
//! be used from several threads at once: each generation call has its own KV cache, and the
//! shared state (weights, tokenizer, thread pool, evidence provider) is read-only. On CUDA the
//! calls on one handle take turns (one stream; concurrent use has not been checked on a GPU).
#![allow(non_camel_case_types)] // the C names are fixed by docs/design.md §8
#![allow(clippy::missing_safety_doc)] // the safety contract of each function is in the header

mod options;
mod replay;
pub use replay::cocoon_replay;
mod sealed;

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use cocoon_engine::{Engine, EngineConfig, SubmitError};
use cocoon_runtime::notary::{Attestation, ReceiptRequest};
use cocoon_runtime::verify::{parse_receipt, verify_receipt, VerifyOptions};
use cocoon_runtime::{manifest_of, Opened, Pin};

use options::{GenerateParams, ModelOptions, VerifyParams};

/// Result of every call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum cocoon_status {
    /// Success (for verification: accepted).
    COCOON_OK = 0,
    /// A NULL pointer, invalid UTF-8, bad JSON options or parameters.
    COCOON_ERR_INVALID_ARGUMENT = 1,
    /// A file or directory could not be read or written.
    COCOON_ERR_IO = 2,
    /// The model's files do not match the pin.
    COCOON_ERR_PIN_MISMATCH = 3,
    /// A model file is malformed or unsupported.
    COCOON_ERR_MODEL_FORMAT = 4,
    /// The backend failed or is unavailable.
    COCOON_ERR_BACKEND = 5,
    /// Evidence could not be produced.
    COCOON_ERR_ATTESTATION = 6,
    /// Verification ran and rejected (the report says why).
    COCOON_ERR_REJECTED = 7,
    /// A panic was caught; the handle involved should not be used again.
    COCOON_ERR_PANIC = 8,
}

use cocoon_status::*;

/// An opened model: verified weights on a backend with its scheduler (concurrent calls on one
/// handle are batched together), and its evidence provider.
pub struct cocoon_model {
    engine: Engine,
    attestation: Attestation,
}

/// Handles are used from several threads at once (header contract).
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<cocoon_model>();
};

/// Called with each UTF-8 piece of generated text (`piece` is not NUL-terminated; `len` bytes).
/// Return non-zero to stop generation; a receipt is still made for what was produced.
pub type cocoon_token_cb =
    Option<unsafe extern "C" fn(user: *mut c_void, piece: *const c_char, len: usize) -> c_int>;

/// An error on its way to `cocoon_last_error`.
struct Failure(cocoon_status, String);

impl From<cocoon_runtime::Error> for Failure {
    fn from(e: cocoon_runtime::Error) -> Self {
        use cocoon_runtime::Error as E;
        let status = match &e {
            E::Io { .. } | E::MissingFile { .. } => COCOON_ERR_IO,
            E::MalformedPin(_) | E::InvalidRequest(_) | E::RefusedPath { .. } | E::Receipt(_) => {
                COCOON_ERR_INVALID_ARGUMENT
            }
            E::PinMismatch { .. } | E::ModelPinMismatch { .. } => COCOON_ERR_PIN_MISMATCH,
            E::ModelFormat { .. } => COCOON_ERR_MODEL_FORMAT,
            E::Backend(_) => COCOON_ERR_BACKEND,
            // The runtime meets a sealing error only making the attested key's HPKE pair.
            E::Attestation(_) | E::Sealing(_) => COCOON_ERR_ATTESTATION,
        };
        Failure(status, e.to_string())
    }
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure(COCOON_ERR_INVALID_ARGUMENT, message.into())
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(c));
}

/// Runs `f` inside the panic boundary, recording its error for `cocoon_last_error`.
fn guard(f: impl FnOnce() -> Result<cocoon_status, Failure>) -> cocoon_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(status)) => {
            if status == COCOON_OK {
                LAST_ERROR.with(|e| *e.borrow_mut() = None);
            }
            status
        }
        Ok(Err(Failure(status, message))) => {
            set_last_error(&message);
            status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error (panic caught): {what}"));
            COCOON_ERR_PANIC
        }
    }
}

/// Borrows a C string argument.
unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(invalid(format!("{name} is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string that outlives the call (header contract).
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str()
        .map_err(|_| invalid(format!("{name} is not UTF-8")))
}

/// Borrows an optional C string argument (NULL → None).
unsafe fn opt_str_arg<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract of `str_arg`.
        unsafe { str_arg(p, name) }.map(Some)
    }
}

/// Hands a string to the caller through `out`, which was checked to be non-NULL.
unsafe fn give_string(out: *mut *mut c_char, s: String) {
    let c = CString::new(s.replace('\0', "\\u0000")).unwrap_or_default();
    // SAFETY: `out` is a valid, non-NULL pointer to a `char *` (checked by the caller).
    unsafe { *out = c.into_raw() };
}

/// The library's version, a static string (do not free).
#[no_mangle]
pub extern "C" fn cocoon_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

/// This thread's last error message, or NULL after a success. The string belongs to the library
/// and stays valid until the next cocoon_* call on this thread.
#[no_mangle]
pub extern "C" fn cocoon_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
}

/// Computes the pin of the model directory `dir` into `*pin_hex_out` (64 hex characters; free it
/// with cocoon_string_free).
#[no_mangle]
pub unsafe extern "C" fn cocoon_pin(
    dir: *const c_char,
    pin_hex_out: *mut *mut c_char,
) -> cocoon_status {
    guard(|| {
        if pin_hex_out.is_null() {
            return Err(invalid("pin_hex_out is NULL"));
        }
        // SAFETY: header contract for `dir`.
        let dir = unsafe { str_arg(dir, "dir") }?;
        let pin = manifest_of(Path::new(dir), None)?.pin();
        // SAFETY: checked non-NULL above.
        unsafe { give_string(pin_hex_out, pin.to_hex()) };
        Ok(COCOON_OK)
    })
}

/// Opens the model directory `dir`, verifying every file against `pin_hex`. `options_json`
/// (NULL for defaults): `backend` ("auto" (default: CUDA when a driver and the device are
/// usable, else the CPU) | "cpu" | "cpu:avx512bf16" | "cuda"), `device` (CUDA ordinal), `threads` (0: all cores), `attest`
/// ("auto" (default: TDX or SNP, an error without a TEE) | "tdx" | "snp" | "dev" (insecure
/// stand-in) | "none"), `attest_key` (bool: bind receipts through an attested key). On success
/// `*out` is a handle to free with cocoon_model_free.
#[no_mangle]
pub unsafe extern "C" fn cocoon_model_open(
    dir: *const c_char,
    pin_hex: *const c_char,
    options_json: *const c_char,
    out: *mut *mut cocoon_model,
) -> cocoon_status {
    guard(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: header contract for the string arguments.
        let (dir, pin_hex, options) = unsafe {
            (
                str_arg(dir, "dir")?,
                str_arg(pin_hex, "pin_hex")?,
                opt_str_arg(options_json, "options_json")?,
            )
        };
        let options = ModelOptions::parse(options).map_err(invalid)?;
        let pin: Pin = pin_hex.parse()?;
        let attestation = options
            .attestation()
            .map_err(|m| Failure(COCOON_ERR_ATTESTATION, m))?;
        let opened = Opened::open(
            Path::new(dir),
            &pin,
            options.backend,
            options.device,
            options.threads,
            None,
        )?;
        let engine = Engine::from_opened(opened, EngineConfig::default())?;
        let model = Box::new(cocoon_model {
            engine,
            attestation,
        });
        // SAFETY: checked non-NULL above; ownership passes to the caller.
        unsafe { *out = Box::into_raw(model) };
        Ok(COCOON_OK)
    })
}

/// Frees a model handle (NULL is ignored). No call may be using it.
#[no_mangle]
pub unsafe extern "C" fn cocoon_model_free(model: *mut cocoon_model) {
    if !model.is_null() {
        // SAFETY: `model` came from cocoon_model_open and is freed once (header contract).
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(model) })));
    }
}

/// Generates an answer to `prompt`. `params_json` (NULL for defaults): `max_tokens`,
/// `temperature`, `top_p`, `top_k`, `seed`, `raw` (skip the chat template), `nonce` (hex),
/// `job_id`, `prev` (binding of the previous receipt). `cb` (may be NULL) receives the text as
/// it is generated and stops generation by returning non-zero. On success, when
/// `receipt_json_out` is not NULL, `*receipt_json_out` is the receipt (free with
/// cocoon_string_free). Safe to call from several threads on one handle.
#[no_mangle]
pub unsafe extern "C" fn cocoon_generate(
    model: *mut cocoon_model,
    prompt: *const c_char,
    params_json: *const c_char,
    cb: cocoon_token_cb,
    user: *mut c_void,
    receipt_json_out: *mut *mut c_char,
) -> cocoon_status {
    guard(|| {
        if model.is_null() {
            return Err(invalid("model is NULL"));
        }
        // SAFETY: a live handle from cocoon_model_open; only shared access is taken.
        let model = unsafe { &*model };
        // SAFETY: header contract for the string arguments.
        let (prompt, params) = unsafe {
            (
                str_arg(prompt, "prompt")?,
                opt_str_arg(params_json, "params_json")?,
            )
        };
        let params = GenerateParams::parse(params).map_err(invalid)?;
        let mut on_piece = |piece: &str| match cb {
            None => true,
            // SAFETY: the caller's callback, with its own `user` pointer and a buffer of `len`
            // bytes valid for the duration of the call.
            Some(f) => (unsafe { f(user, piece.as_ptr().cast(), piece.len()) }) == 0,
        };
        let request = ReceiptRequest {
            nonce: params.nonce.clone(),
            job_id: params.job_id.clone(),
            prev: params.prev.clone(),
            sealed_request_sha256: None,
        };
        let (_, receipt) = model
            .engine
            .generate_with_receipt(
                prompt,
                params.raw,
                &params.sampling,
                &model.attestation,
                &request,
                &mut on_piece,
            )
            .map_err(submit_failure)?;
        if !receipt_json_out.is_null() {
            let json = serde_json::to_string(&receipt).map_err(|e| invalid(e.to_string()))?;
            // SAFETY: checked non-NULL.
            unsafe { give_string(receipt_json_out, json) };
        }
        Ok(COCOON_OK)
    })
}

/// A refused or failed request as a status: a full queue or a shutdown is the backend's
/// state, the rest what the request asked for.
fn submit_failure(e: SubmitError) -> Failure {
    match e {
        SubmitError::Invalid(e) => Failure::from(e),
        other => Failure(COCOON_ERR_BACKEND, other.to_string()),
    }
}

/// Verifies a receipt. `options_json` (NULL for defaults): `allow_dev` (bool), `model` (a
/// directory to re-pin and compare), `collateral` (path: DCAP collateral for TDX, certificates
/// for SNP), `at` (RFC 3339), `policy` (path of a policy TOML). `*report_json_out` (required) receives the report
/// `{"verdict", "reasons", "notes", "platform", "mode", "binding", "model_pin"}` (free with
/// cocoon_string_free). Returns COCOON_OK when accepted, COCOON_ERR_REJECTED when rejected,
/// COCOON_ERR_INVALID_ARGUMENT when the receipt is malformed (no report then).
#[no_mangle]
pub unsafe extern "C" fn cocoon_verify_receipt(
    receipt_json: *const c_char,
    options_json: *const c_char,
    report_json_out: *mut *mut c_char,
) -> cocoon_status {
    guard(|| {
        if report_json_out.is_null() {
            return Err(invalid("report_json_out is NULL"));
        }
        // SAFETY: header contract for the string arguments.
        let (text, options) = unsafe {
            (
                str_arg(receipt_json, "receipt_json")?,
                opt_str_arg(options_json, "options_json")?,
            )
        };
        let params = VerifyParams::parse(options).map_err(invalid)?;
        let receipt = parse_receipt(text).map_err(|e| invalid(e.to_string()))?;
        let model_pin = match &params.model {
            Some(dir) => Some(manifest_of(Path::new(dir), None)?.pin()),
            None => None,
        };
        let report = verify_receipt(
            &receipt,
            &VerifyOptions {
                allow_dev: params.allow_dev,
                model_pin: model_pin.map(|p| p.0),
                collateral: params.checks.collateral.clone(),
                at: params.checks.at,
                policy: params.checks.policy.clone(),
                gpu_collateral: params.gpu_collateral.clone(),
                ..Default::default()
            },
        );
        let json = serde_json::to_string(&report).map_err(|e| invalid(e.to_string()))?;
        // SAFETY: checked non-NULL.
        unsafe { give_string(report_json_out, json) };
        if report.ok() {
            Ok(COCOON_OK)
        } else {
            Err(Failure(
                COCOON_ERR_REJECTED,
                format!("receipt rejected: {}", report.reasons.join("; ")),
            ))
        }
    })
}

/// Inspects and verifies evidence (`len` bytes: a TDX quote v4/v5, an SNP report, dev evidence,
/// or a receipt's evidence JSON). `options_json` (NULL for defaults): `allow_dev` (bool),
/// `report_data` (hex the evidence must carry), `collateral` (path: DCAP collateral for TDX,
/// certificates and AMD's CRL for SNP), `at` (RFC 3339), `policy` (path of a policy TOML).
/// `*report_json_out` (required) receives the fields and verdict as `cocoon attest verify
/// --json` prints them. Unrecognised bytes: COCOON_ERR_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn cocoon_attest_verify(
    evidence: *const u8,
    len: usize,
    options_json: *const c_char,
    report_json_out: *mut *mut c_char,
) -> cocoon_status {
    guard(|| {
        if report_json_out.is_null() {
            return Err(invalid("report_json_out is NULL"));
        }
        if evidence.is_null() {
            return Err(invalid("evidence is NULL"));
        }
        // SAFETY: the caller passes `len` readable bytes at `evidence` (header contract).
        let bytes = unsafe { std::slice::from_raw_parts(evidence, len) };
        // SAFETY: header contract for `options_json`.
        let options = unsafe { opt_str_arg(options_json, "options_json") }?;
        let params = options::AttestParams::parse(options).map_err(invalid)?;
        let report = options::attest_report(bytes, &params).map_err(invalid)?;
        let ok = report["verdict"] == "ok";
        // SAFETY: checked non-NULL.
        unsafe { give_string(report_json_out, report.to_string()) };
        if ok {
            Ok(COCOON_OK)
        } else {
            Err(Failure(
                COCOON_ERR_REJECTED,
                format!("evidence rejected: {}", report["reasons"]),
            ))
        }
    })
}

/// Frees a string returned by the library (NULL is ignored).
#[no_mangle]
pub unsafe extern "C" fn cocoon_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: `s` came from CString::into_raw in this library and is freed once.
        drop(unsafe { CString::from_raw(s) });
    }
}
