//! Makes `cargo test` build the `cocoon` binary that the workspace's end-to-end tests run, and
//! checks its usage contract.

#[test]
fn usage_errors_exit_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(["check", "--model", "x", "--pin", "abc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed pin"));
}

#[test]
fn a_nonce_is_even_bounded_hex_even_without_a_receipt() {
    let pin = "ab".repeat(32);
    for nonce in ["zz", "abc", &"00".repeat(65)] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cocoon"))
            .args([
                "run",
                "--model",
                "no-such-dir",
                "--pin",
                &pin,
                "--prompt",
                "hi",
                "--nonce",
                nonce,
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{nonce}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("nonce must be an even number"),
            "{nonce}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_missing_file_is_named_once_with_its_error_once() {
    // The OS error was printed twice (once in the message, once as its source) and the path
    // twice (once in the message, once in the CLI's context).
    let missing = "no-such-file-4f2a.json";
    for args in [
        vec!["pin", missing],
        vec!["verify", missing],
        vec!["attest", "verify", missing],
        vec!["attest", "inspect", missing],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cocoon"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.matches(missing).count(), 1, "{args:?}: {err}");
        assert_eq!(err.matches("(os error 2)").count(), 1, "{args:?}: {err}");
    }
}
