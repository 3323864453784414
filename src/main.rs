use std::process::ExitCode;

fn main() -> ExitCode {
    // One malloc arena for every thread: glibc's default (one per thread, up to 8 per
    // core) keeps freed memory spread over arenas, which at 10,000 workloads was a
    // fifth of the controller's resident memory (`cargo bench --bench controller`).
    // Set before any thread starts.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; no thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let cli = poolwarden::cli::parse();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(poolwarden::cli::run(cli)),
        Err(e) => {
            eprintln!("starting the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}
