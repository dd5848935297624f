//! `/metrics`: Prometheus text format. Requests by endpoint and status, tokens in and out,
//! queue depth, running requests, the engine's passes and rows (their ratio is the batch
//! size), time to first token and per-token latency. Counts only: no prompt or answer.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use cocoon_engine::EngineStats;

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    status: u16,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    prompt_tokens: Counter,
    completion_tokens: Counter,
    ttft: Histogram,
    per_token: Histogram,
    queued: Gauge,
    running: Gauge,
    kv_blocks_taken: Gauge,
    kv_positions_held: Gauge,
    steps: Counter,
    rows: Counter,
    /// Serialises scrapes (engine counters are copied in as differences).
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cocoon");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by endpoint and status",
            requests.clone(),
        );
        let prompt_tokens = Counter::default();
        registry.register(
            "prompt_tokens",
            "Prompt tokens of answered requests",
            prompt_tokens.clone(),
        );
        let completion_tokens = Counter::default();
        registry.register(
            "completion_tokens",
            "Generated tokens of answered requests",
            completion_tokens.clone(),
        );
        let ttft = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "time_to_first_token_seconds",
            "From the request's arrival to its first token",
            ttft.clone(),
        );
        let per_token = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "time_per_output_token_seconds",
            "Mean time per generated token after the first, per request",
            per_token.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "queue_depth",
            "Requests waiting for a place in the batch",
            queued.clone(),
        );
        let running = Gauge::default();
        registry.register("running_requests", "Requests in the batch", running.clone());
        let kv_blocks_taken = Gauge::default();
        registry.register(
            "kv_blocks_taken",
            "KV cache blocks in use",
            kv_blocks_taken.clone(),
        );
        let kv_positions_held = Gauge::default();
        registry.register(
            "kv_positions_held",
            "Positions the running requests hold in those blocks (16 per block)",
            kv_positions_held.clone(),
        );
        let steps = Counter::default();
        registry.register(
            "engine_passes",
            "Forward passes of the batch (rows / passes is the mean batch size)",
            steps.clone(),
        );
        let rows = Counter::default();
        registry.register("engine_rows", "Token rows computed", rows.clone());
        Metrics {
            registry,
            requests,
            prompt_tokens,
            completion_tokens,
            ttft,
            per_token,
            queued,
            running,
            kv_blocks_taken,
            kv_positions_held,
            steps,
            rows,
            scrape: Mutex::new(()),
        }
    }

    /// Counts a finished HTTP request.
    pub fn request(&self, endpoint: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_owned(),
                status,
            })
            .inc();
    }

    /// Records an answered generation.
    pub fn answered(&self, prompt: u64, completion: u64, decode: Duration) {
        self.prompt_tokens.inc_by(prompt);
        self.completion_tokens.inc_by(completion);
        if completion > 1 {
            self.per_token
                .observe(decode.as_secs_f64() / (completion - 1) as f64);
        }
    }

    /// Records the time to a request's first token.
    pub fn first_token(&self, after: Duration) {
        self.ttft.observe(after.as_secs_f64());
    }

    /// Tokens served so far: (prompt, completion).
    pub fn tokens(&self) -> (u64, u64) {
        (self.prompt_tokens.get(), self.completion_tokens.get())
    }

    /// The text format, with the engine's state as `stats` says.
    pub fn render(&self, stats: &EngineStats) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.queued.set(stats.queued as i64);
        self.running.set(stats.running as i64);
        self.kv_blocks_taken.set(stats.kv_blocks_taken as i64);
        self.kv_positions_held.set(stats.kv_positions_held as i64);
        self.steps
            .inc_by(stats.steps.saturating_sub(self.steps.get()));
        self.rows.inc_by(stats.rows.saturating_sub(self.rows.get()));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_every_series() {
        let m = Metrics::new();
        m.request("chat", 200);
        m.answered(10, 5, Duration::from_millis(40));
        m.first_token(Duration::from_millis(12));
        let stats = EngineStats {
            steps: 7,
            rows: 21,
            queued: 2,
            ..Default::default()
        };
        let text = m.render(&stats);
        for line in [
            "cocoon_http_requests_total{endpoint=\"chat\",status=\"200\"} 1",
            "cocoon_prompt_tokens_total 10",
            "cocoon_completion_tokens_total 5",
            "cocoon_queue_depth 2",
            "cocoon_engine_passes_total 7",
            "cocoon_engine_rows_total 21",
            "cocoon_time_to_first_token_seconds_count 1",
            "cocoon_time_per_output_token_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // Scraping twice does not count the engine's passes twice.
        assert!(m.render(&stats).contains("cocoon_engine_passes_total 7"));
    }
}
