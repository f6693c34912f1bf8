//! Timing GPU work with CUDA events (cuEventRecord on the backend's stream before and after,
//! cuEventElapsedTime between them), outside the op contract: `gan-engine bench` knows the
//! concrete backend and asks for it. The simulation has no driver and runs every launch to
//! completion before returning, so there the host clock already measures the kernels, and no
//! event timer is offered.

use super::{ExecKind, GpuBackend};
use anyhow::{anyhow, Result};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaStream};
use std::sync::Arc;

/// Two timing events on the GPU's stream, reused for every interval.
pub struct EventTimer {
    stream: Arc<CudaStream>,
    start: CudaEvent,
    end: CudaEvent,
}

impl EventTimer {
    /// Marks the start: everything queued on the stream after this call is inside the interval.
    pub fn start(&self) -> Result<()> {
        self.start.record(&self.stream).map_err(|e| anyhow!("recording the start event: {e:?}"))
    }

    /// Marks the end, waits for it, and returns the seconds between the two marks on the GPU's
    /// own clock (about half a microsecond of resolution). Gaps in which the GPU waited for the
    /// host to queue more work are inside the interval.
    pub fn stop(&self) -> Result<f64> {
        self.end.record(&self.stream).map_err(|e| anyhow!("recording the end event: {e:?}"))?;
        let ms = self.start.elapsed_ms(&self.end).map_err(|e| anyhow!("reading the event times: {e:?}"))?;
        Ok(ms as f64 / 1e3)
    }
}

impl GpuBackend {
    /// An event timer on the GPU's stream; `None` in the simulation (time it on the host clock).
    pub fn event_timer(&self) -> Result<Option<EventTimer>> {
        match &self.exec.kind {
            ExecKind::Cuda(c) => {
                // Timing events (cudarc's default disables timing).
                let event = || c.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| anyhow!("creating a CUDA event: {e:?}"));
                Ok(Some(EventTimer { stream: c.stream.clone(), start: event()?, end: event()? }))
            }
            #[cfg(feature = "sim")]
            ExecKind::Sim(_) => Ok(None),
        }
    }
}
