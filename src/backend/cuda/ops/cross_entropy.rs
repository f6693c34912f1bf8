//! Launch sites of kernels/cross_entropy.cu: the forwards are one block (a fixed order of
//! additions), the backwards one thread per row (softmax) or per element (sigmoid).

use super::{elementwise, kernel_arg, kernels, Launch, Ptr, REDUCE_SHARED};
use crate::backend::cuda::tiles::REDUCE_THREADS;
use crate::backend::cuda::{GpuBackend, GpuBuf};
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

impl CrossEntropyOps for GpuBackend {
    fn softmax_cross_entropy_forward(&self, p: &CrossEntropyParams, logits: &GpuBuf, targets: &GpuBuf, out: &mut GpuBuf) -> Result<()> {
        self.timed(
            "softmax_cross_entropy_forward",
            || p.work(1.0),
            || {
                p.check_forward(self, true, logits, targets, out)?;
                self.exec.softmax_cross_entropy_forward_f32(ONE_BLOCK, *p, logits.ptr, targets.ptr, out.ptr)
            },
        )
    }
    fn softmax_cross_entropy_backward_input(&self, p: &CrossEntropyParams, logits: &GpuBuf, targets: &GpuBuf, dlogits: &mut GpuBuf) -> Result<()> {
        self.timed(
            "softmax_cross_entropy_backward_input",
            || p.work(2.0),
            || {
                p.check_backward_input(self, true, logits, targets, dlogits)?;
                self.exec.softmax_cross_entropy_backward_input_f32(elementwise(p.n as usize), *p, logits.ptr, targets.ptr, dlogits.ptr)
            },
        )
    }
    fn sigmoid_cross_entropy_forward(&self, p: &CrossEntropyParams, logits: &GpuBuf, targets: &GpuBuf, out: &mut GpuBuf) -> Result<()> {
        self.timed(
            "sigmoid_cross_entropy_forward",
            || p.work(2.0),
            || {
                p.check_forward(self, false, logits, targets, out)?;
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
                p.check_backward_input(self, false, logits, targets, dlogits)?;
                self.exec.sigmoid_cross_entropy_backward_input_f32(elementwise(count), *p, logits.ptr, targets.ptr, dlogits.ptr)
            },
        )
    }
}
