//! Device discovery without a GPU: `--device cuda` must fail with one clear line and exit
//! code 2, `--device auto` must fall back to the CPU, and `--device sim` must say how to
//! get it when the binary was built without the `sim` feature. On a machine where the GPU
//! does open, auto must take it, and the `--device cuda` error test says it does not apply.

use gan_engine::backend::cuda::GpuBackend;
use gan_engine::backend::device::{self, Opened};
use std::process::Command;

fn gpu_available() -> bool {
    GpuBackend::cuda(None).is_ok()
}

#[test]
fn cuda_without_a_gpu_is_one_line_and_exit_code_2() {
    if gpu_available() {
        println!("skipped: a GPU opened on this machine, so the no-GPU behaviour is not testable here");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_gan-engine")).args(["selftest", "--device", "cuda"]).output().expect("running gan-engine");
    assert_eq!(out.status.code(), Some(2), "exit status {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains("--device cpu"), "the message should say what to do instead: {stderr}");
    assert!(out.stdout.is_empty(), "nothing should run: {}", String::from_utf8_lossy(&out.stdout));
}

/// auto takes the GPU exactly when `GpuBackend::cuda()` opens one, and the CPU otherwise.
#[test]
fn auto_falls_back_to_cpu_without_a_gpu() {
    match (gpu_available(), device::open("auto", None).expect("auto never fails")) {
        (false, Opened::Cpu(_)) | (true, Opened::Gpu(_)) => {}
        (false, Opened::Gpu(_)) => panic!("auto opened a GPU that GpuBackend::cuda() could not"),
        (true, Opened::Cpu(_)) => panic!("a GPU opens on this machine, but auto fell back to the CPU"),
    }
}

#[test]
fn unknown_device_names_the_choices() {
    let err = device::open("tpu", None).err().expect("tpu is not a device").to_string();
    // `sim` is a choice only in builds that can run it (as `--help` lists it).
    let choices = if cfg!(feature = "sim") { "cpu, cuda, sim or auto" } else { "cpu, cuda or auto" };
    assert!(err.contains(choices), "{err}");
}

#[test]
fn sim_is_available_exactly_with_the_feature() {
    let r = GpuBackend::sim(gan_engine::backend::cuda::GemmMode::TF32X3);
    if cfg!(feature = "sim") {
        assert!(r.is_ok());
    } else {
        let err = r.err().expect("sim needs the feature").to_string();
        assert!(err.contains("--features sim"), "{err}");
    }
}
