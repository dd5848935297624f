//! `cocoon audit DIR`: a marketplace's spot checker in one command. DIR holds triples
//! `NAME.receipt.json`, `NAME.prompt.txt` (the prompt as given) and `NAME.answer.json` (`cocoon
//! run --json`'s output, or a JSON array of the answer's ids); a seeded fraction of them is
//! picked and each is replayed as `cocoon replay --receipt` would (docs/spot-check.md).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use sha2::{Digest, Sha256};

use cocoon_engine::replay::{receipt_params, ReplayMode, ReplayReport};
use cocoon_runtime::verify::parse_receipt;
use cocoon_runtime::{with_runtime, Runtime};

use crate::infer::{open_model, BackendArgs, ModelArgs};
use crate::replay::{read_answer, read_text};
use cocoon_engine::replay_job::{receipt_time, replay_job, ReplayJob};

/// Arguments of `cocoon audit`.
#[derive(Args)]
pub struct AuditArgs {
    /// The directory of receipt/prompt/answer triples.
    dir: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Fraction of the triples to replay, in [0, 1].
    #[arg(long, default_value_t = 1.0)]
    fraction: f64,
    /// Seed of the choice (the same seed picks the same triples).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// exact or tolerant (docs/spot-check.md).
    #[arg(long, default_value = "exact")]
    mode: ReplayMode,
    /// The receipts are one chain (`prev` links): replay every triple and check that the links
    /// join them all, from one head, without a fork, a cycle or a second chain.
    #[arg(long, conflicts_with = "fraction")]
    chain: bool,
    #[command(flatten)]
    backend: BackendArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Whether `name` is picked: the first 8 bytes of SHA-256(seed ‖ name) below `fraction` of
/// 2^64, so the choice depends on neither the directory's order nor the other names.
fn picked(seed: u64, name: &str, fraction: f64) -> bool {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(name.as_bytes());
    let d = h.finalize();
    let x = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    (x as f64) < fraction * 18_446_744_073_709_551_616.0
}

/// The order of one chain of receipts by their `prev` links (the head's `prev` is null or names
/// a receipt outside the set), or every reason they are not one chain.
fn chain_order(
    bindings: &[String],
    prevs: &[Option<String>],
    names: &[String],
) -> Result<Vec<usize>, Vec<String>> {
    let mut reasons = Vec::new();
    let index: std::collections::HashMap<&str, usize> = bindings
        .iter()
        .enumerate()
        .map(|(i, b)| (b.as_str(), i))
        .collect();
    if index.len() != bindings.len() {
        reasons.push("two receipts have the same binding".to_owned());
    }
    let mut next: Vec<Option<usize>> = vec![None; bindings.len()];
    let mut heads = Vec::new();
    for (i, prev) in prevs.iter().enumerate() {
        match prev.as_deref().and_then(|p| index.get(p)) {
            None => heads.push(i),
            Some(&parent) => {
                if let Some(other) = next[parent].replace(i) {
                    reasons.push(format!(
                        "fork: {} and {} both follow {}",
                        names[other], names[i], names[parent]
                    ));
                }
            }
        }
    }
    if heads.len() != 1 {
        reasons.push(format!(
            "{} heads (receipts whose prev is not in the set): {}",
            heads.len(),
            heads
                .iter()
                .map(|h| names[*h].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut order = Vec::new();
    let mut at = heads.first().copied();
    while let Some(i) = at {
        if order.len() == bindings.len() {
            break; // a cycle cannot be longer than the set
        }
        order.push(i);
        at = next[i];
    }
    if reasons.is_empty() && order.len() != bindings.len() {
        reasons.push(format!(
            "the chain from {} links {} of the {} receipts",
            heads.first().map_or("", |h| names[*h].as_str()),
            order.len(),
            bindings.len()
        ));
    }
    if reasons.is_empty() {
        Ok(order)
    } else {
        Err(reasons)
    }
}

/// The triples' names, sorted.
fn names(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = e?.file_name();
        if let Some(n) = name.to_str().and_then(|n| n.strip_suffix(".receipt.json")) {
            out.push(n.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn one<B: cocoon_runtime::backend::Backend>(
    rt: &Runtime<B>,
    dir: &Path,
    name: &str,
    mode: ReplayMode,
) -> Result<ReplayReport> {
    let receipt = parse_receipt(&read_text(
        &dir.join(format!("{name}.receipt.json")),
        "the receipt",
    )?)
    .map_err(anyhow::Error::msg)?;
    let prompt = read_text(&dir.join(format!("{name}.prompt.txt")), "the prompt")?;
    let params = receipt_params(&receipt)?;
    let answer = read_answer(Some(&dir.join(format!("{name}.answer.json"))), None)?;
    let job = ReplayJob {
        prompt: &prompt,
        raw: !receipt.body.params.chat_template,
        answer,
        finish: None,
        mode,
        receipt: Some(&receipt),
        params: &params,
        when: receipt_time(&receipt)?,
    };
    Ok(replay_job(rt, &job)?)
}

/// `cocoon audit`: exit 0 every picked answer consistent, 1 one inconsistent (or, with
/// `--chain`, the links broken), 2 a triple unreadable (and none inconsistent) or bad input.
pub fn run(args: &AuditArgs, quiet: bool, out: &mut impl Write) -> Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.fraction) {
        anyhow::bail!("--fraction must be in [0, 1], got {}", args.fraction);
    }
    let all = names(&args.dir)?;
    let mut chain = None;
    let chosen: Vec<&String> = if args.chain {
        // Every receipt, in chain order when they form one chain.
        let mut bindings = Vec::new();
        let mut prevs = Vec::new();
        for n in &all {
            let r = parse_receipt(&read_text(
                &args.dir.join(format!("{n}.receipt.json")),
                "the receipt",
            )?)
            .map_err(anyhow::Error::msg)?;
            bindings.push(r.binding.clone());
            prevs.push(r.body.prev.clone());
        }
        match chain_order(&bindings, &prevs, &all) {
            Ok(order) => {
                chain = Some(serde_json::json!({"length": order.len(), "links": "ok"}));
                order.iter().map(|i| &all[*i]).collect()
            }
            Err(reasons) => {
                chain = Some(
                    serde_json::json!({"length": all.len(), "links": "broken", "reasons": reasons}),
                );
                all.iter().collect()
            }
        }
    } else {
        all.iter()
            .filter(|n| picked(args.seed, n, args.fraction))
            .collect()
    };
    let broken_chain = chain.as_ref().is_some_and(|c| c["links"] != "ok");
    let opened = open_model(&args.model, &args.backend, quiet)?;
    let results: Vec<(String, Result<ReplayReport>)> = with_runtime!(opened, |rt| chosen
        .iter()
        .map(|n| ((*n).clone(), one(&rt, &args.dir, n, args.mode)))
        .collect());
    let (mut consistent, mut inconsistent, mut errors) = (0, Vec::new(), Vec::new());
    for (name, r) in &results {
        match r {
            Ok(rep) if rep.consistent() => consistent += 1,
            Ok(rep) => inconsistent.push(serde_json::json!({"name": name, "first_divergence": rep.first_divergence, "reasons": rep.reasons})),
            Err(e) => errors.push(serde_json::json!({"name": name, "error": format!("{e:#}")})),
        }
    }
    let mut summary = serde_json::json!({"triples": all.len(), "replayed": results.len(),
        "consistent": consistent, "inconsistent": inconsistent, "errors": errors,
        "fraction": args.fraction, "seed": args.seed});
    if let Some(c) = &chain {
        summary["chain"] = c.clone();
    }
    if args.json {
        writeln!(out, "{summary}")?;
    } else {
        writeln!(
            out,
            "audit: {} triples, {} replayed: {consistent} consistent, {} inconsistent, {} unreadable",
            all.len(),
            results.len(),
            inconsistent.len(),
            errors.len()
        )?;
        for i in &inconsistent {
            writeln!(
                out,
                "inconsistent: {} — {}",
                i["name"].as_str().unwrap_or(""),
                i["reasons"][0].as_str().unwrap_or("")
            )?;
        }
        for e in &errors {
            writeln!(
                out,
                "unreadable: {} — {}",
                e["name"].as_str().unwrap_or(""),
                e["error"].as_str().unwrap_or("")
            )?;
        }
        if let Some(c) = &chain {
            writeln!(
                out,
                "chain: {} receipts, links {}",
                c["length"],
                c["links"].as_str().unwrap_or("")
            )?;
            for r in c["reasons"].as_array().into_iter().flatten() {
                writeln!(out, "chain: {}", r.as_str().unwrap_or(""))?;
            }
        }
    }
    Ok(if !inconsistent.is_empty() || broken_chain {
        ExitCode::from(1)
    } else if !errors.is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_are_ordered_by_their_links_and_breaks_are_named() {
        let names: Vec<String> = ["c", "a", "b"].iter().map(|s| s.to_string()).collect();
        let b = |s: &str| s.to_owned();
        // a ← b ← c, given out of order.
        let bindings = vec![b("3"), b("1"), b("2")];
        let prevs = vec![Some(b("2")), None, Some(b("1"))];
        assert_eq!(chain_order(&bindings, &prevs, &names), Ok(vec![1, 2, 0]));
        // A fork: b and c both follow a.
        let forked = vec![Some(b("1")), None, Some(b("1"))];
        let e = chain_order(&bindings, &forked, &names).unwrap_err();
        assert!(e[0].starts_with("fork"), "{e:?}");
        // Two chains.
        let two = vec![None, None, Some(b("1"))];
        let e = chain_order(&bindings, &two, &names).unwrap_err();
        assert!(e[0].starts_with("2 heads"), "{e:?}");
        // A cycle with no head.
        let cycle = vec![Some(b("2")), Some(b("3")), Some(b("1"))];
        assert!(chain_order(&bindings, &cycle, &names).is_err());
    }

    #[test]
    fn the_choice_is_seeded_and_proportional() {
        let names: Vec<String> = (0..2000).map(|i| format!("job-{i}")).collect();
        let count = |seed, f| names.iter().filter(|n| picked(seed, n, f)).count();
        assert_eq!(count(1, 0.0), 0);
        assert_eq!(count(1, 1.0), 2000);
        let a = count(1, 0.25);
        assert!((400..600).contains(&a), "{a}");
        assert_eq!(a, count(1, 0.25), "same seed, same choice");
        let same: Vec<bool> = names.iter().map(|n| picked(1, n, 0.25)).collect();
        let other: Vec<bool> = names.iter().map(|n| picked(2, n, 0.25)).collect();
        assert_ne!(same, other, "another seed picks others");
    }
}
