//! Fuzz target `inventory`: the body is `autogit_coordinator::fuzz::inventory`, which the corpus
//! replay test calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| autogit_coordinator::fuzz::inventory(data));
