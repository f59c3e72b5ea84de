//! Gives memory freed after a large transient peak back to the system. The initial pod list
//! (whole `Pod` objects, page by page), a first publish and a full resync (every record
//! encoded and read back) allocate far more than what stays; allocators keep those pages
//! mapped, which is most of the operator's RSS beyond its live data (docs/performance-history.md,
//! "Memory, all in"). After such a peak the allocator is asked, once, off the hot path, to
//! return its free pages.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often a pending release is carried out: peaks come in bursts (a list, then its first
/// publish), one release after them is enough.
const PERIOD: Duration = Duration::from_secs(5);

static PENDING: AtomicBool = AtomicBool::new(false);

/// Releases carried out so far. mimalloc keeps a heap per thread, and `mi_collect` returns the
/// free pages of the calling thread's heap only: each runtime thread collects its own when it
/// next goes idle after a release ([`on_thread_park`]).
static RELEASES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The releases this thread has followed.
    static FOLLOWED: Cell<u64> = const { Cell::new(0) };
}

/// To be called by every runtime thread when it parks (`on_thread_park`): after a release, the
/// thread returns its own heap's free pages too. Costs an atomic load otherwise.
pub fn on_thread_park() {
    let releases = RELEASES.load(Ordering::Acquire);
    if releases != FOLLOWED.get() {
        FOLLOWED.set(releases);
        collect_thread_heap();
    }
}

/// glibc arenas the process may use (glibc's default is eight per core). Memory freed into one
/// arena serves only the threads attached to it, so many arenas keep more free pages between
/// live chunks after a peak: at 10,000 published pods, two arenas with fixed 128 KiB trim and
/// mmap thresholds held 0.85–0.88 KB of RSS per pod over the idle process, against 1.02–1.59 KB
/// with glibc's defaults (docs/performance-history.md, round 9).
const GLIBC_ARENAS: i32 = 2;
/// Chunks from this size on are mapped alone and unmapped when freed, and free memory above it
/// at the top of a heap is returned: glibc's initial thresholds, kept fixed (glibc otherwise
/// raises them after a large block is freed, which keeps the next peaks' pages).
const GLIBC_THRESHOLD: i32 = 128 * 1024;

/// Sets the allocator's limits before the runtime starts its threads, unless the environment
/// already tunes glibc's malloc (`MALLOC_ARENA_MAX` and friends, `GLIBC_TUNABLES`).
pub fn configure_allocator() {
    #[cfg(all(
        not(any(feature = "mimalloc", feature = "jemalloc")),
        target_os = "linux",
        target_env = "gnu"
    ))]
    {
        if !tunes_malloc(std::env::vars_os().map(|(k, _)| k)) {
            // SAFETY: mallopt only sets glibc's malloc parameters; called before other threads.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, GLIBC_ARENAS);
                libc::mallopt(libc::M_TRIM_THRESHOLD, GLIBC_THRESHOLD);
                libc::mallopt(libc::M_MMAP_THRESHOLD, GLIBC_THRESHOLD);
            }
        }
    }
}

/// Whether one of the environment's variables (`keys`) sets glibc's malloc parameters itself.
#[cfg(all(
    not(any(feature = "mimalloc", feature = "jemalloc")),
    target_os = "linux",
    target_env = "gnu"
))]
fn tunes_malloc(mut keys: impl Iterator<Item = std::ffi::OsString>) -> bool {
    keys.any(|k| {
        let k = k.to_string_lossy();
        k.starts_with("MALLOC_") || k == "GLIBC_TUNABLES"
    })
}

/// A large transient peak just ended.
pub(super) fn after_peak() {
    PENDING.store(true, Ordering::Release);
}

/// Releases free memory after peaks, until the process ends.
pub(super) async fn run() {
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tick.tick().await;
        if PENDING.swap(false, Ordering::AcqRel) {
            tokio::task::spawn_blocking(release);
        }
    }
}

