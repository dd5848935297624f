//! A replay job as a spot checker holds it (docs/spot-check.md): the prompt as it was given,
//! the answer (its ids, or its text), how it ended, the receipt if there is one and the
//! parameters; rendered at the receipt's time, tokenized, checked against the receipt, then
//! replayed ([`crate::replay`]). `cocoon replay`, `cocoon audit` and `cocoon_replay` all go
//! through [`replay_job`].

use cocoon_runtime::backend::Backend;
use cocoon_runtime::clock::UtcTime;
use cocoon_runtime::receipt::Receipt;
use cocoon_runtime::{Error, Runtime, SamplingParams};

use crate::replay::{receipt_disagreements, replay, ReplayMode, ReplayReport, Replayed};

/// The answer being checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Its token ids (exact), with how it ended if the source says.
    Ids {
        /// The ids.
        ids: Vec<u32>,
        /// `stop` or `length`, if known.
        finish: Option<String>,
    },
    /// Its text, tokenized again (exact only when the tokenizer round-trips it).
    Text(String),
}

/// What a replay is given.
#[derive(Clone, Debug)]
pub struct ReplayJob<'a> {
    /// The prompt as the worker was given it.
    pub prompt: &'a str,
    /// Fed as is, without the chat template.
    pub raw: bool,
    /// The answer.
    pub answer: Answer,
    /// How it ended (default: the receipt's, else the answer's, else inferred from EOS).
    pub finish: Option<String>,
    /// Exact or tolerant.
    pub mode: ReplayMode,
    /// The receipt: its pin, hashes and parameters must equal what is replayed.
    pub receipt: Option<&'a Receipt>,
    /// The sampling parameters.
    pub params: &'a SamplingParams,
    /// When the prompt was rendered (a receipt's own time: templates may print the date).
    pub when: UtcTime,
}

/// The time a receipt was made, for rendering its prompt's chat template.
pub fn receipt_time(r: &Receipt) -> Result<UtcTime, Error> {
    let secs = cocoon_attest::appraisal::parse_rfc3339(&r.body.time)
        .map_err(|e| Error::InvalidRequest(format!("the receipt's time: {e}")))?;
    Ok(UtcTime::from_system(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
    ))
}

/// The replay on a loaded model: the answer's ids, the prompt's ids rendered at `job.when`,
/// the receipt's agreement, then the pass. Disagreements with the receipt make the verdict
/// inconsistent, with their reasons first.
pub fn replay_job<B: Backend>(rt: &Runtime<B>, job: &ReplayJob<'_>) -> Result<ReplayReport, Error> {
    let tok = rt.tokenizer();
    let (output_ids, answer_finish) = match &job.answer {
        Answer::Ids { ids, finish } => (ids.clone(), finish.clone()),
        Answer::Text(text) => (tok.encode(text, false)?, None),
    };
    let input_ids = if job.raw {
        tok.encode(job.prompt, true)?
    } else {
        tok.encode(&tok.render_chat_at(job.prompt, job.when)?, false)?
    };
    let ends_on_eos = output_ids
        .last()
        .is_some_and(|id| tok.eos_ids().contains(id));
    let finish = job
        .finish
        .clone()
        .or_else(|| job.receipt.map(|r| r.body.output.finish.clone()))
        .or(answer_finish)
        .unwrap_or_else(|| if ends_on_eos { "stop" } else { "length" }.into());
    let shown = if ends_on_eos && finish == "stop" {
        &output_ids[..output_ids.len() - 1]
    } else {
        &output_ids[..]
    };
    let text = tok.decode(shown)?;
    let mut reasons = Vec::new();
    if let Some(r) = job.receipt {
        reasons.extend(receipt_disagreements(
            r,
            &rt.pin(),
            job.prompt,
            !job.raw,
            &input_ids,
            &output_ids,
            &text,
            job.params,
        ));
        if r.body.output.finish != finish {
            reasons.push(format!(
                "the receipt's output.finish is {}, the replay was told {finish}",
                r.body.output.finish
            ));
        }
    }
    let mut report = replay(
        rt,
        &Replayed {
            input_ids: &input_ids,
            output_ids: &output_ids,
            params: job.params,
            finish: &finish,
        },
        job.mode,
    )?;
    if !reasons.is_empty() {
        report.reasons.splice(0..0, reasons);
        report.verdict = "inconsistent";
    }
    Ok(report)
}
