//! Gives memory freed after a large transient peak back to the system. The initial pod list
//! (whole `Pod` objects, page by page), a first publish and a full resync (every record
//! encoded and read back) allocate far more than what stays; allocators keep those pages
//! mapped, which is most of the operator's RSS beyond its live data (docs/PERFORMANCE.md,
//! "Memory, all in"). After such a peak the allocator is asked, once, off the hot path, to
//! return its free pages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a pending release is carried out: peaks come in bursts (a list, then its first
/// publish), one release after them is enough.
const PERIOD: Duration = Duration::from_secs(5);

static PENDING: AtomicBool = AtomicBool::new(false);

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
    glibc_or_preloaded();
    tracing::debug!("returned free memory to the system after a peak");
}

/// glibc's malloc, or an allocator preloaded in its place (LD_PRELOAD) that replaces `malloc`
/// but not `malloc_trim`: mimalloc's own call when it is there.
#[cfg(all(
    not(any(feature = "mimalloc", feature = "jemalloc")),
    target_os = "linux",
    target_env = "gnu"
))]
fn glibc_or_preloaded() {
    // SAFETY: dlsym with a NUL-terminated name; the symbol, when found, is mimalloc's
    // `void mi_collect(bool force)`. malloc_trim only walks glibc's arenas.
    unsafe {
        let collect = libc::dlsym(libc::RTLD_DEFAULT, c"mi_collect".as_ptr());
        if collect.is_null() {
            libc::malloc_trim(0);
            log_glibc_heap();
        } else {
            let collect: extern "C" fn(bool) = std::mem::transmute(collect);
            collect(true);
        }
    }
}

/// What glibc's arenas hold after the trim: bytes in use (the live data), bytes free but kept
/// (freed chunks between live ones, which no trim can return), and mmapped chunks. With the
/// RSS this tells live data from allocator retention (docs/PERFORMANCE.md, "Memory, all in").
#[cfg(all(
    not(any(feature = "mimalloc", feature = "jemalloc")),
    target_os = "linux",
    target_env = "gnu"
))]
fn log_glibc_heap() {
    // SAFETY: mallinfo2 only reads glibc's arena statistics.
    let m = unsafe { libc::mallinfo2() };
    tracing::info!(
        in_use_bytes = m.uordblks,
        free_kept_bytes = m.fordblks,
        mmapped_bytes = m.hblkhd,
        arena_bytes = m.arena,
        "heap after returning free memory"
    );
}
