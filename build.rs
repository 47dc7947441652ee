//! Generates the gRPC code from proto/ with a vendored protoc: no system protoc needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // For `--output json` in the CLI.
        .type_attribute(".tiernet.v1", "#[derive(serde::Serialize)]")
        .file_descriptor_set_path(out.join("tiernet_descriptor.bin"))
        .compile_protos(&["proto/tiernet/v1/control.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
