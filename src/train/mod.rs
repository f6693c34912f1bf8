//! Training: the GAN iteration, checkpoints, and (in the CLI) the loop around them.

pub mod augment;
pub mod checkpoint;
pub mod ema;
pub mod gan;
pub mod grow;
pub mod lock;

pub use ema::{BnStats, Drawing, EmaSchedule};
pub use gan::{synthetic_batch, Gan, Hyper, StepInputs, StepStats};
pub mod report;
pub mod run;
