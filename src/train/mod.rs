//! Training: the GAN iteration, checkpoints, and (in the CLI) the loop around them.

pub mod augment;
pub mod checkpoint;
pub mod gan;
pub mod lock;

pub use gan::{synthetic_batch, Gan, Hyper, StepInputs, StepStats};
pub mod report;
pub mod run;
