//! Fuzz bodies, shared by the libFuzzer targets in `fuzz/` and by normal
//! `#[test]`s that replay each target's corpus (`fuzz/corpus/<target>/`) in
//! every `cargo test`. Not an API: hidden from the docs.
//!
//! A body takes the raw input and asserts "no panic, and a clear error for
//! bad input": an error renders as one non-empty line of bounded length.

use std::path::{Path, PathBuf};

use crate::{JoinToken, TokenError};

/// Assert that `msg` (an error's `Display`) is a clear error.
pub fn assert_clear_error(what: &str, msg: &str) {
    assert!(!msg.trim().is_empty(), "{what}: empty error message");
    assert!(
        !msg.contains('\n'),
        "{what}: multi-line error message: {msg:?}"
    );
}

/// `fuzz/corpus/<target>` in this checkout.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Run `body` on every file of `target`'s corpus; panics naming the file
/// that fails. An empty or missing corpus is a failure too.
pub fn replay_corpus(target: &str, body: fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    for f in files {
        let data = std::fs::read(&f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        if std::panic::catch_unwind(|| body(&data)).is_err() {
            panic!("fuzz target {target} fails on {}", f.display());
        }
    }
}

/// `data` written to a per-thread file under the temp dir (config loading
/// reads a file). `None` when the temp dir is not writable.
pub fn scratch_file(name: &str, data: &[u8]) -> Option<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("autogit-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let path =
        dir.join(format!("{:?}-{name}", std::thread::current().id()).replace(['(', ')'], ""));
    std::fs::write(&path, data).ok()?;
    Some(path)
}

/// Join-token parsing ([`JoinToken::parse`]): a valid token round-trips and
/// never shows its secret in `Debug`; an invalid one is a one-line error
/// that never echoes the input (which may hold a secret).
pub fn join_token(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match JoinToken::parse(s) {
        Ok(t) => {
            let exposed = t.expose();
            let again = JoinToken::parse(&exposed).expect("a parsed token re-parses");
            assert_eq!(again.id(), t.id());
            assert_eq!(again.ca_fingerprint(), t.ca_fingerprint());
            assert!(again.matches_hash(&t.secret_hash()));
            let secret = exposed.rsplit('.').next().unwrap_or_default();
            // Unless the secret happens to spell part of the public fields.
            let public = [t.ca_fingerprint().to_string(), t.id().to_string()];
            if !public.iter().any(|p| p.contains(secret)) {
                assert!(!format!("{t:?}").contains(secret), "Debug shows the secret");
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert_clear_error("join token", &msg);
            // Every message is one of the fixed texts: none echoes the
            // input (which may hold a secret).
            let fixed = [
                TokenError::BadPrefix,
                TokenError::BadFingerprint,
                TokenError::MissingSeparator,
                TokenError::BadId,
                TokenError::BadSecret,
            ]
            .map(|e| e.to_string());
            assert!(fixed.contains(&msg), "not a fixed message: {msg}");
        }
    }
}
