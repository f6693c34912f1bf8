//! Embeds `kernels/*.cu` (and their headers) into the binary for NVRTC, lists every
//! `extern "C"` kernel with its module, writes the one C header of what Rust and the
//! kernels share, and, with the `sim` feature only, compiles the same sources as C++
//! against `kernels/sim.h` so `--device sim` can run them on the CPU. Without the feature
//! nothing is compiled here: no C++ compiler, no CUDA toolkit needed.
//!
//! The shared header, `params.cuh`, is made from the Rust definitions: every `#[repr(C)]`
//! struct and every `pub const` number of `src/backend/` (read with `syn`). It asserts each
//! struct's size (and, in the simulation's C++ build, each field's offset), and
//! `shared_layout.rs` asserts the same numbers on the Rust side, so neither can drift.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = root.join("kernels");
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

    let shared = shared::collect(&root.join("src").join("backend"));
    let header = out_dir.join("params.cuh");
    std::fs::write(&header, shared::c_header(&shared)).expect("writing params.cuh");
    std::fs::write(out_dir.join("shared_layout.rs"), shared::rust_asserts(&shared)).expect("writing shared_layout.rs");

    let ext = |p: &Path| p.extension().and_then(|e| e.to_str()).unwrap_or("").to_string();
    let stem = |p: &Path| p.file_stem().and_then(|e| e.to_str()).unwrap_or("").to_string();
    let name = |p: &Path| p.file_name().and_then(|e| e.to_str()).unwrap_or("").to_string();

    let mut out = String::new();
    out.push_str("/// `(module, source)` for every `kernels/*.cu`.\npub const MODULES: &[(&str, &str)] = &[\n");
    for f in files.iter().filter(|f| ext(f) == "cu") {
        writeln!(out, "    ({:?}, include_str!({:?})),", stem(f), f.display().to_string()).unwrap();
    }
    out.push_str("];\n/// `(file name, source)` for the headers the modules include: `kernels/*.cuh` and the\n/// generated `params.cuh`.\npub const HEADERS: &[(&str, &str)] = &[\n");
    for f in files.iter().filter(|f| ext(f) == "cuh") {
        writeln!(out, "    ({:?}, include_str!({:?})),", name(f), f.display().to_string()).unwrap();
    }
    writeln!(out, "    (\"params.cuh\", include_str!({:?})),", header.display().to_string()).unwrap();
    out.push_str("];\n");
    std::fs::write(out_dir.join("kernel_sources.rs"), out).expect("writing kernel_sources.rs");

    if std::env::var_os("CARGO_FEATURE_SIM").is_some() {
        let build = || {
            let mut b = cc::Build::new();
            b.cpp(true).std("c++17").define("GAN_SIM", None).include(&dir).include(&out_dir).warnings(false).flag_if_supported("-Wno-unknown-pragmas");
            b
        };
        // The kernels, with every load and store instrumented (the compiler's
        // thread-sanitizer pass): the hooks it calls are sim.cpp's access checker, not the
        // sanitizer's run-time library, which is never linked.
        let mut kernels = build();
        // .cu is not a C++ extension the compiler knows: say so before each source.
        kernels.flag("-x").flag("c++").flag("-fsanitize=thread");
        for f in files.iter().filter(|f| ext(f) == "cu") {
            kernels.file(f);
        }
        kernels.compile("gan_kernels_sim");
        // The scheduler and the checker, not instrumented.
        let mut runtime = build();
        runtime.file(dir.join("sim.cpp"));
        runtime.compile("gan_sim_runtime");
    }
}

/// The Rust definitions the kernels share, and the two files made from them.
mod shared {
    use std::fmt::Write as _;
    use std::path::{Path, PathBuf};

    pub struct Field {
        pub name: String,
        /// i32, u32, f32, i64, u64 or f64.
        pub ty: String,
    }

    pub struct Struct {
        pub name: String,
        /// `crate::backend::conv`, where the struct is defined.
        pub module: String,
        pub file: String,
        pub fields: Vec<Field>,
    }

    pub struct Const {
        pub name: String,
        pub value: String,
        pub file: String,
    }

