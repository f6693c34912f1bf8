//! A Kaggle `styles.csv`, with an image folder holding 0.jpg to 15.jpg.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gan_engine::fuzzing::styles_csv(data);
});
