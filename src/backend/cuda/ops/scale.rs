//! Launch sites of kernels/scale.cu.

use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{ScaleOps, ScaleParams};
use anyhow::Result;

impl ScaleOps for GpuBackend {
    fn scale_forward(&self, _p: &ScaleParams, _x: &GpuBuf, _y: &mut GpuBuf) -> Result<()> {
        todo!()
    }
}