/// Asks the process's allocator to return its free pages.
fn release() {
    RELEASES.fetch_add(1, Ordering::AcqRel);
    #[cfg(feature = "mimalloc")]
    collect_thread_heap();
    #[cfg(all(
        not(any(feature = "mimalloc", feature = "jemalloc")),
        target_os = "linux",
        target_env = "gnu"
    ))]
    glibc_or_preloaded();
    tracing::debug!("returned free memory to the system after a peak");
}

/// mimalloc's collect of the calling thread's heap, when mimalloc is the allocator (built in or
/// preloaded); glibc's trim in [`release`] covers every arena already.
fn collect_thread_heap() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: mi_collect only walks mimalloc's own free lists.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(
        not(any(feature = "mimalloc", feature = "jemalloc")),
        target_os = "linux",
        target_env = "gnu"
    ))]
    if let Some(collect) = preloaded_mi_collect() {
        collect(true);
    }
}

/// mimalloc's `mi_collect`, when mimalloc is preloaded in place of glibc's malloc.
#[cfg(all(
    not(any(feature = "mimalloc", feature = "jemalloc")),
    target_os = "linux",
    target_env = "gnu"
))]
fn preloaded_mi_collect() -> Option<extern "C" fn(bool)> {
    static FOUND: std::sync::OnceLock<Option<extern "C" fn(bool)>> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; the symbol, when found, is mimalloc's
        // `void mi_collect(bool force)`.
        unsafe {
            let collect = libc::dlsym(libc::RTLD_DEFAULT, c"mi_collect".as_ptr());
            (!collect.is_null()).then(|| std::mem::transmute::<_, extern "C" fn(bool)>(collect))
        }
    })
}

/// glibc's malloc, or an allocator preloaded in its place (LD_PRELOAD) that replaces `malloc`
/// but not `malloc_trim`: mimalloc's own call when it is there.
#[cfg(all(
    not(any(feature = "mimalloc", feature = "jemalloc")),
    target_os = "linux",
    target_env = "gnu"
))]
fn glibc_or_preloaded() {
    match preloaded_mi_collect() {
        Some(collect) => collect(true),
        None => {
            // SAFETY: malloc_trim only walks glibc's arenas.
            unsafe { libc::malloc_trim(0) };
            log_glibc_heap();
        }
    }
}

/// What glibc's arenas hold after the trim: bytes in use (the live data), bytes free but kept
/// (freed chunks between live ones, which no trim can return), and mmapped chunks. With the
/// RSS this tells live data from allocator retention (docs/performance-history.md, "Memory, all in").
#[cfg(all(
    not(any(feature = "mimalloc", feature = "jemalloc")),
    target_os = "linux",
    target_env = "gnu"
))]
fn log_glibc_heap() {
    // SAFETY: mallinfo2 only reads glibc's arena statistics.
    let m = unsafe { libc::mallinfo2() };
    let in_use = i64::try_from(m.uordblks).unwrap_or(i64::MAX);
    crate::metrics::get().heap_in_use_bytes.set(in_use);
    tracing::info!(
        in_use_bytes = m.uordblks,
        free_kept_bytes = m.fordblks,
        mmapped_bytes = m.hblkhd,
        arena_bytes = m.arena,
        "heap after returning free memory"
    );
}

#[cfg(test)]
#[cfg(all(
    not(any(feature = "mimalloc", feature = "jemalloc")),
    target_os = "linux",
    target_env = "gnu"
))]
mod tests {
    use super::*;

    fn tuned(keys: &[&str]) -> bool {
        tunes_malloc(keys.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn the_environment_tuning_malloc_turns_the_operators_settings_off() {
        assert!(!tuned(&["PATH", "HOME", "PODKEEPER_ZK"]));
        assert!(tuned(&["PATH", "MALLOC_ARENA_MAX"]));
        assert!(tuned(&["GLIBC_TUNABLES"]));
        assert!(!tuned(&["LD_PRELOAD", "GLIBC_TUNABLES_X"]));
    }
}
