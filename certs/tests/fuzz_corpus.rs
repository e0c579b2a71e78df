//! Replays the `join_token` fuzz corpus (`fuzz/corpus/join_token/`).

#[test]
fn join_token_corpus() {
    autogit_certs::fuzz::replay_corpus("join_token", autogit_certs::fuzz::join_token);
}
