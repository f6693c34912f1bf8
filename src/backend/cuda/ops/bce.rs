//! Launch sites of kernels/bce.cu: the forward is one block (a fixed order of additions),
//! the backward one thread per logit.

use super::{elementwise, kernel_arg, kernels, Launch, Ptr, REDUCE_SHARED};
use crate::backend::cuda::tiles::REDUCE_THREADS;
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{BceOps, BceParams, Core};
use anyhow::Result;

kernel_arg!(BceParams);

kernels! {
    fn bce_with_logits_forward_f32(p: BceParams, logits: Ptr, out: Ptr);
    fn bce_with_logits_backward_input_f32(p: BceParams, logits: Ptr, dlogits: Ptr);
}

impl BceOps for GpuBackend {
    fn bce_with_logits_forward(&self, p: &BceParams, logits: &GpuBuf, out: &mut GpuBuf) -> Result<()> {
        self.timed(
            "bce_with_logits_forward",
            || p.work(1.0),
            || {
                p.check_forward(self, logits, out)?;
                let l = Launch { grid: (1, 1, 1), block: REDUCE_THREADS, shared_bytes: REDUCE_SHARED };
                self.exec.bce_with_logits_forward_f32(l, *p, logits.ptr, out.ptr)
            },
        )
    }
    fn bce_with_logits_backward_input(&self, p: &BceParams, logits: &GpuBuf, dlogits: &mut GpuBuf) -> Result<()> {
        self.timed(
            "bce_with_logits_backward_input",
            || p.work(2.0),
            || {
                p.check_backward_input(self, logits, dlogits)?;
                self.exec.bce_with_logits_backward_input_f32(elementwise(p.n as usize), *p, logits.ptr, dlogits.ptr)
            },
        )
    }
}
