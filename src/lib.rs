//! gan-engine: a text-conditioned DCGAN for fashion products on its own small
//! deep-learning engine. See `docs/` and `../shared/docs/design.md` for the picture.

pub mod backend;
pub mod data;
pub mod eval;
pub mod fuzzing;
pub mod hash;
pub mod model;
pub mod nn;
pub mod rng;
pub mod sample;
pub mod serve;
pub mod text;
pub mod train;
pub mod verify;
