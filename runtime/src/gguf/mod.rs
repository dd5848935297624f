//! GGUF files: a bounds-checked reader of the container ([`GgufFile`]), dequantization of its
//! tensor types ([`dequant`]) and conversion of a LLaMA GGUF into a Hugging Face model
//! directory ([`import`]).

pub mod dequant;
pub mod import;
mod reader;

pub use reader::{GgufFile, GgufTensor, MetaValue};

use crate::error::Error;

fn err(message: impl Into<String>) -> Error {
    Error::ModelFormat {
        file: "GGUF".into(),
        message: message.into(),
    }
}
