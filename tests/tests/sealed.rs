//! Sealed requests through the library (docs/design.md §12): a client checks a dev-attested
//! worker key, seals, the worker opens and answers on the tiny model, the client opens the
//! answer; and every refusal: an untrusted key, a wrong binding, another worker's key, changed
//! bytes, another client's secret, an answer moved to another request, a receipt naming
//! another request.

use std::path::Path;

use cocoon_attest::dev::DevProvider;
use cocoon_runtime::notary::{Attestation, AttestedKey, ReceiptRequest};
use cocoon_runtime::{manifest_of, Runtime, SamplingParams};
use cocoon_sealed::client::{
    check_key, open_response, seal_request, ClientSecret, KeyCheck, TrustedKey,
};
use cocoon_sealed::plaintext::{Prompt, ResponsePlain};
use cocoon_sealed::worker::{open_request, seal_response, OpenedRequest};
use cocoon_sealed::{SealError, Sealed};
use serde_json::Map;

fn worker() -> AttestedKey {
    AttestedKey::new(&DevProvider::new()).unwrap()
}

fn doc(k: &AttestedKey) -> Vec<u8> {
    serde_json::to_vec(k.json()).unwrap()
}

fn trusted(k: &AttestedKey) -> TrustedKey {
    check_key(
        &doc(k),
        &KeyCheck {
            allow_dev: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn ask(key: &TrustedKey, prompt: &str) -> (Sealed, ClientSecret) {
    seal_request(
        key,
        Prompt::Text {
            prompt: prompt.into(),
            raw: true,
        },
        Map::from_iter([("max_tokens".to_string(), serde_json::json!(6))]),
        Some("job-7".into()),
        None,
    )
    .unwrap()
}

/// What the worker does: generate on the tiny model and issue the receipt naming the request.
fn answer(k: AttestedKey, opened: &OpenedRequest, named: [u8; 32]) -> ResponsePlain {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden/tiny-gqa");
    let pin = manifest_of(&dir, None).unwrap().pin();
    let rt = Runtime::open_cpu(&dir, &pin, 1, None).unwrap();
    let Prompt::Text { prompt, .. } = &opened.request.prompt else {
        panic!("a prompt was sealed")
    };
    let params = SamplingParams {
        max_tokens: 6,
        ..Default::default()
    };
    let ids = rt.prompt_ids(prompt, true).unwrap();
    let g = rt.generate(&ids, &params, &mut |_| true).unwrap();
    let receipt = rt
        .receipt(
            prompt,
            false,
            &params,
            &g,
            &Attestation::Key(Box::new(k)),
            &ReceiptRequest {
                job_id: opened.request.job_id.clone(),
                sealed_request_sha256: Some(hex::encode(named)),
                ..Default::default()
            },
        )
        .unwrap();
    ResponsePlain {
        text: g.text.clone(),
        output_ids: g.output_ids.clone(),
        finish: g.finish.as_str().into(),
        receipt: serde_json::to_value(&receipt).unwrap(),
    }
}

#[test]
fn a_sealed_round_trip() {
    let k = worker();
    let key = trusted(&k);
    let (sealed, secret) = ask(&key, "Hello there");
    let opened = open_request(k.hpke(), &sealed).unwrap();
    assert_eq!(opened.request_sha256, sealed.ciphertext_sha256());
    let sha = opened.request_sha256;
    let response = answer(k, &opened, sha);
    let back = seal_response(&opened.reply_key, &sha, &response).unwrap();
    let got = open_response(&secret, &back).unwrap();
    assert_eq!(got.text, response.text);
    assert_eq!(got.output_ids.len(), 6);
    let body = &got.receipt["body"];
    assert_eq!(body["sealed"]["request_sha256"], hex::encode(sha));
    assert_eq!(body["job_id"], "job-7");
    // The receipt holds hashes only: not the prompt.
    assert!(!got.receipt.to_string().contains("Hello there"));
    // It verifies as any receipt does.
    let r = cocoon_runtime::verify::parse_receipt(&got.receipt.to_string()).unwrap();
    let report = cocoon_runtime::verify::verify_receipt(
        &r,
        &cocoon_runtime::verify::VerifyOptions {
            allow_dev: true,
            ..Default::default()
        },
    );
    assert!(report.ok(), "{:?}", report.reasons);
}

#[test]
fn a_client_refuses_keys_it_cannot_trust() {
    let k = worker();
    let strict = KeyCheck::default();
    assert!(matches!(
        check_key(&doc(&k), &strict),
        Err(SealError::Untrusted(_))
    ));
    // Another HPKE key in the document: the evidence binds the original one.
    let other = worker();
    let mut json = k.json().clone();
    json.hpke = other.json().hpke.clone();
    let dev = KeyCheck {
        allow_dev: true,
        ..Default::default()
    };
    let e = check_key(&serde_json::to_vec(&json).unwrap(), &dev).unwrap_err();
    assert!(matches!(e, SealError::Untrusted(_)), "{e}");
    // No HPKE key at all.
    json.hpke = None;
    assert!(matches!(
        check_key(&serde_json::to_vec(&json).unwrap(), &dev),
        Err(SealError::Untrusted(_))
    ));
    assert!(matches!(
        check_key(b"{}", &dev),
        Err(SealError::Malformed { .. })
    ));
}

#[test]
fn what_does_not_open_is_refused_alike() {
    let k = worker();
    let key = trusted(&k);
    let (sealed, _) = ask(&key, "Hello");
    // Sealed to another worker's key.
    let other = worker();
    assert!(matches!(
        open_request(other.hpke(), &sealed),
        Err(SealError::NotOpened)
    ));
    // A flipped byte in enc or in the ciphertext.
    for i in [0usize, 1] {
        let mut s = sealed.clone();
        if i == 0 {
            s.enc[40] ^= 1;
        } else {
            s.ciphertext[3] ^= 1;
        }
        let e = open_request(k.hpke(), &s).err().unwrap();
        assert_eq!(e, SealError::NotOpened);
        assert_eq!(e.to_string(), "the sealed message could not be opened");
    }
}

#[test]
fn an_answer_opens_only_for_its_own_request() {
    let k = worker();
    let key = trusted(&k);
    let (a, secret_a) = ask(&key, "Hello");
    let (b, secret_b) = ask(&key, "Hello");
    let opened_a = open_request(k.hpke(), &a).unwrap();
    let opened_b = open_request(k.hpke(), &b).unwrap();
    let sha_a = opened_a.request_sha256;
    let response = answer(k, &opened_a, sha_a);
    let sealed_a = seal_response(&opened_a.reply_key, &sha_a, &response).unwrap();
    // Another client's secret (another reply key) does not open it.
    assert_eq!(
        open_response(&secret_b, &sealed_a).err(),
        Some(SealError::NotOpened)
    );
    // Moved to request B (sealed to B's reply key with A's aad): B's aad differs.
    let moved = seal_response(&opened_b.reply_key, &sha_a, &response).unwrap();
    assert_eq!(
        open_response(&secret_b, &moved).err(),
        Some(SealError::NotOpened)
    );
    // Sealed for B with B's aad but carrying A's receipt: the receipt names another request.
    let relabelled =
        seal_response(&opened_b.reply_key, &opened_b.request_sha256, &response).unwrap();
    assert!(matches!(
        open_response(&secret_b, &relabelled),
        Err(SealError::Mismatch(_))
    ));
    // A's own secret opens it, also after the secret went through its file form.
    let again = ClientSecret::from_json(secret_a.to_json().as_bytes()).unwrap();
    assert_eq!(
        open_response(&again, &sealed_a).unwrap().text,
        response.text
    );
}

#[test]
fn a_receipt_signed_by_another_key_is_refused() {
    let k = worker();
    let key = trusted(&k);
    let (a, secret) = ask(&key, "Hello");
    let opened = open_request(k.hpke(), &a).unwrap();
    let sha = opened.request_sha256;
    // The answer's receipt comes from another attested key than the one sealed to.
    let response = answer(worker(), &opened, sha);
    let sealed = seal_response(&opened.reply_key, &sha, &response).unwrap();
    assert!(matches!(
        open_response(&secret, &sealed),
        Err(SealError::Mismatch(_))
    ));
}
