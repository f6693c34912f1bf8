//! One declaration per kernel, and from it both ways to launch it: through the CUDA
//! driver (cudarc, PTX from NVRTC) and, with the `sim` feature, as the plain C function
//! the same `.cu` source becomes when compiled against `kernels/sim.h`. The methods
//! generated here are the only places a kernel is launched; the backend's op methods
//! (mod.rs) compute the launch shape and call them.
//!
//! Pointer arguments are passed as `u64` addresses: a device pointer on the GPU, a host
//! pointer in the simulation. Both are 8-byte integers in the kernel ABI.

use super::{Exec, ExecKind};
use crate::backend::{ActParams, AdamParams, BatchNormParams, BceParams, ConcatParams, ConvParams, LinearParams};
use anyhow::Result;

/// `Backend::fill`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FillParams {
    pub len: i32,
    pub value: f32,
}

/// The split-K reduction of a weight gradient.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SplitParams {
    pub len: i32,
    pub splits: i32,
}

/// Grid and block shape of one launch.
#[derive(Clone, Copy, Debug)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: u32,
    pub shared_bytes: u32,
}

/// Device (or simulated) address of a buffer's first value.
pub type Ptr = u64;

macro_rules! kernels {
    ($( $(#[$doc:meta])* fn $name:ident ( $( $arg:ident : $ty:ty ),* $(,)? ); )*) => {
        /// Every kernel with a launch site, in declaration order.
        pub const LAUNCHED_KERNELS: &[&str] = &[$( stringify!($name) ),*];

        impl Exec {
            $(
                $(#[$doc])*
                #[allow(clippy::too_many_arguments)]
                pub fn $name(&self, launch: Launch, $( $arg: $ty ),* ) -> Result<()> {
                    self.note_launch(stringify!($name));
                    match &self.kind {
                        ExecKind::Cuda(cuda) => {
                            let func = cuda.function(stringify!($name))?;
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
                        ExecKind::Sim => {
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
                            let args = Args { $( $arg ),* };
                            super::sim::launch(stringify!($name), launch, self.mode, trampoline, &args as *const Args as *mut std::ffi::c_void)
                        }
                    }
                }
            )*
        }
    };
}

kernels! {
    fn conv2d_forward_f32(p: ConvParams, x: Ptr, w: Ptr, bias: Ptr, out: Ptr, k_chunk: i32);
    fn conv2d_backward_input_f32(p: ConvParams, dy: Ptr, w: Ptr, dx: Ptr);
    fn conv2d_backward_input_thin_f32(p: ConvParams, dy: Ptr, w: Ptr, dx: Ptr);
    fn conv2d_backward_params_f32(p: ConvParams, x: Ptr, dy: Ptr, out: Ptr, k_chunk: i32, accumulate: i32);
    fn conv_transpose2d_forward_f32(p: ConvParams, x: Ptr, w: Ptr, bias: Ptr, y: Ptr);
    fn conv_transpose2d_forward_thin_f32(p: ConvParams, x: Ptr, w: Ptr, bias: Ptr, y: Ptr);
    fn conv_transpose2d_backward_input_f32(p: ConvParams, dy: Ptr, w: Ptr, dx: Ptr);
    fn conv_transpose2d_backward_params_f32(p: ConvParams, x: Ptr, dy: Ptr, out: Ptr, k_chunk: i32, accumulate: i32);
    fn gemm_splitk_reduce_f32(p: SplitParams, partial: Ptr, grad: Ptr);
    fn bias_backward_params_f32(p: BatchNormParams, dy: Ptr, db: Ptr);
    fn batchnorm2d_stats_f32(p: BatchNormParams, slice_len: i32, x: Ptr, part: Ptr);
    fn batchnorm2d_forward_train_f32(p: BatchNormParams, slice_len: i32, slices: i32, part: Ptr, running_mean: Ptr, running_var: Ptr, mean: Ptr, invstd: Ptr);
    fn batchnorm2d_normalize_f32(p: BatchNormParams, slice_len: i32, x: Ptr, gamma: Ptr, beta: Ptr, mean: Ptr, invstd: Ptr, y: Ptr);
    fn batchnorm2d_forward_infer_f32(p: BatchNormParams, x: Ptr, gamma: Ptr, beta: Ptr, running_mean: Ptr, running_var: Ptr, y: Ptr);
    fn batchnorm2d_grad_sums_f32(p: BatchNormParams, slice_len: i32, x: Ptr, y: Ptr, dy: Ptr, mean: Ptr, invstd: Ptr, part: Ptr);
    fn batchnorm2d_backward_input_f32(p: BatchNormParams, slices: i32, part: Ptr, sums: Ptr);
    fn batchnorm2d_backward_apply_f32(p: BatchNormParams, slice_len: i32, x: Ptr, y: Ptr, dy: Ptr, gamma: Ptr, mean: Ptr, invstd: Ptr, sums: Ptr, dx: Ptr);
    fn batchnorm2d_backward_params_f32(p: BatchNormParams, sums: Ptr, dgamma: Ptr, dbeta: Ptr);
    fn relu_forward_f32(p: ActParams, x: Ptr, y: Ptr);
    fn relu_backward_input_f32(p: ActParams, y: Ptr, dy: Ptr, dx: Ptr);
    fn leaky_relu_forward_f32(p: ActParams, x: Ptr, y: Ptr);
    fn leaky_relu_backward_input_f32(p: ActParams, y: Ptr, dy: Ptr, dx: Ptr);
    fn tanh_forward_f32(p: ActParams, x: Ptr, y: Ptr);
    fn tanh_backward_input_f32(p: ActParams, y: Ptr, dy: Ptr, dx: Ptr);
    fn concat_tile_forward_f32(p: ConcatParams, a: Ptr, b: Ptr, y: Ptr);
    fn concat_tile_backward_input_f32(p: ConcatParams, dy: Ptr, da: Ptr, db: Ptr);
    fn fill_f32(p: FillParams, buf: Ptr);
    fn linear_forward_f32(p: LinearParams, x: Ptr, w: Ptr, b: Ptr, y: Ptr);
    fn linear_backward_input_f32(p: LinearParams, dy: Ptr, w: Ptr, dx: Ptr);
    fn linear_backward_params_f32(p: LinearParams, x: Ptr, dy: Ptr, dw: Ptr);
    fn bce_with_logits_forward_f32(p: BceParams, logits: Ptr, out: Ptr);
    fn bce_with_logits_backward_input_f32(p: BceParams, logits: Ptr, dlogits: Ptr);
    fn adam_step_f32(p: AdamParams, param: Ptr, grad: Ptr, m: Ptr, v: Ptr);
}

// SAFETY: plain #[repr(C)] structs of i32/f32, declared identically in kernels/common.cuh.
unsafe impl cudarc::driver::DeviceRepr for ConvParams {}
// SAFETY: as above.
unsafe impl cudarc::driver::DeviceRepr for BatchNormParams {}
// SAFETY: as above.
unsafe impl cudarc::driver::DeviceRepr for ActParams {}
// SAFETY: as above.
unsafe impl cudarc::driver::DeviceRepr for LinearParams {}
// SAFETY: as above.
unsafe impl cudarc::driver::DeviceRepr for ConcatParams {}
// SAFETY: as above.
unsafe impl cudarc::driver::DeviceRepr for BceParams {}
// SAFETY: as above.
unsafe impl cudarc::driver::DeviceRepr for AdamParams {}
// SAFETY: as above.
unsafe impl cudarc::driver::DeviceRepr for FillParams {}
// SAFETY: as above.
unsafe impl cudarc::driver::DeviceRepr for SplitParams {}
