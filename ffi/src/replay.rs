//! Spot-check replay through the C API (docs/spot-check.md): a marketplace's checker replays a
//! worker's answer on its own handle of the pinned model.

use std::ffi::c_char;

use cocoon_engine::replay::receipt_params;
use cocoon_engine::replay_job::{receipt_time, ReplayJob};
use cocoon_runtime::clock::UtcTime;

use crate::cocoon_status::{self, *};
use crate::options::ReplayParams;
use crate::{cocoon_model, give_string, guard, invalid, opt_str_arg, str_arg, Failure};

/// Replays an answer on `model`. `job_json`: `{"prompt": text as given, "raw": false,
/// "output_ids": [ids] | "output": text, "finish": "stop" | "length" (optional), "params":
/// {sampling parameters} (optional; with a receipt they must equal its own), "receipt": {the
/// receipt} (optional)}; `options_json` (NULL for defaults): `mode` (`exact`, default, or
/// `tolerant`). `*report_json_out` (required) receives `{"verdict", "tokens_checked",
/// "first_divergence", "worst_margin", "reasons"}` (free with cocoon_string_free). Returns
/// COCOON_OK when consistent, COCOON_ERR_REJECTED when inconsistent, COCOON_ERR_INVALID_ARGUMENT
/// for a malformed job (no report then). Safe to call from several threads on one handle.
#[no_mangle]
pub unsafe extern "C" fn cocoon_replay(
    model: *const cocoon_model,
    job_json: *const c_char,
    options_json: *const c_char,
    report_json_out: *mut *mut c_char,
) -> cocoon_status {
    guard(|| {
        if model.is_null() || report_json_out.is_null() {
            return Err(invalid("model and report_json_out must not be NULL"));
        }
        // SAFETY: a live handle from cocoon_model_open (header contract); shared access only.
        let model = unsafe { &*model };
        // SAFETY: NUL-terminated strings (header contract).
        let (job, options) = unsafe {
            (
                str_arg(job_json, "job_json")?,
                opt_str_arg(options_json, "options_json")?,
            )
        };
        let p = ReplayParams::parse(job, options).map_err(invalid)?;
        let mut reasons = Vec::new();
        let params = match (&p.receipt, &p.params) {
            (Some(r), given) => {
                let from_receipt = receipt_params(r).map_err(Failure::from)?;
                if given.as_ref().is_some_and(|g| *g != from_receipt) {
                    reasons.push("params differ from the receipt's parameters".to_owned());
                }
                from_receipt
            }
            (None, Some(g)) => g.clone(),
            (None, None) => Default::default(),
        };
        let when = match &p.receipt {
            Some(r) => receipt_time(r).map_err(Failure::from)?,
            None => UtcTime::now(),
        };
        let job = ReplayJob {
            prompt: &p.prompt,
            raw: p.raw,
            answer: p.answer.clone(),
            finish: p.finish.clone(),
            mode: p.mode,
            receipt: p.receipt.as_ref(),
            params: &params,
            when,
        };
        let mut report = model.engine.model().replay(&job).map_err(Failure::from)?;
        if !reasons.is_empty() {
            report.reasons.splice(0..0, reasons);
            report.verdict = "inconsistent";
        }
        let json = serde_json::to_string(&report).map_err(|e| invalid(e.to_string()))?;
        // SAFETY: checked non-NULL.
        unsafe { give_string(report_json_out, json) };
        if report.consistent() {
            Ok(COCOON_OK)
        } else {
            Err(Failure(
                COCOON_ERR_REJECTED,
                format!("inconsistent: {}", report.reasons.join("; ")),
            ))
        }
    })
}
