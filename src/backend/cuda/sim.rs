//! The simulated launch: kernels/*.cu compiled as C++ against kernels/sim.h (build.rs,
//! feature `sim`), run by the fiber scheduler in kernels/sim.cpp.

use super::ops::Launch;
use super::GemmMode;
use anyhow::{bail, Result};
use std::ffi::{c_char, c_void, CStr};

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
        entry: extern "C" fn(*mut c_void),
        arg: *mut c_void,
        err: *mut c_char,
        err_len: u32,
    ) -> i32;
}

/// Runs `entry(arg)` as every thread of the launch, to completion, with the GEMM tiles in `mode`.
pub fn launch(name: &str, l: Launch, mode: GemmMode, entry: extern "C" fn(*mut c_void), arg: *mut c_void) -> Result<()> {
    let mut err = [0 as c_char; 512];
    // SAFETY: `entry` and `arg` come from the launch site `kernels!` generated (cuda/ops), which
    // keeps `arg` alive across this synchronous call; `err` is writable for its length.
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
