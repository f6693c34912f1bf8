//! Embeds `kernels/*.cu` (and their headers) into the binary for NVRTC, lists every
//! `extern "C"` kernel with its module, and, with the `sim` feature only, compiles the same
//! sources as C++ against `kernels/sim.h` so `--device sim` can run them on the CPU.
//! Without the feature nothing is compiled here: no C++ compiler, no CUDA toolkit needed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("kernels");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("cu" | "cuh" | "h" | "cpp")))
        .collect();
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let ext = |p: &Path| p.extension().and_then(|e| e.to_str()).unwrap_or("").to_string();
    let stem = |p: &Path| p.file_stem().and_then(|e| e.to_str()).unwrap_or("").to_string();
    let name = |p: &Path| p.file_name().and_then(|e| e.to_str()).unwrap_or("").to_string();

    let mut out = String::new();
    out.push_str("/// `(module, source)` for every `kernels/*.cu`.\npub const MODULES: &[(&str, &str)] = &[\n");
    for f in files.iter().filter(|f| ext(f) == "cu") {
        writeln!(out, "    ({:?}, include_str!({:?})),", stem(f), f.display().to_string()).unwrap();
    }
    out.push_str("];\n/// `(file name, source)` for the headers the modules include.\npub const HEADERS: &[(&str, &str)] = &[\n");
    for f in files.iter().filter(|f| ext(f) == "cuh") {
        writeln!(out, "    ({:?}, include_str!({:?})),", name(f), f.display().to_string()).unwrap();
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out_dir.join("kernel_sources.rs"), out).expect("writing kernel_sources.rs");

    if std::env::var_os("CARGO_FEATURE_SIM").is_some() {
        let mut b = cc::Build::new();
        b.cpp(true).std("c++17").define("GAN_SIM", None).include(&dir).warnings(false).flag_if_supported("-Wno-unknown-pragmas");
        // .cu is not a C++ extension the compiler knows: say so before each source.
        b.flag("-x").flag("c++");
        for f in files.iter().filter(|f| matches!(ext(f).as_str(), "cu" | "cpp")) {
            b.file(f);
        }
        b.compile("gan_kernels_sim");
    }
}