    pub struct Shared {
        pub structs: Vec<Struct>,
        pub consts: Vec<Const>,
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())).filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().and_then(|e| e.to_str()) == Some("rs") {
                out.push(p);
            }
        }
    }

    /// `src/backend/cuda/ops/conv.rs` -> `crate::backend::cuda::ops::conv`.
    fn module_path(src: &Path, file: &Path) -> String {
        let rel = file.strip_prefix(src).expect("file under src/");
        let mut parts: Vec<String> = rel.with_extension("").components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        if parts.last().map(String::as_str) == Some("mod") {
            parts.pop();
        }
        std::iter::once("crate".to_string()).chain(parts).collect::<Vec<_>>().join("::")
    }

    fn is_repr_c(attrs: &[syn::Attribute]) -> bool {
        attrs.iter().any(|a| {
            a.path().is_ident("repr") && {
                let mut c = false;
                let _ = a.parse_nested_meta(|m| {
                    c |= m.path.is_ident("C");
                    Ok(())
                });
                c
            }
        })
    }

    fn type_name(ty: &syn::Type) -> Option<String> {
        match ty {
            syn::Type::Path(p) if p.qself.is_none() && p.path.segments.len() == 1 => Some(p.path.segments[0].ident.to_string()),
            _ => None,
        }
    }

    /// A literal number, in C spelling: digits without `_` or a type suffix.
    fn c_literal(e: &syn::Expr, float: bool) -> Option<String> {
        match e {
            syn::Expr::Lit(l) => match &l.lit {
                syn::Lit::Int(i) if !float => Some(i.base10_digits().to_string()),
                syn::Lit::Float(f) if float => Some(format!("{}f", f.base10_digits())),
                syn::Lit::Int(i) if float => Some(format!("{}.0f", i.base10_digits())),
                _ => None,
            },
            syn::Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => c_literal(&u.expr, float).map(|v| format!("(-{v})")),
            _ => None,
        }
    }

    /// Every `#[repr(C)]` struct and `pub const` number under `backend` (the crate's
    /// `src/backend`), in file order.
    pub fn collect(backend: &Path) -> Shared {
        let src = backend.parent().expect("src/backend has a parent");
        let mut files = Vec::new();
        rust_files(backend, &mut files);
        let mut shared = Shared { structs: Vec::new(), consts: Vec::new() };
        for file in files {
            println!("cargo:rerun-if-changed={}", file.display());
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
            let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", file.display()));
            let shown = file.strip_prefix(src.parent().unwrap_or(src)).unwrap_or(&file).display().to_string();
            for item in ast.items {
                match item {
                    syn::Item::Struct(s) if is_repr_c(&s.attrs) => {
                        let fields = s
                            .fields
                            .iter()
                            .map(|f| {
                                let ty = type_name(&f.ty).filter(|t| matches!(t.as_str(), "i32" | "u32" | "f32" | "i64" | "u64" | "f64"));
                                let ty = ty.unwrap_or_else(|| {
                                    panic!(
                                        "{shown}: field {:?} of the #[repr(C)] struct {}: the kernels take i32, u32, f32, i64, u64 or f64 fields",
                                        f.ident, s.ident
                                    )
                                });
                                Field { name: f.ident.as_ref().expect("named fields").to_string(), ty }
                            })
                            .collect();
                        shared.structs.push(Struct { name: s.ident.to_string(), module: module_path(src, &file), file: shown.clone(), fields });
                    }
                    syn::Item::Const(c) if matches!(c.vis, syn::Visibility::Public(_)) => {
                        let Some(ty) = type_name(&c.ty).filter(|t| matches!(t.as_str(), "i32" | "u32" | "usize" | "f32")) else { continue };
                        let value = c_literal(&c.expr, ty == "f32")
                            .unwrap_or_else(|| panic!("{shown}: pub const {} is shared with the kernels and must be a number literal", c.ident));
                        shared.consts.push(Const { name: c.ident.to_string(), value, file: shown.clone() });
                    }
                    _ => {}
                }
            }
        }
        let mut names: Vec<&str> = shared.structs.iter().map(|s| s.name.as_str()).chain(shared.consts.iter().map(|c| c.name.as_str())).collect();
        names.sort();
        for w in names.windows(2) {
            assert!(w[0] != w[1], "{} is defined twice in src/backend: the kernels' header needs one definition", w[0]);
        }
        shared
    }

    fn c_type(ty: &str) -> (&'static str, usize) {
        match ty {
            "i32" => ("int", 4),
            "u32" => ("unsigned int", 4),
            "f32" => ("float", 4),
            "i64" => ("long long", 8),
            "u64" => ("unsigned long long", 8),
            "f64" => ("double", 8),
            _ => unreachable!("checked in collect"),
        }
    }

    /// `(size, field offsets)` of a struct under C's layout rules (each field at the next
    /// multiple of its size, the whole padded to the largest).
    pub fn layout(s: &Struct) -> (usize, Vec<usize>) {
        let (mut at, mut align, mut offsets) = (0usize, 1usize, Vec::new());
        for f in &s.fields {
            let size = c_type(&f.ty).1;
            at = at.div_ceil(size) * size;
            offsets.push(at);
            at += size;
            align = align.max(size);
        }
        (at.div_ceil(align) * align, offsets)
    }

    pub fn c_header(sh: &Shared) -> String {
        let mut h = String::new();
        h.push_str("// Generated by build.rs from the #[repr(C)] structs and the pub const numbers of src/backend/:\n");
        h.push_str("// what the kernels share with Rust. Do not edit: change the Rust definition.\n#pragma once\n\n");
        h.push_str("#ifdef GAN_SIM\n#include <cstddef>\n#endif\n\n");
        for c in &sh.consts {
            let _ = writeln!(h, "#define {} {}  // {}", c.name, c.value, c.file);
        }
        for s in &sh.structs {
            let _ = writeln!(h, "\n// {}\nstruct {} {{", s.file, s.name);
            for f in &s.fields {
                let _ = writeln!(h, "    {} {};", c_type(&f.ty).0, f.name);
            }
            h.push_str("};\n");
            let (size, offsets) = layout(s);
            let _ = writeln!(h, "static_assert(sizeof({0}) == {size}, \"{0}: the C layout differs from {1}\");", s.name, s.file);
            h.push_str("#ifdef GAN_SIM\n");
            for (f, off) in s.fields.iter().zip(offsets) {
                let _ = writeln!(h, "static_assert(offsetof({0}, {1}) == {off}, \"{0}.{1}: the C layout differs from {2}\");", s.name, f.name, s.file);
            }
            h.push_str("#endif\n");
        }
        h
    }

    pub fn rust_asserts(sh: &Shared) -> String {
        let mut r = String::from("// Generated by build.rs: the layout params.cuh declares to the kernels.\n");
        for s in &sh.structs {
            let (size, offsets) = layout(s);
            let path = format!("{}::{}", s.module, s.name);
            let _ = writeln!(r, "const _: () = assert!(std::mem::size_of::<{path}>() == {size}, \"{}: size differs from params.cuh\");", s.name);
            for (f, off) in s.fields.iter().zip(offsets) {
                let _ = writeln!(
                    r,
                    "const _: () = assert!(std::mem::offset_of!({path}, {}) == {off}, \"{}.{}: offset differs from params.cuh\");",
                    f.name, s.name, f.name
                );
            }
        }
        r
    }
}
