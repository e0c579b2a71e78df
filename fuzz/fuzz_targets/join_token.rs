//! Fuzz target `join_token`: the body is `autogit_certs::fuzz::join_token`, which the corpus
//! replay test calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| autogit_certs::fuzz::join_token(data));
