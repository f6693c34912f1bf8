//! NVRTC, loaded here rather than through cudarc.
//!
//! cudarc 0.19 opens NVRTC once, in a private static, under the names of the CUDA version it
//! was built for (`libnvrtc.so`, `libnvrtc.so.12`, `.11`, ...; never `libnvrtc.so.13`), offers
//! no way to name another file, and panics when none loads. So with only NVRTC 13 installed
//! (the PyPI wheel `nvidia-cuda-nvrtc`, or a CUDA 13 toolkit) it could not compile anything.
//! The part of NVRTC's C API the backend uses is small and the same in 12 and 13; it is
//! resolved here with libloading, from places listed below, and every failure is an `Err`.
//! cudarc still loads the PTX (`Ptx::from_src`), which needs the driver only.
//!
//! Search order, first that loads and has every symbol wins:
//! 1. `$GAN_ENGINE_NVRTC`, a path to the library file; when set, nothing else is tried;
//! 2. `libnvrtc.so.<major>` for the preferred major version (the driver's CUDA major when a GPU
//!    is opened), then 13, then 12, then `libnvrtc.so`, each by name, so the dynamic linker
//!    searches LD_LIBRARY_PATH, the ldconfig cache and the system folders;
//! 3. the same versioned names in `$CUDA_HOME`, `$CUDA_PATH`, `/usr/local/cuda` (`lib64`,
//!    `lib`), `$CONDA_PREFIX/lib`, and the PyPI wheel folders (`nvidia/cu13/lib` of
//!    `nvidia-cuda-nvrtc` 13, `nvidia/cuda_nvrtc/lib` of `nvidia-cuda-nvrtc-cu12`) in the
//!    site-packages of `$VIRTUAL_ENV`, `$CONDA_PREFIX`, every pyenv version, `~/.local` and the
//!    prefix of every folder on PATH.

use anyhow::{anyhow, bail, Result};
use libloading::Library;
use std::ffi::{c_char, c_int, c_void, CStr, CString, OsString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

type Status = c_int;
type Program = *mut c_void;
const SUCCESS: Status = 0;

/// The loaded library and the functions the backend calls.
pub struct Nvrtc {
    /// The library file (as the dynamic linker resolved it, when /proc/self/maps says).
    pub path: String,
    pub version: (i32, i32),
    get_error_string: unsafe extern "C" fn(Status) -> *const c_char,
    get_num_supported_archs: unsafe extern "C" fn(*mut c_int) -> Status,
    get_supported_archs: unsafe extern "C" fn(*mut c_int) -> Status,
    create_program: unsafe extern "C" fn(*mut Program, *const c_char, *const c_char, c_int, *const *const c_char, *const *const c_char) -> Status,
    compile_program: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> Status,
    get_program_log_size: unsafe extern "C" fn(Program, *mut usize) -> Status,
    get_program_log: unsafe extern "C" fn(Program, *mut c_char) -> Status,
    get_ptx_size: unsafe extern "C" fn(Program, *mut usize) -> Status,
    get_ptx: unsafe extern "C" fn(Program, *mut c_char) -> Status,
    destroy_program: unsafe extern "C" fn(*mut Program) -> Status,
    // Last: the function pointers above are valid while this is alive.
    _lib: Library,
}

/// What to do, for the error message when nothing loaded.
const INSTALL_HINT: &str = "install NVRTC (the CUDA toolkit's, or `pip install nvidia-cuda-nvrtc` for 13 / `nvidia-cuda-nvrtc-cu12` for 12), put its lib folder on LD_LIBRARY_PATH or set GAN_ENGINE_NVRTC to the library file";

static LOADED: OnceLock<std::result::Result<Nvrtc, String>> = OnceLock::new();

/// NVRTC for this process, loaded at the first call: `prefer_major` (the driver's CUDA
/// major version, whose NVRTC makes PTX that driver can load) goes first in the search.
/// Later calls return the same library whatever they prefer.
pub fn get(prefer_major: Option<i32>) -> Result<&'static Nvrtc> {
    LOADED.get_or_init(|| load(prefer_major, &|k: &str| std::env::var_os(k)).map_err(|e| format!("{e:#}"))).as_ref().map_err(|e| anyhow!("{e}"))
}

