//! Fuzz target `coordinator_config`: the body is `autogit_coordinator::fuzz::config`, which the corpus
//! replay test calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| autogit_coordinator::fuzz::config(data));
