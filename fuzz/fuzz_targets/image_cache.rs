//! An image cache file (`GANCACH1`), as `prepare` and `train` open it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gan_engine::fuzzing::image_cache(data);
});
