//! Sessions on the CPU backend: greedy choice on the backend equals the host's argmax of the
//! logits, the decode buffers kept between steps give the same logits as a fresh pass, a
//! session is sized to its request, refuses what does not fit and holds KV memory for what it
//! was fed, and a session is only fed to the model that made it.

use std::path::{Path, PathBuf};

use cocoon_runtime::model::llama::Logits;
use cocoon_runtime::sampling::argmax;
use cocoon_runtime::{Pin, PinnedModel, Runtime};

fn open(name: &str) -> Runtime {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/golden")
        .join(name);
    let pin: Pin = PinnedModel::read(&dir, None).unwrap().pin();
    Runtime::open_cpu(&dir, &pin, 2, None).unwrap()
}

#[test]
fn greedy_on_the_backend_equals_the_argmax_of_the_logits() {
    for name in ["tiny-gqa", "tiny-mha"] {
        let rt = open(name);
        let m = rt.model();
        let prompt = [256, 72, 101, 108, 108, 111];
        let (mut a, mut b) = (m.session().unwrap(), m.session().unwrap());
        let mut logits = m.forward(&mut a, &prompt, Logits::Last).unwrap();
        let mut id = m.forward_greedy(&mut b, &prompt).unwrap();
        for step in 0..12 {
            assert_eq!(id, argmax(&logits), "{name}: step {step}");
            logits = m.forward(&mut a, &[id], Logits::Last).unwrap();
            id = m.forward_greedy(&mut b, &[id]).unwrap();
        }
        assert_eq!(a.len(), b.len());
    }
}

#[test]
fn a_decode_step_equals_the_same_position_in_a_longer_pass() {
    // Step by step (the kept one-row buffers, reused each time) against one pass over all
    // positions: the same logits within float reordering.
    let rt = open("tiny-gqa");
    let m = rt.model();
    let vocab = m.config.vocab_size;
    let tokens = [256u32, 72, 101, 108, 108, 111, 44, 32];
    let mut whole = m.session().unwrap();
    let all = m.forward(&mut whole, &tokens, Logits::All).unwrap();
    let mut steps = m.session_with_capacity(tokens.len()).unwrap();
    for (i, t) in tokens.iter().enumerate() {
        let row = m.forward(&mut steps, &[*t], Logits::Last).unwrap();
        let want = &all[i * vocab..(i + 1) * vocab];
        let worst = row
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "position {i}: {worst}");
    }
}

#[test]
fn a_session_holds_its_capacity_and_no_more() {
    let rt = open("tiny-gqa");
    let m = rt.model();
    let context = m.config.max_position_embeddings;
    assert_eq!(m.session().unwrap().capacity(), context);
    assert_eq!(
        m.session_with_capacity(usize::MAX).unwrap().capacity(),
        context
    );
    assert_eq!(m.session_with_capacity(0).unwrap().capacity(), 1);
    let mut s = m.session_with_capacity(5).unwrap();
    m.forward_greedy(&mut s, &[1, 2, 3, 4]).unwrap();
    m.forward_greedy(&mut s, &[5]).unwrap();
    let err = m.forward_greedy(&mut s, &[6]).unwrap_err().to_string();
    assert!(
        err.contains("6 tokens exceed the session's capacity of 5"),
        "{err}"
    );
    assert_eq!(s.len(), 5, "a refused pass feeds nothing");
    let mut full = m.session().unwrap();
    let err = m
        .forward(&mut full, &vec![1; context + 1], Logits::Last)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceed the model's context"), "{err}");
}

#[test]
fn a_session_holds_kv_memory_for_what_it_was_fed() {
    // Sized for the whole context, it takes blocks as positions arrive (8 positions a block):
    // allocating them all at the first pass cost a 64-token prefill of SmolLM2 (8,192
    // positions, 377 MB) ~14 % of its time.
    let rt = open("tiny-gqa");
    let m = rt.model();
    let mut s = m.session().unwrap();
    assert_eq!(s.pool().allocated_blocks(), 0);
    let mut id = m.forward_greedy(&mut s, &[1, 2, 3, 4, 5, 6]).unwrap();
    assert_eq!(s.pool().allocated_blocks(), 1);
    for fed in 7..=17_usize {
        id = m.forward_greedy(&mut s, &[id]).unwrap();
        assert_eq!(
            s.pool().allocated_blocks(),
            fed.div_ceil(8),
            "{fed} positions"
        );
    }
}

#[test]
fn kv_memory_left_by_a_finished_session_changes_no_logit() {
    // The backend keeps the blocks of a dropped session and gives them, values as left, to the
    // next one: every value read must have been written by the new sequence.
    let (used, fresh) = (open("tiny-gqa"), open("tiny-gqa"));
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let long: Vec<u32> = (0..40).map(|i| 3 + i * 6).collect();
    let mut s = used.model().session().unwrap();
    used.model().forward(&mut s, &long, Logits::All).unwrap();
    drop(s);
    let prompt = [256, 72, 101, 108, 108, 111, 44, 32, 119];
    let (mut a, mut b) = (
        used.model().session().unwrap(),
        fresh.model().session().unwrap(),
    );
    let got = used.model().forward(&mut a, &prompt, Logits::All).unwrap();
    let want = fresh.model().forward(&mut b, &prompt, Logits::All).unwrap();
    assert_eq!(bits(got), bits(want));
    for id in [5, 77, 250] {
        let got = used.model().forward(&mut a, &[id], Logits::Last).unwrap();
        let want = fresh.model().forward(&mut b, &[id], Logits::Last).unwrap();
        assert_eq!(bits(got), bits(want), "decode of {id}");
    }
}

#[test]
fn a_session_is_fed_only_to_its_model() {
    let (one, other) = (open("tiny-gqa"), open("tiny-gqa"));
    let mut s = one.model().session().unwrap();
    let err = other
        .model()
        .forward_greedy(&mut s, &[1])
        .unwrap_err()
        .to_string();
    assert!(err.contains("another loaded model"), "{err}");
    assert!(s.is_empty());
}

#[test]
fn streamed_pieces_add_up_to_the_decoded_text() {
    // The tiny tokenizer is byte-level: multi-byte characters span several ids, so pieces
    // must be held back until complete.
    let rt = open("tiny-gqa");
    let tok = rt.tokenizer();
    let text = "Héllo, wörld! 🎉 naïve café — ".repeat(20);
    let ids = tok.encode(&text, false).unwrap();
    assert!(
        ids.len() > text.chars().count(),
        "multi-byte characters span ids"
    );
    let mut stream = cocoon_runtime::tokenizer::TextStream::new(tok);
    let mut streamed = String::new();
    let mut held = 0;
    for id in &ids {
        match stream.push(*id).unwrap() {
            Some(piece) => streamed.push_str(&piece),
            None => held += 1,
        }
    }
    assert!(held > 0, "some ids completed no character");
    assert_eq!(streamed, tok.decode(&ids).unwrap());
    assert_eq!(streamed, text);
}
