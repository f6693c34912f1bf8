//! Launch sites of kernels/cross_entropy.cu: the forwards are one block (a fixed order of
//! additions), the backwards one thread per row (softmax) or per element (sigmoid).

use super::{elementwise, kernel_arg, kernels, Launch, Ptr, REDUCE_SHARED};
use crate::backend::cuda::tiles::REDUCE_THREADS;
use crate::backend::cuda::{check, GpuBackend, GpuBuf};
use crate::backend::{Core, CrossEntropyOps, CrossEntropyParams};
use anyhow::Result;

kernel_arg!(CrossEntropyParams);

kernels! {
    fn softmax_cross_entropy_forward_f32(p: CrossEntropyParams, logits: Ptr, targets: Ptr, out: Ptr);
    fn softmax_cross_entropy_backward_input_f32(p: CrossEntropyParams, logits: Ptr, targets: Ptr, dlogits: Ptr);
    fn sigmoid_cross_entropy_forward_f32(p: CrossEntropyParams, logits: Ptr, targets: Ptr, out: Ptr);
    fn sigmoid_cross_entropy_backward_input_f32(p: CrossEntropyParams, logits: Ptr, targets: Ptr, dlogits: Ptr);
}

const ONE_BLOCK: Launch = Launch { grid: (1, 1, 1), block: REDUCE_THREADS, shared_bytes: REDUCE_SHARED };

/// Checks the head and the buffers of a pass whose targets hold `targets_len` values.
fn checks(p: &CrossEntropyParams, logits: &GpuBuf, targets: &GpuBuf, targets_len: usize, out: (&str, &GpuBuf, usize)) -> Result<()> {
    p.check()?;
    check("cross-entropy logits", logits, p.logits_len())?;
    check("cross-entropy targets", targets, targets_len)?;
    check(out.0, out.1, out.2)
}

impl CrossEntropyOps for GpuBackend {
    fn softmax_cross_entropy_forward(&self, p: &CrossEntropyParams, logits: &GpuBuf, targets: &GpuBuf, out: &mut GpuBuf) -> Result<()> {
        self.timed(
            "softmax_cross_entropy_forward",
            || p.work(1.0),
            || {
                checks(p, logits, targets, p.n as usize, ("cross-entropy out", out, 2))?;
                self.exec.softmax_cross_entropy_forward_f32(ONE_BLOCK, *p, logits.ptr, targets.ptr, out.ptr)
            },
        )
    }
    fn softmax_cross_entropy_backward_input(&self, p: &CrossEntropyParams, logits: &GpuBuf, targets: &GpuBuf, dlogits: &mut GpuBuf) -> Result<()> {
        self.timed(
            "softmax_cross_entropy_backward_input",
            || p.work(2.0),
            || {
                checks(p, logits, targets, p.n as usize, ("cross-entropy dlogits", dlogits, p.logits_len()))?;
                self.exec.softmax_cross_entropy_backward_input_f32(elementwise(p.n as usize), *p, logits.ptr, targets.ptr, dlogits.ptr)
            },
        )
    }
    fn sigmoid_cross_entropy_forward(&self, p: &CrossEntropyParams, logits: &GpuBuf, targets: &GpuBuf, out: &mut GpuBuf) -> Result<()> {
        self.timed(
            "sigmoid_cross_entropy_forward",
            || p.work(2.0),
            || {
                checks(p, logits, targets, (p.n * p.classes) as usize, ("cross-entropy out", out, 2))?;
                self.exec.sigmoid_cross_entropy_forward_f32(ONE_BLOCK, *p, logits.ptr, targets.ptr, out.ptr)
            },
        )
    }
    fn sigmoid_cross_entropy_backward_input(&self, p: &CrossEntropyParams, logits: &GpuBuf, targets: &GpuBuf, dlogits: &mut GpuBuf) -> Result<()> {
        self.timed(
            "sigmoid_cross_entropy_backward_input",
            || p.work(3.0),
            || {
                let count = (p.n * p.classes) as usize;
                checks(p, logits, targets, count, ("cross-entropy dlogits", dlogits, p.logits_len()))?;
                self.exec.sigmoid_cross_entropy_backward_input_f32(elementwise(count), *p, logits.ptr, targets.ptr, dlogits.ptr)
            },
        )
    }
}
