//! A checkpoint file: the safetensors layout, the metadata document and every check made on
//! loading (`gan-engine sample` and `train --resume` read exactly this).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gan_engine::fuzzing::checkpoint(data);
});
