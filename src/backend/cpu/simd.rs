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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::sync::atomic::{AtomicU8, Ordering};

    /// 0: not probed yet, 1: baseline, 2: AVX2 + FMA, 3: AVX-512F.
    static LEVEL: AtomicU8 = AtomicU8::new(0);

    #[inline(always)]
    pub fn level() -> u8 {
        match LEVEL.load(Ordering::Relaxed) {
            0 => {
                let l = if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    3
                } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    2
                } else {
                    1
                };
                LEVEL.store(l, Ordering::Relaxed);
                l
            }
            l => l,
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// `f()`, compiled for AVX-512 or AVX2 + FMA where the CPU has them.
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match x86::level() {
            // SAFETY: the CPU was probed for these features.
            3 => return unsafe { x86::avx512(f) },
            2 => return unsafe { x86::avx2(f) },
            _ => {}
        }
    }
    f()
}
