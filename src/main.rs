// jemalloc, not glibc's malloc: on the controller bench (10k Deployments × 3 pods,
// `cargo bench --bench controller -- --deployments 10000`) the CPU of a
// steady-state pass fell from 24 to 9.5 ms and the CPU to sync from 5.9 to 4.8 s.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// jemalloc's options, read when it starts (C's `const char *malloc_conf`, hence a thin
// pointer to the first byte): one arena for every thread, as for glibc below. On the
// same bench the peak RSS fell from 104–109 to 97–98.5 MiB; the time to sync rose
// from 4.2–4.4 to 4.3–5.5 s (noisy), a steady-state pass from 7.9–8.2 to 9.1–9.7 ms.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
#[allow(non_upper_case_globals)]
static malloc_conf: &u8 = &b"narenas:1\0"[0];

use std::process::ExitCode;

fn main() -> ExitCode {
    // Built without jemalloc (to profile the heap): one glibc malloc arena for every
    // thread. glibc's default (one per thread, up to 8 per core) keeps freed memory
    // spread over arenas, which at 10,000 workloads was a fifth of the controller's
    // resident memory (`cargo bench --bench controller`). Set before any thread starts.
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
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