/// Loads the first candidate that works; `var` reads the environment (a parameter so the
/// search can be tested without touching the process's).
fn load(prefer_major: Option<i32>, var: &dyn Fn(&str) -> Option<OsString>) -> Result<Nvrtc> {
    if let Some(path) = var("GAN_ENGINE_NVRTC").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return open(&path).map_err(|e| anyhow!("GAN_ENGINE_NVRTC={}: {e}", path.display()));
    }
    let (names, folders) = candidates(prefer_major, var);
    load_first(&names, &folders)
}

/// The first of `names` (for the dynamic linker's search) and `files` that loads.
fn load_first(names: &[PathBuf], files: &[PathBuf]) -> Result<Nvrtc> {
    let mut failures = Vec::new();
    for c in names.iter().chain(files) {
        match open(c) {
            Ok(n) => return Ok(n),
            // A name the linker did not find is the normal case; anything else (a file of the
            // wrong architecture, a missing symbol) is worth reporting.
            Err(e) => {
                let msg = format!("{e}");
                if !msg.contains("No such file") && !msg.contains("cannot open shared object") {
                    failures.push(format!("{}: {msg}", c.display()));
                }
            }
        }
    }
    let names: Vec<String> = names.iter().map(|n| n.display().to_string()).collect();
    let rejected = if failures.is_empty() { String::new() } else { format!("; found but unusable: {}", failures.join("; ")) };
    bail!("NVRTC was not found (looked for {} on LD_LIBRARY_PATH and the system library paths, and in $CUDA_HOME, /usr/local/cuda, conda and PyPI-wheel folders){rejected}: {INSTALL_HINT}", names.join(", "))
}

/// Library names for the dynamic linker's own search, then files in known folders.
fn candidates(prefer_major: Option<i32>, var: &dyn Fn(&str) -> Option<OsString>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut majors: Vec<i32> = prefer_major.into_iter().collect();
    for m in [13, 12] {
        if !majors.contains(&m) {
            majors.push(m);
        }
    }
    let versioned: Vec<String> = majors.iter().map(|m| format!("libnvrtc.so.{m}")).collect();
    let mut names: Vec<PathBuf> = versioned.iter().map(PathBuf::from).collect();
    names.push(PathBuf::from("libnvrtc.so"));

    let path_var = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut dirs = Vec::new();
    for root in [path_var("CUDA_HOME"), path_var("CUDA_PATH"), Some(PathBuf::from("/usr/local/cuda"))].into_iter().flatten() {
        dirs.push(root.join("lib64"));
        dirs.push(root.join("lib"));
    }
    if let Some(conda) = path_var("CONDA_PREFIX") {
        dirs.push(conda.join("lib"));
    }
    // Python prefixes whose site-packages may hold the NVRTC wheels.
    let mut prefixes: Vec<PathBuf> = [path_var("VIRTUAL_ENV"), path_var("CONDA_PREFIX")].into_iter().flatten().collect();
    let home = path_var("HOME");
    if let Some(pyenv) = path_var("PYENV_ROOT").or_else(|| home.as_ref().map(|h| h.join(".pyenv"))) {
        prefixes.extend(subdirs(&pyenv.join("versions")));
    }
    if let Some(h) = &home {
        prefixes.push(h.join(".local"));
    }
    if let Some(p) = var("PATH") {
        prefixes.extend(std::env::split_paths(&p).filter_map(|d| d.parent().map(Path::to_path_buf)));
    }
    let mut seen = Vec::new();
    for prefix in prefixes {
        if seen.contains(&prefix) {
            continue;
        }
        seen.push(prefix.clone());
        for py in subdirs(&prefix.join("lib")).into_iter().filter(|d| d.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python3"))) {
            for packages in ["site-packages", "dist-packages"] {
                for wheel in ["cu13", "cuda_nvrtc"] {
                    dirs.push(py.join(packages).join("nvidia").join(wheel).join("lib"));
                }
            }
        }
    }
    let mut files = Vec::new();
    for name in &versioned {
        for d in &dirs {
            let f = d.join(name);
            if f.is_file() && !files.contains(&f) {
                files.push(f);
            }
        }
    }
    (names, files)
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// The file the dynamic linker mapped for a library whose name starts with `libnvrtc.so`.
fn mapped_path() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| Path::new(p).file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libnvrtc.so")))
        .map(str::to_string)
}

