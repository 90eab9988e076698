//! The `readerd` binary: parses the command line and calls into the library.
#![forbid(unsafe_code)]

/// The daemon allocates through jemalloc rather than glibc's malloc: sled's bookkeeping of a
/// large store is a few hundred thousand small allocations made at open, and its node cache
/// churns through nodes of every size as lists read the history. jemalloc keeps both in
/// less memory (measured at a million payments in docs/BENCHMARKS.md, "Resident memory"),
/// and returns what is freed to the system without `MALLOC_ARENA_MAX` or trimming.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    readerd::cli::main()
}
