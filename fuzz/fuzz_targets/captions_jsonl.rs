//! A `captions.jsonl`, in a folder where every image path exists.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gan_engine::fuzzing::captions_jsonl(data);
});