/// libloading's message with its cause ("dlopen failed: <what dlerror said>").
fn describe(e: libloading::Error) -> String {
    format!("{:#}", anyhow::Error::new(e))
}

fn open(file: &Path) -> Result<Nvrtc> {
    // SAFETY: loading NVRTC runs only its initialisers; every symbol is checked below.
    let lib = unsafe { Library::new(file) }.map_err(|e| anyhow!("{}", describe(e)))?;
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the declared type matches NVRTC's C prototype (nvrtc.h, identical in
            // 12.x and 13.x); the pointer stays valid while `lib` (kept in `Nvrtc`) lives.
            *unsafe { lib.get($name) }
                .map_err(|e| anyhow!("{} lacks {}: {}", file.display(), String::from_utf8_lossy(&$name[..$name.len() - 1]), describe(e)))?
        };
    }
    let version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> Status = sym!(b"nvrtcVersion\0");
    let (mut major, mut minor) = (0, 0);
    // SAFETY: both pointers are valid for writes.
    let r = unsafe { version(&mut major, &mut minor) };
    if r != SUCCESS {
        bail!("{}: nvrtcVersion failed ({r})", file.display());
    }
    let n = Nvrtc {
        path: String::new(),
        version: (major, minor),
        get_error_string: sym!(b"nvrtcGetErrorString\0"),
        get_num_supported_archs: sym!(b"nvrtcGetNumSupportedArchs\0"),
        get_supported_archs: sym!(b"nvrtcGetSupportedArchs\0"),
        create_program: sym!(b"nvrtcCreateProgram\0"),
        compile_program: sym!(b"nvrtcCompileProgram\0"),
        get_program_log_size: sym!(b"nvrtcGetProgramLogSize\0"),
        get_program_log: sym!(b"nvrtcGetProgramLog\0"),
        get_ptx_size: sym!(b"nvrtcGetPTXSize\0"),
        get_ptx: sym!(b"nvrtcGetPTX\0"),
        destroy_program: sym!(b"nvrtcDestroyProgram\0"),
        _lib: lib,
    };
    let path = if file.components().count() > 1 { Some(file.display().to_string()) } else { mapped_path() };
    Ok(Nvrtc { path: path.unwrap_or_else(|| file.display().to_string()), ..n })
}

/// A compile that NVRTC rejected: its status and log.
#[derive(Debug)]
pub struct CompileFailure {
    pub status: String,
    pub log: String,
}

impl Nvrtc {
    fn error(&self, r: Status) -> String {
        // SAFETY: NVRTC returns a static NUL-terminated string for every status.
        let s = unsafe { (self.get_error_string)(r) };
        if s.is_null() {
            return format!("NVRTC status {r}");
        }
        // SAFETY: checked non-null above; static storage.
        unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
    }

    fn check(&self, what: &str, r: Status) -> Result<()> {
        if r != SUCCESS {
            bail!("{what}: {}", self.error(r));
        }
        Ok(())
    }

    /// The architectures this NVRTC generates code for, as numbers (75, 90, ...).
    pub fn archs(&self) -> Result<Vec<i32>> {
        let mut n = 0;
        // SAFETY: `n` is valid for a write.
        self.check("nvrtcGetNumSupportedArchs", unsafe { (self.get_num_supported_archs)(&mut n) })?;
        let mut archs = vec![0; n.max(0) as usize];
        // SAFETY: `archs` has room for the `n` values NVRTC reported.
        self.check("nvrtcGetSupportedArchs", unsafe { (self.get_supported_archs)(archs.as_mut_ptr()) })?;
        Ok(archs)
    }

