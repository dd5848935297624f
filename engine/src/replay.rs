//! Spot-check replay (docs/design.md §13): re-executing a receipt's work in one teacher-forced
//! pass and judging whether the answer came from this model with these parameters.
//!
//! The prompt is fed as prompt rows and the answer (all but its last token) as decode rows, in
//! one pass: exactly the kinds of rows that produced it, so on the backend kind that generated
//! it every position's logits are the ones the sampler saw (bit for bit on the CPU, §16). Then
//! each output id is checked against the sampler's choice: the argmax at temperature 0, else
//! the seeded ChaCha20 draw over the same distribution, token after token.
//!
//! `Exact` needs every choice equal. `Tolerant` (another backend checking this one: the CPU
//! checking a GPU's work) accepts near-ties: a greedy token whose logit is within
//! [`GREEDY_MARGIN`] of the best, a sampled token whose interval the draw missed by at most
//! [`SAMPLED_MARGIN`] of probability mass. The worst margin seen is reported either way.

use cocoon_runtime::backend::{blocks_for, Backend, Batch, Logits, RowKind};
use cocoon_runtime::model::llama::{Output, Workspace};
use cocoon_runtime::sampling::{argmax, Sampler};
use cocoon_runtime::{Error, Runtime, SamplingParams};

/// Logit difference a tolerant replay accepts between a greedy token and the best one.
pub const GREEDY_MARGIN: f32 = 0.05;
/// Probability mass by which a tolerant replay lets a sampled draw miss its token.
pub const SAMPLED_MARGIN: f64 = 0.01;

/// How strictly the choices are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayMode {
    /// Every output id must be the sampler's choice (same backend kind).
    Exact,
    /// Near-ties within the documented margins pass (another backend).
    Tolerant,
}

impl std::str::FromStr for ReplayMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exact" => Ok(ReplayMode::Exact),
            "tolerant" => Ok(ReplayMode::Tolerant),
            other => Err(format!("{other:?} is not exact or tolerant")),
        }
    }
}

/// What was generated, as a receipt and its answer describe it.
#[derive(Clone, Debug)]
pub struct Replayed<'a> {
    /// Prompt ids (after the chat template).
    pub input_ids: &'a [u32],
    /// Answer ids (ending with the EOS id when it stopped on one).
    pub output_ids: &'a [u32],
    /// Sampling parameters.
    pub params: &'a SamplingParams,
    /// `stop`, `length` or `cancelled`.
    pub finish: &'a str,
}

/// The verdict of a replay.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ReplayReport {
    /// `consistent` or `inconsistent`.
    pub verdict: &'static str,
    /// Output tokens whose choice was checked.
    pub tokens_checked: usize,
    /// Index of the first output token that is not the sampler's choice.
    pub first_divergence: Option<usize>,
    /// The largest margin seen: for greedy tokens the logit gap to the best token, for sampled
    /// tokens the probability mass by which the draw missed (0 when every choice matched).
    pub worst_margin: f64,
    /// Why it is inconsistent (empty when consistent).
    pub reasons: Vec<String>,
}

