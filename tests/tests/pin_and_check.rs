//! `cocoon pin` and `cocoon check` on tiny models, and every bad input of the pin/check issue:
//! each exits 2 with one message naming the file and the problem.

use std::path::Path;

use cocoon_tests::{
    cocoon, pin_of, safetensors_bytes, tiny_tensors, write_tiny_model, Run, TinySpec,
};

fn model() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    write_tiny_model(&dir, &TinySpec::default());
    (tmp, dir)
}

fn check(dir: &Path, pin: &str) -> Run {
    cocoon([
        Path::new("check"),
        Path::new("--model"),
        dir,
        Path::new("--pin"),
        Path::new(pin),
    ])
}

/// Checks `dir` against its own pin (so that the structural checks, not the pin, must fail).
fn check_repinned(dir: &Path) -> Run {
    let pin = pin_of(dir);
    check(dir, &pin)
}

fn assert_rejected(run: &Run, needles: &[&str]) {
    assert_eq!(
        run.code, 2,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    for n in needles {
        assert!(run.stderr.contains(n), "expected {n:?} in: {}", run.stderr);
    }
}

#[test]
fn pin_equals_sha256sum_of_the_sorted_manifest() {
    let (_t, dir) = model();
    std::fs::write(dir.join("README.md"), "not read by the loader").unwrap();
    let shell = std::process::Command::new("sh")
        .arg("-c")
        .arg("sha256sum config.json model.safetensors tokenizer.json tokenizer_config.json | LC_ALL=C sort -k2 | sha256sum")
        .current_dir(&dir)
        .output()
        .unwrap();
    let expected = String::from_utf8(shell.stdout).unwrap();
    assert_eq!(pin_of(&dir), expected[..64]);
    let json = cocoon([Path::new("pin"), &dir, Path::new("--json")]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["pin"], expected[..64]);
    assert_eq!(v["files"].as_array().unwrap().len(), 4);
}

#[test]
fn check_reports_the_model() {
    let (_t, dir) = model();
    let pin = pin_of(&dir);
    let run = cocoon([
        Path::new("check"),
        Path::new("--model"),
        &dir,
        Path::new("--pin"),
        Path::new(&pin),
        Path::new("--json"),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let s: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(s["architecture"], "llama");
    assert_eq!(s["dtype"], "F32");
    assert_eq!(s["layers"], 2);
    assert_eq!(s["pin"], pin);
    let params: usize = tiny_tensors(&TinySpec::default())
        .values()
        .map(|(s, _)| s.iter().product::<usize>())
        .sum();
    assert_eq!(s["parameters"], params);
    assert_eq!(s["weight_bytes"], params * 4);
}

#[test]
fn flipped_byte_in_any_pinned_file_is_refused_and_named() {
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        let (_t, dir) = model();
        let pin = pin_of(&dir);
        let mut bytes = std::fs::read(dir.join(file)).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(dir.join(file), &bytes).unwrap();
        // Without a manifest copy the pin alone cannot say which file changed.
        assert_rejected(&check(&dir, &pin), &["pin mismatch", file]);
        // With the pinned manifest beside the model, the file and both hashes are named.
        let (_t2, clean) = model();
        let manifest = cocoon([Path::new("pin"), &clean, Path::new("--write-manifest")]);
        assert_eq!(manifest.code, 0);
        std::fs::copy(clean.join("cocoon.sha256"), dir.join("cocoon.sha256")).unwrap();
        let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        assert_rejected(
            &check(&dir, &pin),
            &[
                &format!("pin mismatch in {file}: expected sha256 "),
                &actual,
            ],
        );
    }
}

fn with_weights(dir: &Path, bytes: &[u8]) -> Run {
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    check_repinned(dir)
}

#[test]
fn malformed_safetensors_are_refused() {
    let (_t, dir) = model();
    let good = std::fs::read(dir.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&good[8..8 + header_len])
        .unwrap()
        .to_owned();

    // Truncated data, and truncated inside the length prefix.
    assert_rejected(
        &with_weights(&dir, &good[..good.len() - 3]),
        &["model.safetensors", "invalid safetensors"],
    );
    assert_rejected(
        &with_weights(&dir, &good[..5]),
        &["model.safetensors", "invalid safetensors"],
    );
    // Header length larger than the file.
    let mut long = good.clone();
    long[..8].copy_from_slice(&(good.len() as u64 * 2).to_le_bytes());
    assert_rejected(
        &with_weights(&dir, &long),
        &["model.safetensors", "invalid safetensors"],
    );
    // Broken header JSON.
    let mut broken = good.clone();
    broken[8] = b'[';
    assert_rejected(
        &with_weights(&dir, &broken),
        &["model.safetensors", "invalid safetensors"],
    );
    // Data offsets outside the file, and overlapping: rewrite the first offsets in the header.
    let first = header.find("\"data_offsets\":[").unwrap() + "\"data_offsets\":[".len();
    let end = first + header[first..].find(']').unwrap();
    let (s, e) = header[first..end].split_once(',').unwrap();
    let (s, e): (usize, usize) = (s.parse().unwrap(), e.parse().unwrap());
    for (ns, ne) in [(s + 1_000_000, e + 1_000_000), (s + 4, e + 4), (s, e - 4)] {
        let new_offsets = format!("{ns},{ne}");
        let mut h = header.clone();
        h.replace_range(first..end, &new_offsets);
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(&good[8 + header_len..]);
        assert_rejected(
            &with_weights(&dir, &bytes),
            &["model.safetensors", "invalid safetensors"],
        );
    }
}

#[test]
fn missing_or_misshapen_tensors_and_unsupported_dtypes_are_refused() {
    let spec = TinySpec::default();
    let (_t, dir) = model();
    let mut tensors = tiny_tensors(&spec);
    tensors.remove("model.layers.1.mlp.up_proj.weight");
    assert_rejected(
        &with_weights(&dir, &safetensors_bytes("F32", &tensors)),
        &[
            "model.safetensors",
            "model.layers.1.mlp.up_proj.weight",
            "missing",
        ],
    );

    let mut tensors = tiny_tensors(&spec);
    tensors
        .get_mut("model.layers.0.self_attn.k_proj.weight")
        .unwrap()
        .0 = vec![32, 16];
    assert_rejected(
        &with_weights(&dir, &safetensors_bytes("F32", &tensors)),
        &[
            "model.layers.0.self_attn.k_proj.weight",
            "[32, 16]",
            "[16, 32]",
        ],
    );

    // An F64 tensor: write the header by hand.
    let header = br#"{"model.norm.weight":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0; 8]);
    assert_rejected(
        &with_weights(&dir, &bytes),
        &["model.safetensors", "unsupported dtype", "F64"],
    );
}

#[test]
fn missing_files_are_named() {
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let (_t, dir) = model();
        std::fs::remove_file(dir.join(file)).unwrap();
        assert_rejected(&cocoon([Path::new("pin"), &dir]), &[file, "missing"]);
        assert_rejected(&check(&dir, &"0".repeat(64)), &[file, "missing"]);
    }
}

fn shard(dir: &Path, index: serde_json::Value) {
    let spec = TinySpec::default();
    let tensors = tiny_tensors(&spec);
    let (a, b): (Vec<_>, Vec<_>) = tensors
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let a = a.into_iter().map(|(_, t)| t).collect();
    let b = b.into_iter().map(|(_, t)| t).collect();
    std::fs::write(
        dir.join("model-00001-of-00002.safetensors"),
        safetensors_bytes("F32", &a),
    )
    .unwrap();
    std::fs::write(
        dir.join("model-00002-of-00002.safetensors"),
        safetensors_bytes("F32", &b),
    )
    .unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let index = if index.is_null() {
        let map: serde_json::Map<_, _> = a
            .keys()
            .map(|k| (k.clone(), "model-00001-of-00002.safetensors".into()))
            .chain(
                b.keys()
                    .map(|k| (k.clone(), "model-00002-of-00002.safetensors".into())),
            )
            .collect();
        serde_json::json!({"metadata": {}, "weight_map": map})
    } else {
        index
    };
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn sharded_models_check_and_absent_shards_are_named() {
    let (_t, dir) = model();
    shard(&dir, serde_json::Value::Null);
    let run = check_repinned(&dir);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("6 pinned files"), "{}", run.stdout);

    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    assert_rejected(
        &cocoon([Path::new("pin"), &dir]),
        &["model-00002-of-00002.safetensors", "missing"],
    );
}

#[test]
fn paths_with_newlines_or_leaving_the_directory_are_refused() {
    let (_t, dir) = model();
    shard(
        &dir,
        serde_json::json!({"weight_map": {"model.norm.weight": "evil\nname.safetensors"}}),
    );
    assert_rejected(&cocoon([Path::new("pin"), &dir]), &["newline"]);

    let (_t, dir) = model();
    let outside = dir.parent().unwrap().join("outside.json");
    std::fs::rename(dir.join("tokenizer.json"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("tokenizer.json")).unwrap();
    assert_rejected(
        &cocoon([Path::new("pin"), &dir]),
        &["tokenizer.json", "symbolic link pointing outside"],
    );

    // A link that stays inside the directory is followed.
    let (_t, dir) = model();
    std::fs::create_dir(dir.join("blobs")).unwrap();
    std::fs::rename(dir.join("tokenizer.json"), dir.join("blobs/tok")).unwrap();
    std::os::unix::fs::symlink("blobs/tok", dir.join("tokenizer.json")).unwrap();
    assert_eq!(cocoon([Path::new("pin"), &dir]).code, 0);
}

#[test]
fn malformed_pins_and_absent_directories_are_refused() {
    let (_t, dir) = model();
    for bad in ["", "1234", &"g".repeat(64), &"a".repeat(65)] {
        assert_rejected(&check(&dir, bad), &["malformed pin"]);
    }
    let absent = dir.join("nope");
    assert_rejected(&cocoon([Path::new("pin"), &absent]), &["nope"]);
    assert_rejected(
        &check(&dir.join("config.json"), &"0".repeat(64)),
        &["config.json", "not a directory"],
    );
}

#[test]
fn unsupported_architectures_are_named() {
    let (_t, dir) = model();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    config["model_type"] = "gpt_neox".into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    assert_rejected(
        &check_repinned(&dir),
        &["config.json", "unsupported model_type \"gpt_neox\""],
    );
}

#[test]
fn linked_directories_leaving_the_model_and_non_regular_files_are_refused() {
    // A shard under a directory link that points outside the model.
    let (_t, dir) = model();
    shard(&dir, serde_json::Value::Null);
    let outside = dir.parent().unwrap().join("elsewhere");
    std::fs::create_dir(&outside).unwrap();
    std::fs::rename(
        dir.join("model-00002-of-00002.safetensors"),
        outside.join("model-00002-of-00002.safetensors"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("sub")).unwrap();
    let index_path = dir.join("model.safetensors.index.json");
    let index = std::fs::read_to_string(&index_path)
        .unwrap()
        .replace("\"model-00002-of-00002", "\"sub/model-00002-of-00002");
    std::fs::write(&index_path, index).unwrap();
    assert_rejected(
        &cocoon([Path::new("pin"), &dir]),
        &[
            "sub/model-00002-of-00002.safetensors",
            "outside the model directory",
        ],
    );

    // A FIFO as config.json is refused at once instead of blocking forever.
    let (_t, dir) = model();
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(dir.join("config.json"))
        .status()
        .unwrap();
    assert!(made.success());
    assert_rejected(
        &cocoon([Path::new("pin"), &dir]),
        &["config.json", "not a regular file"],
    );
    assert_rejected(
        &cocoon([
            Path::new("import-gguf"),
            &dir.join("config.json"),
            &dir.join("out"),
        ]),
        &["not a regular file"],
    );
    // A device as the prompt file.
    let pin = "ab".repeat(32);
    assert_rejected(
        &cocoon([
            "run",
            "--model",
            "no-such-model",
            "--pin",
            &pin,
            "--prompt-file",
            "/dev/zero",
        ]),
        &["/dev/zero", "not a regular file"],
    );
}

fn raw_safetensors(header: &str, data: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend(std::iter::repeat_n(0u8, data));
    b
}

#[test]
fn duplicate_tensor_names_and_raw_names_in_messages_are_refused() {
    let entry = r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
    let (_t, dir) = model();
    let run = with_weights(
        &dir,
        &raw_safetensors(&format!(r#"{{"a":{entry},"b":{entry},"a":{entry}}}"#), 4),
    );
    assert_rejected(&run, &["model.safetensors", "the header names a twice"]);
    // A newline in a tensor name is shown escaped: it cannot split the error line.
    let (_t, dir) = model();
    let int = r#"{"dtype":"I64","shape":[1],"data_offsets":[0,8]}"#;
    let run = with_weights(&dir, &raw_safetensors(&format!(r#"{{"x\ny":{int}}}"#), 8));
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("x\\ny"), "{}", run.stderr);
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    // The index of a sharded model naming a tensor twice.
    let (_t, dir) = model();
    shard(&dir, serde_json::Value::Null);
    let index_path = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index_path).unwrap();
    let text = text.replacen(
        "\"weight_map\":{",
        "\"weight_map\":{\"model.norm.weight\":\"model-00001-of-00002.safetensors\",",
        1,
    );
    std::fs::write(&index_path, text).unwrap();
    assert_rejected(
        &check_repinned(&dir),
        &["weight_map names model.norm.weight twice"],
    );
}

#[test]
fn a_tokenizer_larger_than_the_vocabulary_is_refused_at_check() {
    let (_t, dir) = model();
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["vocab_size"] = serde_json::json!(200);
    std::fs::write(&path, config.to_string()).unwrap();
    assert_rejected(
        &check_repinned(&dir),
        &[
            "tokenizer.json",
            "259 tokens, more than the model's vocabulary of 200",
        ],
    );
}

/// Rewrites the tiny model's `tokenizer.json` with `normalizer` as its normalizer.
fn with_normalizer(dir: &Path, normalizer: serde_json::Value) {
    let path = dir.join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    tok["normalizer"] = normalizer;
    std::fs::write(&path, tok.to_string()).unwrap();
}

#[test]
fn normalizers_that_blow_a_text_up_are_refused() {
    // One replacement of 10,000 bytes: refused at check, before any text meets it.
    let (_t, dir) = model();
    let replace = |content: String| {
        serde_json::json!({"type": "Sequence", "normalizers": [
            {"type": "Replace", "pattern": {"Regex": "."}, "content": content}]})
    };
    with_normalizer(&dir, replace("a".repeat(10_000)));
    assert_rejected(
        &check_repinned(&dir),
        &[
            "tokenizer.json",
            "Replace component inserts 10000 bytes at a time, more than 256",
        ],
    );
    // Every character made 40 bytes long (each insertion within bounds): a 100,000-character
    // prompt is refused as it is tokenized, within bounded memory, and the model still loads.
    let (_t, dir) = model();
    with_normalizer(&dir, replace("b".repeat(40)));
    let pin = pin_of(&dir);
    let run_raw = |prompt: &str| {
        cocoon([
            "run",
            "--model",
            dir.to_str().unwrap(),
            "--pin",
            &pin,
            "--raw",
            "--prompt",
            prompt,
            "--max-tokens",
            "1",
        ])
    };
    assert_rejected(
        &run_raw(&"x".repeat(100_000)),
        &["normalizer makes this 100000-byte text more than 32 times longer"],
    );
    // A short prompt under the same normalizer is answered.
    let run = run_raw("h");
    assert_eq!(run.code, 0, "{}", run.stderr);
}
