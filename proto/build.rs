//! Compiles `proto/autogit/v1/*.proto` with protox (pure Rust), so no system
//! `protoc` is needed on any build host or cross-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/autogit/v1/fleet.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // Small initial stream buffers: see src/codec.rs.
        .codec_path("crate::codec::Codec1K")
        .build_client(std::env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        // These messages carry secrets (join token, runner token in env,
        // registry password):
        // their Debug impls are written by hand in src/redact.rs.
        .skip_debug([
            ".autogit.v1.EnrollRequest",
            ".autogit.v1.ContainerSpec",
            ".autogit.v1.RegistryAuth",
        ])
        .compile_fds(fds)?;
    Ok(())
}