impl ReplayReport {
    /// Whether the answer is consistent with the model and parameters.
    pub fn consistent(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// Replays `r` on `runtime` (one teacher-forced pass) and judges every output token, the
/// answer's length and its end.
pub fn replay<B: Backend>(
    runtime: &Runtime<B>,
    r: &Replayed<'_>,
    mode: ReplayMode,
) -> Result<ReplayReport, Error> {
    let model = runtime.model();
    let c = &model.config;
    let eos = runtime.tokenizer().eos_ids();
    let (n, m) = (r.input_ids.len(), r.output_ids.len());
    r.params.validate()?;
    if n == 0 {
        return Err(Error::InvalidRequest("the prompt has no tokens".into()));
    }
    if let Some(bad) = r
        .input_ids
        .iter()
        .chain(r.output_ids)
        .find(|id| **id as usize >= c.vocab_size)
    {
        return Err(Error::InvalidRequest(format!(
            "token id {bad} is outside the vocabulary of {}",
            c.vocab_size
        )));
    }
    let mut reasons = Vec::new();
    let budget = (r.params.max_tokens as usize).min(c.max_position_embeddings.saturating_sub(n));
    if n + m > c.max_position_embeddings || m > budget {
        reasons.push(format!(
            "the answer has {m} tokens, more than max_tokens ({}) and the context allow ({budget})",
            r.params.max_tokens
        ));
        return Ok(report(0, None, 0.0, reasons));
    }
    // The end: an EOS only as the last token; `stop` ends on one, `length` at the budget.
    if let Some(i) = r.output_ids[..m.saturating_sub(1)]
        .iter()
        .position(|id| eos.contains(id))
    {
        reasons.push(format!(
            "token {i} is an end-of-sequence token, yet the answer goes on after it"
        ));
    }
    let ends_on_eos = r.output_ids.last().is_some_and(|id| eos.contains(id));
    match r.finish {
        "stop" if !ends_on_eos => reasons.push(
            "the answer is marked stop, but its last token is not an end-of-sequence token (cut short?)"
                .into(),
        ),
        "length" if ends_on_eos => {
            reasons.push("the answer is marked length, but it ends on an end-of-sequence token".into())
        }
        "length" if m != budget => reasons.push(format!(
            "the answer is marked length with {m} tokens; its limit was {budget}"
        )),
        "stop" | "length" | "cancelled" => {}
        other => reasons.push(format!("unknown finish {other:?}")),
    }
    if m == 0 {
        return Ok(report(0, None, 0.0, reasons));
    }

    // One pass: the prompt as prompt rows (the last one's logits), the answer but its last
    // token as decode rows (every one's logits).
    let positions = n + m - 1;
    let blocks = blocks_for(positions);
    let table: Vec<u32> = (0..blocks as u32).collect();
    let mut pool = model.new_pool(blocks)?;
    let mut batch = Batch::new();
    batch.push(&table, 0, r.input_ids, RowKind::Prompt, Logits::Last)?;
    if m > 1 {
        batch.push(
            &table,
            n,
            &r.output_ids[..m - 1],
            RowKind::Decode,
            Logits::All,
        )?;
    }
    let out = model.run(&mut pool, &mut Workspace::default(), &batch, Output::Logits)?;
    let vocab = c.vocab_size;

    let mut sampler = Sampler::new(r.params.clone())?;
    let greedy = r.params.is_greedy();
    let (mut first, mut worst) = (None, 0f64);
    for (i, id) in r.output_ids.iter().enumerate() {
        let logits = &out.logits[i * vocab..(i + 1) * vocab];
        let (matched, margin) = if greedy {
            let best = argmax(logits);
            let gap = f64::from(logits[best as usize] - logits[*id as usize]);
            (
                best == *id,
                if gap.is_nan() {
                    f64::INFINITY
                } else {
                    gap.max(0.0)
                },
            )
        } else {
            let draw = sampler.draw(logits);
            (draw.pick() == *id, draw.miss(*id))
        };
        worst = worst.max(margin);
        let accepted = matched
            || (mode == ReplayMode::Tolerant
                && margin
                    <= if greedy {
                        f64::from(GREEDY_MARGIN)
                    } else {
                        SAMPLED_MARGIN
                    });
        if !accepted && first.is_none() {
            first = Some(i);
            reasons.push(format!(
                "output token {i} (id {id}) is not the sampler's choice (margin {margin:.4})"
            ));
        }
    }
    Ok(report(m, first, worst, reasons))
}

fn report(
    tokens_checked: usize,
    first_divergence: Option<usize>,
    worst_margin: f64,
    reasons: Vec<String>,
) -> ReplayReport {
    ReplayReport {
        verdict: if reasons.is_empty() {
            "consistent"
        } else {
            "inconsistent"
        },
        tokens_checked,
        first_divergence,
        worst_margin,
        reasons,
    }
}

/// Why a receipt does not describe this replay: another model pin, other parameters, a prompt
/// or answer whose hashes differ from its own. Empty when it agrees. `prompt` is the prompt as
/// given (its hash), `input_ids` what it tokenized to, `text` the answer's text.
#[allow(clippy::too_many_arguments)]
pub fn receipt_disagreements(
    receipt: &cocoon_runtime::receipt::Receipt,
    pin: &cocoon_runtime::Pin,
    prompt: &str,
    chat_template: bool,
    input_ids: &[u32],
    output_ids: &[u32],
    text: &str,
    params: &SamplingParams,
) -> Vec<String> {
    use cocoon_runtime::receipt::{decimal, ids_sha256, text_sha256};
    let b = &receipt.body;
    let mut out = Vec::new();
    let mut differ = |what: &str, theirs: String, ours: String| {
        if theirs != ours {
            out.push(format!(
                "the receipt's {what} is {theirs}, the replay's {ours}"
            ));
        }
    };
    differ("model_pin", b.model_pin.clone(), pin.to_hex());
    differ(
        "params.max_tokens",
        b.params.max_tokens.to_string(),
        params.max_tokens.to_string(),
    );
    differ(
        "params.temperature",
        b.params.temperature.clone(),
        decimal(params.temperature),
    );
    differ(
        "params.top_p",
        b.params.top_p.clone(),
        decimal(params.top_p),
    );
    differ(
        "params.top_k",
        b.params.top_k.to_string(),
        params.top_k.to_string(),
    );
    differ(
        "params.seed",
        b.params.seed.to_string(),
        params.seed.to_string(),
    );
    differ(
        "params.chat_template",
        b.params.chat_template.to_string(),
        chat_template.to_string(),
    );
    differ(
        "input.text_sha256",
        b.input.text_sha256.clone(),
        text_sha256(prompt),
    );
    differ(
        "input.ids_sha256",
        b.input.ids_sha256.clone(),
        ids_sha256(input_ids),
    );
    differ(
        "input.tokens",
        b.input.tokens.to_string(),
        input_ids.len().to_string(),
    );
    differ(
        "output.ids_sha256",
        b.output.ids_sha256.clone(),
        ids_sha256(output_ids),
    );
    differ(
        "output.tokens",
        b.output.tokens.to_string(),
        output_ids.len().to_string(),
    );
    differ(
        "output.text_sha256",
        b.output.text_sha256.clone(),
        text_sha256(text),
    );
    out
}

/// The sampling parameters a receipt records, or why they cannot be read back.
pub fn receipt_params(receipt: &cocoon_runtime::receipt::Receipt) -> Result<SamplingParams, Error> {
    let p = &receipt.body.params;
    let num = |what: &str, s: &str| {
        s.parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| {
                Error::InvalidRequest(format!("the receipt's params.{what} {s:?} is not a number"))
            })
    };
    let params = SamplingParams {
        max_tokens: u32::try_from(p.max_tokens).map_err(|_| {
            Error::InvalidRequest("the receipt's params.max_tokens is too large".into())
        })?,
        temperature: num("temperature", &p.temperature)?,
        top_p: num("top_p", &p.top_p)?,
        top_k: u32::try_from(p.top_k)
            .map_err(|_| Error::InvalidRequest("the receipt's params.top_k is too large".into()))?,
        seed: p.seed,
    };
    params.validate()?;
    Ok(params)
}
