//! Launch sites of kernels/pixel_norm.cu.

use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{PixelNormOps, PixelNormParams};
use anyhow::Result;

impl PixelNormOps for GpuBackend {
    fn pixel_norm_forward(&self, _p: &PixelNormParams, _x: &GpuBuf, _y: &mut GpuBuf) -> Result<()> {
        todo!()
    }
    fn pixel_norm_backward_input(&self, _p: &PixelNormParams, _x: &GpuBuf, _dy: &GpuBuf, _dx: &mut GpuBuf) -> Result<()> {
        todo!()
    }
}
