//! One generation request on a loaded model: prefill the prompt, then one token a step until an
//! end-of-sequence token, `max_tokens` or the end of the context.

use std::time::Instant;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::llama::{Llama, Logits};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{TextStream, TextTokenizer};

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-sequence token was generated (it ends `output_ids`).
    Stop,
    /// `max_tokens` or the context was reached.
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl Finish {
    /// The name used in JSON output and receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Cancelled => "cancelled",
        }
    }
}

/// The result of one request.
#[derive(Clone, Debug)]
pub struct Generation {
    /// Prompt token ids.
    pub input_ids: Vec<u32>,
    /// Generated ids, ending with the EOS id when `finish` is `Stop`.
    pub output_ids: Vec<u32>,
    /// Generated text, without the EOS token.
    pub text: String,
    /// Why it ended.
    pub finish: Finish,
    /// Microseconds spent on the prompt (to the first token).
    pub prefill_us: u64,
    /// Microseconds spent on the following tokens.
    pub decode_us: u64,
}

/// Runs one request. `on_piece` gets each new piece of text as soon as it is complete UTF-8;
/// returning `false` stops generation (finish `Cancelled`).
pub fn generate<B: Backend>(
    model: &Llama<B>,
    tokenizer: &TextTokenizer,
    input_ids: &[u32],
    params: &SamplingParams,
    on_piece: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    let mut sampler = Sampler::new(params.clone())?;
    let context = model.config.max_position_embeddings;
    if input_ids.is_empty() {
        return Err(Error::InvalidRequest("the prompt has no tokens".into()));
    }
    if input_ids.len() >= context {
        return Err(Error::InvalidRequest(format!(
            "the prompt has {} tokens; the model's context is {context}, leaving no room to generate",
            input_ids.len()
        )));
    }
    let budget = (params.max_tokens as usize).min(context - input_ids.len());
    let eos = tokenizer.eos_ids();
    // The KV cache holds this request and no more: the prompt and what may be generated.
    let mut session = model.session_with_capacity(input_ids.len() + budget)?;
    let mut stream = TextStream::new(tokenizer);
    let mut output_ids = Vec::new();
    let mut finish = Finish::Length;

    // Greedy decoding takes the argmax on the backend and copies back only the id; sampling
    // needs the logits on the host.
    let greedy = params.is_greedy();
    let mut next = |session: &mut _, ids: &[u32]| -> Result<u32> {
        if greedy {
            model.forward_greedy(session, ids)
        } else {
            Ok(sampler.sample(&model.forward(session, ids, Logits::Last)?))
        }
    };
    let start = Instant::now();
    let mut id = next(&mut session, input_ids)?;
    let prefill_us = start.elapsed().as_micros() as u64;
    let decode_start = Instant::now();
    loop {
        output_ids.push(id);
        if eos.contains(&id) {
            finish = Finish::Stop;
            break;
        }
        if let Some(piece) = stream.push(id)? {
            if !on_piece(&piece) {
                finish = Finish::Cancelled;
                break;
            }
        }
        if output_ids.len() >= budget {
            break;
        }
        id = next(&mut session, &[id])?;
    }
    let decode_us = decode_start.elapsed().as_micros() as u64;
    let shown = if finish == Finish::Stop {
        &output_ids[..output_ids.len() - 1]
    } else {
        &output_ids[..]
    };
    Ok(Generation {
        input_ids: input_ids.to_vec(),
        text: tokenizer.decode(shown)?,
        output_ids,
        finish,
        prefill_us,
        decode_us,
    })
}
