//! The launch sites, one file per op family (`ops/F.rs` launches `kernels/F.cu`): each
//! family declares its kernels once with `kernels!`, which generates both ways to launch
//! them, through the CUDA driver (cudarc, PTX from NVRTC) and, with the `sim` feature, as
//! the plain C function the same `.cu` source becomes when compiled against
//! `kernels/sim.h`; then it implements its trait of the op contract, computing launch
//! shapes and checking buffer lengths. The generated methods are the only places a kernel
//! is launched.
//!
//! Pointer arguments are passed as `u64` addresses: a device pointer on the GPU, a host
//! pointer in the simulation. Both are 8-byte integers in the kernel ABI.

pub(crate) mod activation;
pub(crate) mod adam;
pub(crate) mod augment;
pub(crate) mod batchnorm;
pub(crate) mod bce;
pub(crate) mod concat;
pub(crate) mod conv;
pub(crate) mod cross_entropy;
pub(crate) mod ema;
pub(crate) mod fade;
pub(crate) mod fill;
pub(crate) mod linear;
pub(crate) mod minibatch_std;
pub(crate) mod mode_seeking;
pub(crate) mod pixel_norm;
pub(crate) mod pool;
pub(crate) mod projection;
pub(crate) mod scale;
pub(crate) mod upsample;

pub(super) use fill::FillParams;

use super::tiles::{ELEM_THREADS, REDUCE_THREADS, WARP};

/// Grid and block shape of one launch.
#[derive(Clone, Copy, Debug)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: u32,
    pub shared_bytes: u32,
}

/// Device (or simulated) address of a buffer's first value.
pub type Ptr = u64;

/// What a kernel argument is to the simulation's checker: a buffer (its address) or a value.
pub trait KernelArg {
    fn device_ptr(&self) -> Option<Ptr> {
        None
    }
}

impl KernelArg for Ptr {
    fn device_ptr(&self) -> Option<Ptr> {
        Some(*self)
    }
}

impl KernelArg for i32 {}

/// Every kernel with a launch site, family by family.
pub fn launched_kernels() -> Vec<&'static str> {
    [
        activation::KERNELS,
        adam::KERNELS,
        batchnorm::KERNELS,
        bce::KERNELS,
        concat::KERNELS,
        conv::KERNELS,
        fill::KERNELS,
        linear::KERNELS,
        pool::KERNELS,
        cross_entropy::KERNELS,
        minibatch_std::KERNELS,
        augment::KERNELS,
        ema::KERNELS,
        projection::KERNELS,
        upsample::KERNELS,
        pixel_norm::KERNELS,
        fade::KERNELS,
        scale::KERNELS,
        mode_seeking::KERNELS,
    ]
    .concat()
}

