//! RoPE inverse frequencies, with LLaMA 3 scaling, computed in f32 as Hugging Face does.

use super::config::{LlamaConfig, RopeScaling};

/// `head_dim / 2` inverse frequencies `θ^(−2i/d)`, scaled per `config.rope_scaling`.
pub fn inv_freq(config: &LlamaConfig) -> Vec<f32> {
    let d = config.head_dim;
    let base: Vec<f32> = (0..d / 2)
        .map(|i| 1.0 / config.rope_theta.powf((2 * i) as f32 / d as f32))
        .collect();
    match config.rope_scaling {
        RopeScaling::None => base,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            base.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}
