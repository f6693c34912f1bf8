//! Launch sites of kernels/upsample.cu.

use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{UpsampleOps, UpsampleParams};
use anyhow::Result;

impl UpsampleOps for GpuBackend {
    fn upsample_nearest_forward(&self, _p: &UpsampleParams, _x: &GpuBuf, _y: &mut GpuBuf) -> Result<()> {
        todo!()
    }
    fn upsample_nearest_backward_input(&self, _p: &UpsampleParams, _dy: &GpuBuf, _dx: &mut GpuBuf) -> Result<()> {
        todo!()
    }
}
