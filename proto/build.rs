//! Compiles `acufarm.proto` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=acufarm.proto");
    let descriptors = protox::compile(["acufarm.proto"], ["."])?;
    // The descriptors themselves, for the compatibility test (tests/compat.rs).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("acufarm.fds"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
