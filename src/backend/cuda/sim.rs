//! The simulated launch: kernels/*.cu compiled as C++ against kernels/sim.h (build.rs,
//! feature `sim`), run by the fiber scheduler in kernels/sim.cpp, whose checker watches
//! every load and store. Device memory is sim.cpp's too: each buffer sits between two
//! poisoned red zones, and the checker knows which of its words have been written.

use super::ops::{Launch, Ptr};
use super::GemmMode;
use anyhow::{bail, Result};
use std::ffi::{c_char, c_int, c_void, CStr, CString};

extern "C" {
    fn sim_launch(
        gx: u32,
        gy: u32,
        gz: u32,
        bx: u32,
        by: u32,
        bz: u32,
        shared_bytes: u32,
        gemm_precision: i32,
        gemm_feed: i32,
        name: *const c_char,
        ptrs: *const u64,
        n_ptrs: u32,
        flags: c_int,
        entry: extern "C" fn(*mut c_void),
        arg: *mut c_void,
        err: *mut c_char,
        err_len: u32,
    ) -> i32;
    fn sim_alloc(len: usize, zeroed: c_int) -> *mut f32;
    fn sim_free(p: *mut f32);
    fn sim_mark_defined(p: *mut f32, len: usize);
}

/// The access checker (races, uninitialised reads, out-of-bounds accesses): always on.
const SIM_CHECK_ACCESSES: c_int = 1;
/// Every launch again in reverse and in shuffled order, compared bit for bit.
const SIM_ALL_ORDERS: c_int = 2;

/// How hard the simulation checks each launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimChecks {
    /// Run every launch in three orders of threads and blocks (three times the time).
    pub all_orders: bool,
}

impl Default for SimChecks {
    fn default() -> Self {
        SimChecks { all_orders: true }
    }
}

/// Runs `entry(arg)` as every thread of the launch of kernel `name`, to completion, with
/// the GEMM tiles in `mode`; `ptrs` are its buffer arguments (0 for a null one).
pub fn launch(name: &str, l: Launch, mode: GemmMode, checks: SimChecks, ptrs: &[Ptr], entry: extern "C" fn(*mut c_void), arg: *mut c_void) -> Result<()> {
    let mut err = [0 as c_char; 1024];
    let cname = CString::new(name)?;
    let flags = SIM_CHECK_ACCESSES | if checks.all_orders { SIM_ALL_ORDERS } else { 0 };
    // SAFETY: `entry` and `arg` come from the launch site `kernels!` generated (cuda/ops),
    // which keeps `arg` alive across this synchronous call; `ptrs` and `cname` outlive it;
    // `err` is writable for its length.
    let rc = unsafe {
        sim_launch(
            l.grid.0,
            l.grid.1,
            l.grid.2,
            l.block,
            1,
            1,
            l.shared_bytes,
            mode.precision.code(),
            mode.feed.code(),
            cname.as_ptr(),
            ptrs.as_ptr(),
            ptrs.len() as u32,
            flags,
            entry,
            arg,
            err.as_mut_ptr(),
            err.len() as u32,
        )
    };
    if rc != 0 {
        // SAFETY: sim_launch wrote a NUL-terminated message into `err`.
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
        bail!("simulated launch of {name} (grid {:?}, block {}) failed: {msg}", l.grid, l.block);
    }
    Ok(())
}

/// A simulated device buffer of `len` floats: zeroed (`Core::alloc`'s promise) or, for
/// scratch, poisoned with NaN and unwritten as far as the checker knows.
pub fn alloc(len: usize, zeroed: bool) -> *mut f32 {
    // SAFETY: sim_alloc returns a fresh allocation of max(len, 1) floats, never null.
    unsafe { sim_alloc(len, c_int::from(zeroed)) }
}

/// Frees a buffer from `alloc`.
///
/// # Safety
/// `p` came from `alloc` and is freed only once.
pub unsafe fn free(p: *mut f32) {
    // SAFETY: as the caller promises.
    unsafe { sim_free(p) }
}

/// The host wrote the first `len` floats of the buffer `p` (an upload): the checker counts
/// them as written.
///
/// # Safety
/// `p` came from `alloc` and is live.
pub unsafe fn mark_defined(p: *mut f32, len: usize) {
    // SAFETY: as the caller promises.
    unsafe { sim_mark_defined(p, len) }
}
