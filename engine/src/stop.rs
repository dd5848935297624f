//! Stop sequences on streamed text: text is released as soon as it can no longer be the start
//! of a stop sequence, and generation ends at the first occurrence of one (which is not shown).

/// Holds back the text that might begin a stop sequence.
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    pending: String,
}

impl StopFilter {
    /// A filter for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        StopFilter {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds new text. Returns the text that can be shown now, and whether a stop sequence
    /// was found (then the shown text ends just before it and nothing more follows).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let shown = self.pending[..at].to_owned();
            self.pending.clear();
            return (shown, true);
        }
        // Keep the longest tail that is a proper prefix of some stop sequence.
        let keep = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len().min(self.pending.len() + 1))
                    .rev()
                    .find(|n| s.is_char_boundary(*n) && self.pending.ends_with(&s[..*n]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - keep;
        let shown = self.pending[..cut].to_owned();
        self.pending.drain(..cut);
        (shown, false)
    }

    /// Whether any stop sequence is set.
    pub fn is_active(&self) -> bool {
        !self.stops.is_empty()
    }
}

/// `text` up to the first occurrence of any of `stops` (all of it when none occurs).
pub fn truncate_at_stop<'a>(text: &'a str, stops: &[String]) -> (&'a str, bool) {
    match stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
    {
        Some(at) => (&text[..at], true),
        None => (text, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_held_back_only_while_it_may_start_a_stop() {
        let mut f = StopFilter::new(&["\n\nUser:".into(), "END".into()]);
        assert_eq!(f.push("Hello"), ("Hello".into(), false));
        assert_eq!(f.push(" wor"), (" wor".into(), false));
        assert_eq!(f.push("ld\n"), ("ld".into(), false));
        assert_eq!(f.push("\nUs"), (String::new(), false));
        assert_eq!(f.push("X"), ("\n\nUsX".into(), false));
        assert_eq!(f.push("E"), (String::new(), false));
        assert_eq!(f.push("NDtail"), (String::new(), true));
        let mut f = StopFilter::new(&["é!".into()]);
        assert_eq!(f.push("caféé"), ("café".into(), false));
        assert_eq!(f.push("!"), (String::new(), true));
        assert_eq!(
            truncate_at_stop("a STOP b END", &["END".into(), "STOP".into()]),
            ("a ", true)
        );
        assert_eq!(truncate_at_stop("abc", &[String::new()]), ("abc", false));
        assert!(!StopFilter::new(&[String::new()]).is_active());
    }
}