    /// Compiles `src` (named `name` in messages) with `options` to PTX. `Ok(Err(..))` is a
    /// compile error with NVRTC's log; `Err` anything else.
    pub fn compile(&self, src: &str, name: &str, options: &[String]) -> Result<std::result::Result<String, CompileFailure>> {
        let src = CString::new(src).map_err(|_| anyhow!("{name}: the source contains a NUL byte"))?;
        let cname = CString::new(name).map_err(|_| anyhow!("{name}: the name contains a NUL byte"))?;
        let opts: Vec<CString> = options
            .iter()
            .map(|o| CString::new(o.as_str()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| anyhow!("an NVRTC option contains a NUL byte"))?;
        let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
        let mut prog: Program = std::ptr::null_mut();
        // SAFETY: every string is NUL-terminated and outlives the call; no headers are passed.
        self.check("nvrtcCreateProgram", unsafe { (self.create_program)(&mut prog, src.as_ptr(), cname.as_ptr(), 0, std::ptr::null(), std::ptr::null()) })?;
        let out = self.compile_program(prog, &opt_ptrs);
        // SAFETY: `prog` was created above and is destroyed once, here.
        unsafe { (self.destroy_program)(&mut prog) };
        out
    }

    fn compile_program(&self, prog: Program, opts: &[*const c_char]) -> Result<std::result::Result<String, CompileFailure>> {
        // SAFETY: `prog` is live; `opts` holds `opts.len()` valid C strings.
        let r = unsafe { (self.compile_program)(prog, opts.len() as c_int, opts.as_ptr()) };
        if r != SUCCESS {
            let mut len = 0usize;
            // SAFETY: `prog` is live; `len` is valid for a write.
            self.check("nvrtcGetProgramLogSize", unsafe { (self.get_program_log_size)(prog, &mut len) })?;
            let mut log = vec![0u8; len.max(1)];
            // SAFETY: `log` has the `len` bytes NVRTC asked for.
            self.check("nvrtcGetProgramLog", unsafe { (self.get_program_log)(prog, log.as_mut_ptr() as *mut c_char) })?;
            let log = String::from_utf8_lossy(log.split(|b| *b == 0).next().unwrap_or(&[])).into_owned();
            return Ok(Err(CompileFailure { status: self.error(r), log }));
        }
        let mut len = 0usize;
        // SAFETY: as above.
        self.check("nvrtcGetPTXSize", unsafe { (self.get_ptx_size)(prog, &mut len) })?;
        let mut ptx = vec![0u8; len.max(1)];
        // SAFETY: `ptx` has the `len` bytes NVRTC asked for (the PTX and its NUL).
        self.check("nvrtcGetPTX", unsafe { (self.get_ptx)(prog, ptx.as_mut_ptr() as *mut c_char) })?;
        let end = ptx.iter().position(|b| *b == 0).unwrap_or(ptx.len());
        ptx.truncate(end);
        String::from_utf8(ptx).map(Ok).map_err(|_| anyhow!("NVRTC returned PTX that is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> {
        let m: HashMap<String, OsString> = vars.iter().map(|(k, v)| (k.to_string(), v.as_os_str().to_owned())).collect();
        move |k: &str| m.get(k).cloned()
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gan-engine-nvrtc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn names_put_the_preferred_major_first_then_13_then_12() {
        let none = env(&[]);
        let (names, _) = candidates(None, &none);
        assert_eq!(names, ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"].map(PathBuf::from));
        let (names, _) = candidates(Some(12), &none);
        assert_eq!(names, ["libnvrtc.so.12", "libnvrtc.so.13", "libnvrtc.so"].map(PathBuf::from));
    }

    #[test]
    fn finds_the_pypi_wheel_layouts_next_to_python() {
        let root = scratch("wheels");
        let venv = root.join("venv");
        let cu13 = venv.join("lib/python3.12/site-packages/nvidia/cu13/lib");
        let cu12 = root.join("usr/lib/python3.10/dist-packages/nvidia/cuda_nvrtc/lib");
        for d in [&cu13, &cu12] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(cu13.join("libnvrtc.so.13"), b"").unwrap();
        std::fs::write(cu12.join("libnvrtc.so.12"), b"").unwrap();
        let path_dirs = std::env::join_paths([root.join("usr/bin")]).unwrap();
        let (_, files) = candidates(None, &env(&[("VIRTUAL_ENV", &venv), ("PATH", Path::new(&path_dirs)), ("HOME", &root.join("nohome"))]));
        assert_eq!(files, [cu13.join("libnvrtc.so.13"), cu12.join("libnvrtc.so.12")]);
        let (_, files) = candidates(Some(12), &env(&[("VIRTUAL_ENV", &venv), ("PATH", Path::new(&path_dirs)), ("HOME", &root.join("nohome"))]));
        assert_eq!(files[0], cu12.join("libnvrtc.so.12"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_unusable_library_is_an_error_naming_it_not_a_panic() {
        let root = scratch("bogus");
        let bogus = root.join("libnvrtc.so.13");
        std::fs::write(&bogus, b"not a shared object").unwrap();
        let err = load(None, &env(&[("GAN_ENGINE_NVRTC", &bogus)])).err().expect("a text file is no library");
        assert!(format!("{err:#}").contains(&bogus.display().to_string()), "{err:#}");
        // Found in a wheel folder but unusable: reported, and the search goes on to the end.
        // The folder search alone (`load_first` without the names the dynamic linker would
        // resolve), so an NVRTC installed on this machine cannot answer in its place.
        let wheel = root.join("venv/lib/python3.11/site-packages/nvidia/cu13/lib");
        std::fs::create_dir_all(&wheel).unwrap();
        std::fs::copy(&bogus, wheel.join("libnvrtc.so.13")).unwrap();
        let only_wheel = env(&[("VIRTUAL_ENV", &root.join("venv")), ("HOME", &root), ("CUDA_HOME", &root)]);
        let (_, files) = candidates(None, &only_wheel);
        assert_eq!(files, [wheel.join("libnvrtc.so.13")]);
        let msg = format!("{:#}", load_first(&[], &files).err().expect("the only candidate is no library"));
        assert!(msg.starts_with("NVRTC was not found") && msg.contains("found but unusable") && msg.contains("nvidia/cu13/lib/libnvrtc.so.13"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_nvrtc_is_one_line_saying_what_to_do() {
        // Names no linker resolves and no files: the message of a machine without NVRTC.
        let msg = format!("{:#}", load_first(&[PathBuf::from("libnvrtc-absent.so.99")], &[]).err().expect("nothing to load"));
        assert!(msg.starts_with("NVRTC was not found") && msg.contains("libnvrtc-absent.so.99") && msg.contains("pip install nvidia-cuda-nvrtc"), "{msg}");
        assert!(!msg.contains("unusable") && !msg.contains('\n'), "{msg}");
        let root = scratch("missing");
        let msg = format!("{:#}", load(None, &env(&[("GAN_ENGINE_NVRTC", &root.join("libnvrtc.so.13"))])).err().expect("no such file"));
        assert!(msg.starts_with("GAN_ENGINE_NVRTC=") && !msg.contains('\n'), "{msg}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Needs NVRTC, so it is ignored by default; scripts/dev/cuda-tools.sh runs it against
    /// NVRTC 12 and NVRTC 13 (GAN_ENGINE_NVRTC names each), where it must pass.
    #[test]
    #[ignore = "needs NVRTC: GAN_ENGINE_NVRTC=<libnvrtc.so.N> cargo test --release --lib -- --ignored nvrtc"]
    fn compiles_a_kernel_and_rejects_a_wrong_one() {
        let nv = load(None, &|k: &str| std::env::var_os(k)).expect("NVRTC must load where this test is run");
        let src = "extern \"C\" __global__ void k(float* x) { x[threadIdx.x] = 1.0f; }";
        let arch = format!("--gpu-architecture=compute_{}", nv.archs().unwrap().into_iter().max().unwrap());
        let ptx = nv.compile(src, "k.cu", std::slice::from_ref(&arch)).unwrap().expect("a valid kernel compiles");
        assert!(ptx.contains(".entry k("), "NVRTC {:?} from {}: {ptx}", nv.version, nv.path);
        let bad = nv.compile("extern \"C\" __global__ void k() { undeclared(); }", "bad.cu", &[arch]).unwrap().expect_err("an error");
        assert!(bad.log.contains("undeclared"), "{bad:?}");
        eprintln!("NVRTC {}.{} from {}: compiled and rejected as expected", nv.version.0, nv.version.1, nv.path);
    }
}
