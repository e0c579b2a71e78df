//! Fuzz target `start_runner`: the body is `autogit_agent::fuzz::start_runner`, which the corpus
//! replay test calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| autogit_agent::fuzz::start_runner(data));
