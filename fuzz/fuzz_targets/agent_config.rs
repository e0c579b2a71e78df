//! Fuzz target `agent_config`: the body is `autogit_agent::fuzz::config`, which the corpus
//! replay test calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| autogit_agent::fuzz::config(data));
