//! Fuzz target `runner_report`: the body is `autogit_coordinator::fuzz::runner_report`, which the corpus
//! replay test calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| autogit_coordinator::fuzz::runner_report(data));
