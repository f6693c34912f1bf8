//! An image file: decoded (JPEG or PNG), checked and prepared at 32 px, padded and cropped.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gan_engine::fuzzing::image(data);
});
