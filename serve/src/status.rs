//! `GET /`: the status page a person reads (no external assets): model, pin, backend, the
//! verdict of the server's own evidence, uptime, counters, and a form that verifies a pasted
//! receipt through `/v1/cocoon/verify`.

use crate::evidence::OwnEvidence;

const TEMPLATE: &str = include_str!("status.html");

/// What the page shows.
pub struct StatusFacts<'a> {
    /// Served model name.
    pub model_name: &'a str,
    /// The pin (hex).
    pub pin: &'a str,
    /// Backend name.
    pub backend: &'a str,
    /// The server's evidence.
    pub evidence: &'a OwnEvidence,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Answers given.
    pub requests: u64,
    /// Prompt tokens served.
    pub tokens_in: u64,
    /// Tokens generated.
    pub tokens_out: u64,
}

/// Escapes text for HTML.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page.
pub fn page(f: &StatusFacts<'_>) -> String {
    let reasons = if f.evidence.reasons.is_empty() {
        f.evidence
            .tcb_status
            .as_ref()
            .map(|t| format!("(TCB {t})"))
            .unwrap_or_default()
    } else {
        format!("({})", f.evidence.reasons.join("; "))
    };
    let verdict = match f.evidence.verdict.as_str() {
        "dev" => "dev".to_owned(),
        v => v.to_owned(),
    };
    let values = [
        ("model_name", f.model_name.to_owned()),
        ("pin", f.pin.to_owned()),
        ("backend", f.backend.to_owned()),
        ("platform", f.evidence.platform.clone()),
        ("mode", f.evidence.mode.to_owned()),
        ("verdict", verdict),
        ("reasons", reasons),
        ("version", cocoon_runtime::VERSION.to_owned()),
        ("uptime", f.uptime_s.to_string()),
        ("requests", f.requests.to_string()),
        ("tokens_in", f.tokens_in.to_string()),
        ("tokens_out", f.tokens_out.to_string()),
    ];
    let mut html = TEMPLATE.to_owned();
    for (k, v) in values {
        html = html.replace(&format!("{{{{{k}}}}}"), &escape(&v));
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_filled_and_escaped() {
        let ev = OwnEvidence {
            platform: "dev".into(),
            mode: "key",
            verdict: "dev".into(),
            reasons: vec!["<script>".into()],
            tcb_status: None,
        };
        let html = page(&StatusFacts {
            model_name: "m<&>",
            pin: "ab",
            backend: "cpu",
            evidence: &ev,
            uptime_s: 3,
            requests: 4,
            tokens_in: 5,
            tokens_out: 6,
        });
        assert!(!html.contains("{{"), "unfilled placeholder");
        assert!(html.contains("m&lt;&amp;&gt;"));
        assert!(html.contains("(&lt;script&gt;)"));
        assert!(!html.contains("src=\"http"), "no external assets");
    }
}
