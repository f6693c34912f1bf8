//! Runs a hot loop compiled for the widest vector extension this CPU has.
//!
//! The crate is built for baseline x86-64 (SSE2), so that one binary runs on any x86-64
//! machine. The elementwise and reduction loops are bound by how many values one
//! instruction handles, so they are compiled a second and a third time with AVX2 + FMA
//! and with AVX-512, and `wide` picks one at run time. The closure must be small enough
//! to be inlined (it is called once): what it calls through a function pointer (a rayon
//! job, say) is not recompiled, so `wide` goes inside the parallel loop, not around it.
//! Closures that reach the loop should hold their constants by value (`move`, `Copy`):
//! constants reached through a reference are reloaded for every value, and such loops
//! stay scalar (batchnorm's did, at a third of its present speed).
//!
//! `GAN_ENGINE_SIMD=scalar|avx2|avx512` forces one level instead of the widest (read once,
//! here): the tests run the CPU twins at every level the machine has, so the paths CI's
//! CPU would not take are checked too. A level the CPU lacks is refused; the CLI says so
//! as an error before any op runs ([`check_env`]).

use anyhow::{bail, Result};

/// The code paths `wide` chooses between.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Baseline x86-64 (SSE2), or any other architecture.
    Scalar,
    /// AVX2 + FMA.
    Avx2,
    /// AVX-512F (with AVX2 + FMA).
    Avx512,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Scalar, Level::Avx2, Level::Avx512];
    /// The environment variable that forces a level.
    pub const ENV: &'static str = "GAN_ENGINE_SIMD";

    pub fn label(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    fn code(self) -> u8 {
        match self {
            Level::Scalar => 1,
            Level::Avx2 => 2,
            Level::Avx512 => 3,
        }
    }
}

/// The widest level this CPU runs.
pub fn widest() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let (avx2, fma, avx512) = (std::is_x86_feature_detected!("avx2"), std::is_x86_feature_detected!("fma"), std::is_x86_feature_detected!("avx512f"));
        if avx512 && avx2 && fma {
            return Level::Avx512;
        }
        if avx2 && fma {
            return Level::Avx2;
        }
    }
    Level::Scalar
}

/// Every level this CPU runs, narrowest first.
pub fn available() -> Vec<Level> {
    Level::ALL.into_iter().filter(|l| *l <= widest()).collect()
}

/// The level for `asked` (the value of GAN_ENGINE_SIMD, if set) on a CPU whose widest
/// level is `widest`: an error naming the variable for an unknown name or a level the CPU
/// lacks.
pub fn resolve(asked: Option<&str>, widest: Level) -> Result<Level> {
    let Some(s) = asked.map(str::trim).filter(|s| !s.is_empty()) else { return Ok(widest) };
    let Some(l) = Level::ALL.into_iter().find(|l| l.label() == s) else { bail!("{}={s:?}: expected scalar, avx2 or avx512", Level::ENV) };
    if l > widest {
        bail!("{}={s}: this CPU lacks {s} (its widest is {}); unset it or choose {}", Level::ENV, widest.label(), available_below(widest))
    }
    Ok(l)
}

fn available_below(widest: Level) -> String {
    Level::ALL.into_iter().filter(|l| *l <= widest).map(Level::label).collect::<Vec<_>>().join(" or ")
}

/// The level `wide` runs at in this process (GAN_ENGINE_SIMD or the widest), as an error
/// when GAN_ENGINE_SIMD asks for something this CPU cannot run.
pub fn check_env() -> Result<Level> {
    resolve(std::env::var(Level::ENV).ok().as_deref(), widest())
}

/// The level `wide` runs at (probed once). Panics with [`check_env`]'s message where
/// GAN_ENGINE_SIMD asks for a level the CPU lacks: the CLI checks first, so only a library
/// user that sets the variable wrongly gets here.
pub fn active() -> Level {
    match level() {
        3 => Level::Avx512,
        2 => Level::Avx2,
        _ => Level::Scalar,
    }
}

use std::sync::atomic::{AtomicU8, Ordering};

/// 0: not probed yet, else `Level::code`.
static LEVEL: AtomicU8 = AtomicU8::new(0);

#[inline(always)]
fn level() -> u8 {
    match LEVEL.load(Ordering::Relaxed) {
        0 => probe(),
        l => l,
    }
}

#[cold]
fn probe() -> u8 {
    let l = match check_env() {
        Ok(l) => l.code(),
        Err(e) => panic!("{e:#}"),
    };
    LEVEL.store(l, Ordering::Relaxed);
    l
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// `f()`, compiled for AVX-512 or AVX2 + FMA where the CPU has them (or the level
/// GAN_ENGINE_SIMD forces).
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            // SAFETY: `resolve` admits only levels the CPU was probed for.
            3 => return unsafe { x86::avx512(f) },
            // SAFETY: as above.
            2 => return unsafe { x86::avx2(f) },
            _ => {}
        }
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_level_is_refused_where_the_cpu_lacks_it() {
        assert_eq!(resolve(None, Level::Avx2).unwrap(), Level::Avx2);
        assert_eq!(resolve(Some(""), Level::Avx512).unwrap(), Level::Avx512);
        assert_eq!(resolve(Some("scalar"), Level::Avx2).unwrap(), Level::Scalar);
        assert_eq!(resolve(Some("avx2"), Level::Avx512).unwrap(), Level::Avx2);
        let e = resolve(Some("avx512"), Level::Avx2).unwrap_err().to_string();
        assert!(e.contains("GAN_ENGINE_SIMD=avx512") && e.contains("lacks") && e.contains("scalar or avx2"), "{e}");
        let e = resolve(Some("sse9"), Level::Avx512).unwrap_err().to_string();
        assert!(e.contains("expected scalar, avx2 or avx512"), "{e}");
    }
}
