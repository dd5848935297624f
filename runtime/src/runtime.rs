//! [`Runtime`]: a pinned model loaded on a backend with its tokenizer, ready for requests.

use std::path::Path;

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::CudaBackend;
use crate::backend::Backend;
use crate::error::Result;
use crate::generate::{generate, Generation};
use crate::model::llama::Llama;
use crate::model::CheckedModel;
use crate::notary::{body, issue, Attestation, Facts, ReceiptRequest};
use crate::pin::Pin;
use crate::pinned::ProgressFn;
use crate::receipt::Receipt;
use crate::sampling::SamplingParams;
use crate::tokenizer::ChatMessage;
use crate::tokenizer::TextTokenizer;

/// A verified model on a backend, with its tokenizer.
pub struct Runtime<B: Backend = CpuBackend> {
    model: Llama<B>,
    tokenizer: TextTokenizer,
    pin: Pin,
}

impl Runtime<CpuBackend> {
    /// Opens `dir` against `pin` on the CPU backend with `threads` threads (0: all cores).
    pub fn open_cpu(
        dir: &Path,
        pin: &Pin,
        threads: usize,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<Self> {
        Runtime::new(
            CheckedModel::open(dir, pin, progress)?,
            CpuBackend::new(threads)?,
        )
    }
}

impl Runtime<CudaBackend> {
    /// Opens `dir` against `pin` on CUDA device `ordinal`. Without a driver, a device or NVRTC
    /// this is an error ([`crate::Error::Backend`]); the files are verified first either way.
    pub fn open_cuda(
        dir: &Path,
        pin: &Pin,
        ordinal: usize,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<Self> {
        let backend = CudaBackend::new(ordinal)?;
        Runtime::new(CheckedModel::open(dir, pin, progress)?, backend)
    }
}

impl<B: Backend> Runtime<B> {
    /// Loads a checked model on `backend`; the file bytes are released once uploaded.
    pub fn new(checked: CheckedModel, backend: B) -> Result<Self> {
        let model = Llama::load(&checked, backend)?;
        let pin = checked.files.pin();
        Ok(Runtime {
            model,
            tokenizer: checked.tokenizer,
            pin,
        })
    }

    /// The model's pin.
    pub fn pin(&self) -> Pin {
        self.pin
    }

    /// The loaded model.
    pub fn model(&self) -> &Llama<B> {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Prompt ids: through the chat template unless `raw`, as Hugging Face tokenizes them.
    pub fn prompt_ids(&self, prompt: &str, raw: bool) -> Result<Vec<u32>> {
        if raw {
            self.tokenizer.encode(prompt, true)
        } else {
            self.tokenizer
                .encode(&self.tokenizer.render_chat(prompt)?, false)
        }
    }

    /// Prompt ids of a conversation through the chat template.
    pub fn chat_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let text = self
            .tokenizer
            .render_messages_at(messages, crate::clock::UtcTime::now())?;
        self.tokenizer.encode(&text, false)
    }

    /// Runs one request on `prompt` (through the chat template unless `raw`) and issues its
    /// receipt, bound to the machine as `attestation` says.
    #[allow(clippy::too_many_arguments)]
    pub fn generate_with_receipt(
        &self,
        prompt: &str,
        raw: bool,
        params: &SamplingParams,
        attestation: &Attestation,
        request: &ReceiptRequest,
        on_piece: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(Generation, Receipt)> {
        let ids = self.prompt_ids(prompt, raw)?;
        let generation = self.generate(&ids, params, on_piece)?;
        let receipt = self.receipt(prompt, !raw, params, &generation, attestation, request)?;
        Ok((generation, receipt))
    }

    /// The receipt of a finished `generation` of `prompt` on this runtime, bound to the
    /// machine as `attestation` says.
    pub fn receipt(
        &self,
        prompt: &str,
        chat_template: bool,
        params: &SamplingParams,
        generation: &Generation,
        attestation: &Attestation,
        request: &ReceiptRequest,
    ) -> Result<Receipt> {
        let facts = Facts {
            pin: self.pin,
            backend: self.model.backend().name(),
            params,
            chat_template,
            prompt,
            generation,
        };
        issue(body(&facts, request)?, attestation)
    }

    /// Runs one request (see [`generate`]).
    pub fn generate(
        &self,
        input_ids: &[u32],
        params: &SamplingParams,
        on_piece: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        generate(&self.model, &self.tokenizer, input_ids, params, on_piece)
    }
}
