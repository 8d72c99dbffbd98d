//! Host-memory allocator settings for tensor workloads.
//!
//! glibc serves large blocks (above a threshold that starts at 128 KiB and adapts) with a fresh
//! `mmap` and returns them with `munmap`, and trims the heap's top when it frees. A training or
//! prefill step allocates and frees the same large tensors every step, so each step paid page
//! faults and kernel zeroing for memory it had just given back: on the 2-core machine `perf`
//! showed ~10 % of a CPU training step in page-fault handling and memset. Raising both thresholds
//! keeps that memory in the heap for reuse. Resident memory then stays at the high-water mark of
//! a step, which the next step reuses.

/// Keep large freed blocks in the heap (glibc only). Call once, early. Returns whether glibc took
/// both settings (false off glibc).
pub fn keep_freed_memory_for_reuse() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // why not M_MMAP_THRESHOLD: mallopt caps it at 32 MiB on 64-bit, and the (b·t, vocab)
        // logits of a training step are larger; M_MMAP_MAX = 0 serves every size from the heap.
        const TRIM_THRESHOLD: libc::c_int = 1 << 30;
        // SAFETY: mallopt only changes allocator parameters; called before other threads start.
        let (mmap, trim) = unsafe {
            (
                libc::mallopt(libc::M_MMAP_MAX, 0),
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            )
        };
        mmap == 1 && trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn glibc_takes_the_settings_and_large_blocks_still_work() {
        assert!(super::keep_freed_memory_for_reuse());
        // A block above the old mmap threshold, written and read back, then again after a free.
        for _ in 0..2 {
            let mut big = vec![0u8; 64 << 20];
            big[(64 << 20) - 1] = 7;
            assert_eq!(big.iter().map(|&b| u64::from(b)).sum::<u64>(), 7);
        }
    }
}
