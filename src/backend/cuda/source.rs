//! The kernel sources embedded by build.rs, with their `#include "x.cuh"` lines expanded
//! (NVRTC sees one self-contained string per module), and the list of `extern "C"`
//! kernels each module defines.

include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));

/// `module`'s source with every quoted include replaced by the header's text, each header
/// at most once (they all start with `#pragma once`). `#line` directives keep NVRTC's
/// messages pointing at the original files and lines.
pub fn expanded(module: &str) -> Option<String> {
    let (_, src) = MODULES.iter().find(|(m, _)| *m == module)?;
    let mut seen = Vec::new();
    let mut out = String::new();
    expand_into(src, &format!("{module}.cu"), &mut seen, &mut out);
    Some(out)
}

fn expand_into(src: &str, file: &str, seen: &mut Vec<&'static str>, out: &mut String) {
    out.push_str(&format!("#line 1 \"{file}\"\n"));
    for (i, line) in src.lines().enumerate() {
        let include = line.trim().strip_prefix("#include \"").and_then(|r| r.strip_suffix('"'));
        match include.and_then(|name| HEADERS.iter().find(|(h, _)| *h == name)) {
            Some((name, text)) => {
                if !seen.contains(name) {
                    seen.push(name);
                    expand_into(text, name, seen, out);
                    out.push_str(&format!("#line {} \"{file}\"\n", i + 2));
                } else {
                    out.push('\n');
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

/// Every `extern "C"` kernel name in the embedded modules, with its module.
pub fn kernels() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for (module, src) in MODULES {
        out.extend(kernel_names(src).into_iter().map(|k| (k, *module)));
    }
    out
}

/// Names of the `extern "C"` functions defined in `src`: the identifier before the first
/// `(` that follows `extern "C"`, skipping `__global__`, `void` and `__launch_bounds__(..)`.
pub fn kernel_names(src: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find("extern \"C\"") {
        let mut s = rest[at + "extern \"C\"".len()..].trim_start();
        loop {
            if let Some(r) = s.strip_prefix("__global__").or_else(|| s.strip_prefix("void")) {
                s = r.trim_start();
            } else if let Some(r) = s.strip_prefix("__launch_bounds__") {
                // skip the balanced parenthesis
                let mut depth = 0;
                let mut end = r.len();
                for (i, ch) in r.char_indices() {
                    match ch {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                end = i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                s = r[end..].trim_start();
            } else {
                break;
            }
        }
        let name_end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
        if name_end > 0 {
            names.push(&s[..name_end]);
        }
        rest = &s[name_end..];
    }
    names
}

/// The PTX cache key's hash (the crate's one FNV-1a).
pub use crate::hash::fnv1a;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_kernel_names_through_launch_bounds() {
        let src = "extern \"C\" __global__ void __launch_bounds__(F(2, 3))\nfoo_forward_f32(int a) {}\nextern \"C\" __global__ void bar_f32() {}";
        assert_eq!(kernel_names(src), vec!["foo_forward_f32", "bar_f32"]);
    }

    #[test]
    fn expansion_inlines_headers_once() {
        for (m, _) in MODULES {
            let s = expanded(m).unwrap();
            assert!(!s.lines().any(|l| l.trim().starts_with("#include \"") && l.trim().ends_with(".cuh\"")), "{m}: a header include was left unexpanded");
            assert!(s.starts_with(&format!("#line 1 \"{m}.cu\"")), "{m}: no #line directive");
            assert_eq!(s.matches("struct ConvParams {").count(), 1, "{m}: common.cuh inlined more than once");
        }
    }
}