/// Declares a family's kernels: `kernels! { fn name(p: Params, x: Ptr, ...); ... }` makes
/// `Exec::name(launch, p, x, ...)` for each, and `KERNELS`, their names.
macro_rules! kernels {
    ($( $(#[$doc:meta])* fn $name:ident ( $( $arg:ident : $ty:ty ),* $(,)? ); )*) => {
        /// This family's kernels, in declaration order.
        pub const KERNELS: &[&str] = &[$( stringify!($name) ),*];

        impl $crate::backend::cuda::Exec {
            $(
                $(#[$doc])*
                #[allow(clippy::too_many_arguments)]
                pub fn $name(&self, launch: $crate::backend::cuda::ops::Launch, $( $arg: $ty ),* ) -> anyhow::Result<()> {
                    self.note_launch(stringify!($name));
                    match &self.kind {
                        $crate::backend::cuda::ExecKind::Cuda(cuda) => {
                            let func = cuda.function(stringify!($name), self.mode)?;
                            let mut builder = cuda.stream.launch_builder(&func);
                            $( cudarc::driver::PushKernelArg::arg(&mut builder, &$arg); )*
                            let cfg = cudarc::driver::LaunchConfig {
                                grid_dim: launch.grid,
                                block_dim: (launch.block, 1, 1),
                                shared_mem_bytes: launch.shared_bytes,
                            };
                            // SAFETY: the argument list matches the kernel's C signature (this
                            // declaration mirrors kernels/*.cu and the sim build links against
                            // the same signature); every pointer is a live device buffer at
                            // least as long as the launch shape computed by the caller needs.
                            unsafe { builder.launch(cfg) }
                                .map_err(|e| anyhow::anyhow!("launching {}: {e:?}", stringify!($name)))?;
                            Ok(())
                        }
                        #[cfg(feature = "sim")]
                        $crate::backend::cuda::ExecKind::Sim(checks) => {
                            extern "C" {
                                fn $name( $( $arg: $ty ),* );
                            }
                            #[repr(C)]
                            struct Args { $( $arg: $ty ),* }
                            extern "C" fn trampoline(args: *mut std::ffi::c_void) {
                                // SAFETY: `args` points at the `Args` below, alive for the
                                // whole (synchronous) simulated launch.
                                let a = unsafe { &*(args as *const Args) };
                                // SAFETY: same signature as the kernel in kernels/*.cu; the
                                // pointers are host buffers sized by the caller.
                                unsafe { $name( $( a.$arg ),* ) }
                            }
                            let ptrs: Vec<$crate::backend::cuda::ops::Ptr> =
                                [$( $crate::backend::cuda::ops::KernelArg::device_ptr(&$arg) ),*].into_iter().flatten().collect();
                            let args = Args { $( $arg ),* };
                            $crate::backend::cuda::sim::launch(stringify!($name), launch, self.mode, *checks, &ptrs, trampoline, &args as *const Args as *mut std::ffi::c_void)
                        }
                    }
                }
            )*
        }
    };
}
use kernels;

/// Marks a `#[repr(C)]` parameter struct as a kernel argument. `Pod` (bytemuck) proves it
/// is plain bytes without padding, which is what the driver copies into the launch.
macro_rules! kernel_arg {
    ($($t:ty),*) => {
        $(
            const _: fn() = || {
                fn pod<T: bytemuck::Pod>() {}
                pod::<$t>();
            };
            // SAFETY: `$t` is `Pod` (checked just above): a `#[repr(C)]` struct of plain
            // numbers with no padding, laid out as build.rs declares it to the kernels.
            unsafe impl cudarc::driver::DeviceRepr for $t {}
            impl $crate::backend::cuda::ops::KernelArg for $t {}
        )*
    };
}
use kernel_arg;

pub(super) fn blocks(n: usize, per: usize) -> u32 {
    n.div_ceil(per).max(1) as u32
}

/// One thread per value.
pub(super) fn elementwise(len: usize) -> Launch {
    Launch { grid: (blocks(len, ELEM_THREADS as usize), 1, 1), block: ELEM_THREADS, shared_bytes: 0 }
}

/// Dynamic shared memory of the block reductions: one float per warp.
pub(super) const REDUCE_SHARED: u32 = REDUCE_THREADS / WARP * 4;

/// One block per channel, reducing over it.
pub(super) fn per_channel(c: usize) -> Launch {
    Launch { grid: (c.max(1) as u32, 1, 1), block: REDUCE_THREADS, shared_bytes: REDUCE_SHARED }
}

/// One warp per channel, REDUCE_THREADS / WARP channels per block.
pub(super) fn warp_per_channel(c: usize) -> Launch {
    Launch { grid: (blocks(c, (REDUCE_THREADS / WARP) as usize), 1, 1), block: REDUCE_THREADS, shared_bytes: 0 }
}

#[cfg(test)]
mod tests {
    use super::super::source;
    use super::*;

    #[test]
    fn every_kernel_has_exactly_one_launch_site() {
        let mut in_sources: Vec<&str> = source::kernels().into_iter().map(|(k, _)| k).collect();
        let mut declared: Vec<&str> = launched_kernels();
        in_sources.sort();
        declared.sort();
        let before = declared.len();
        declared.dedup();
        assert_eq!(before, declared.len(), "a kernel is declared twice in cuda/ops/");
        assert_eq!(in_sources, declared, "kernels/*.cu and the launch declarations in cuda/ops/ differ");
    }

    #[test]
    fn each_family_launches_the_kernels_of_its_own_file() {
        // ops/F.rs declares exactly the kernels of kernels/F.cu.
        for (family, declared) in [
            ("activation", activation::KERNELS),
            ("adam", adam::KERNELS),
            ("batchnorm", batchnorm::KERNELS),
            ("bce", bce::KERNELS),
            ("concat", concat::KERNELS),
            ("conv", conv::KERNELS),
            ("fill", fill::KERNELS),
            ("linear", linear::KERNELS),
            ("pool", pool::KERNELS),
            ("cross_entropy", cross_entropy::KERNELS),
            ("minibatch_std", minibatch_std::KERNELS),
            ("augment", augment::KERNELS),
            ("ema", ema::KERNELS),
            ("projection", projection::KERNELS),
            ("upsample", upsample::KERNELS),
            ("pixel_norm", pixel_norm::KERNELS),
            ("fade", fade::KERNELS),
            ("scale", scale::KERNELS),
            ("mode_seeking", mode_seeking::KERNELS),
        ] {
            let mut in_file: Vec<&str> = source::kernels().into_iter().filter(|(_, m)| *m == family).map(|(k, _)| k).collect();
            let mut declared = declared.to_vec();
            in_file.sort();
            declared.sort();
            assert_eq!(in_file, declared, "cuda/ops/{family}.rs against kernels/{family}.cu");
        }
    }
}
