//! Compiles `proto/` with protox (no system protoc) and generates tonic code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = protox::compile(["vigo/v1/agent.proto", "vigo/v1/swarm.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(files)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
