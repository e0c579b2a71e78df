//! Fuzz target `job_hook`: the body is `autogit_coordinator::fuzz::job_hook`, which the corpus
//! replay test calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| autogit_coordinator::fuzz::job_hook(data));
