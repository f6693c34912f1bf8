//! fill: the twin row (CPU twin in `backend/cpu/mod.rs`, `Core::fill`; kernel
//! `kernels/fill.cu`).

use super::twin::{compare, down, Checker, TOL_EXACT};
use crate::backend::Backend;
use anyhow::Result;

impl<B: Backend> Checker<'_, B> {
    pub fn fill(&mut self, len: usize) -> Result<()> {
        fn run<B: Backend>(be: &B, len: usize) -> Result<Vec<f32>> {
            let mut b = be.alloc(len)?;
            be.fill(&mut b, 0.375)?;
            down(be, &b, len)
        }
        self.gpu.take_recent_launches();
        let got = run(self.gpu, len)?;
        let want = run(&self.cpu, len)?;
        self.gpu.take_recent_launches();
        self.rows.push(compare(vec!["fill_f32".into()], format!("len {len}"), &want, &got, TOL_EXACT));
        Ok(())
    }
}
