//! A fork-join pool for the many tiny parallel products of a decode step, whose workers spin
//! between jobs instead of sleeping.
//!
//! One decoded token runs ~200 matrix × vector products of 0.1–1 ms each. rayon puts its workers
//! to sleep between them, and waking one (a futex round trip) costs tens of microseconds per
//! product, so two threads were no faster than one. Here a worker that finished a job polls for
//! the next one (yielding its core every few polls, so that other threads still run on a busy
//! machine) and parks only after [`SPIN_FOR`] without work. Jobs are split into tasks taken from
//! a shared counter, so a worker that runs late (shared cores) takes fewer of them.
//!
//! Threads: `$CARAMBA_THREADS`, else `$RAYON_NUM_THREADS`, else the available parallelism. One job
//! runs at a time: a caller that finds the pool busy (another thread's job) runs its tasks itself.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker keeps polling before it parks.
const SPIN_FOR: Duration = Duration::from_millis(2);

/// Polls between yields of the core.
const POLLS_PER_YIELD: u32 = 64;

type Task<'a> = dyn Fn(usize) + Sync + 'a;

struct Shared {
    /// Bumped once per job; workers run a job when they see a new value.
    epoch: AtomicU64,
    /// The current job. Written by the caller before bumping `epoch` (release), read by workers
    /// after seeing it (acquire); valid until `active` drops to zero.
    job: UnsafeCell<Option<*const Task<'static>>>,
    n_tasks: AtomicUsize,
    next_task: AtomicUsize,
    /// Workers that have not finished the current job.
    active: AtomicUsize,
    panicked: AtomicBool,
    sleepers: Mutex<usize>,
    wake: Condvar,
}

// SAFETY: `job` is only written by the caller holding `Pool::busy` while no worker reads it
// (`active == 0`), and the pointee is `Sync`; everything else is atomics and locks.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced during the job it belongs to.
unsafe impl Send for Shared {}

struct Pool {
    workers: usize,
    busy: Mutex<()>,
    shared: Arc<Shared>,
}

/// Threads a parallel job uses, the calling thread included.
pub fn threads() -> usize {
    pool().map_or(1, |p| p.workers + 1)
}

/// Run `task(i)` for every `i < n_tasks`, spread over the pool's threads and the calling one;
/// returns when all have run. Panics (after all tasks ended) if a task panicked on a worker.
pub fn for_each_task(n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
    let Some(pool) = pool().filter(|_| n_tasks > 1) else {
        (0..n_tasks).for_each(task);
        return;
    };
    let Ok(_guard) = pool.busy.try_lock() else {
        (0..n_tasks).for_each(task);
        return;
    };
    let s = &pool.shared;
    // SAFETY: the lifetime is erased only for the duration of this call: the workers stop using
    // the pointer before `active` reaches zero, which is awaited below before returning.
    let erased: *const Task<'static> = unsafe { std::mem::transmute(task as *const Task<'_>) };
    // SAFETY: no worker reads `job` now (`active` is zero between jobs) and we hold `busy`.
    unsafe { *s.job.get() = Some(erased) };
    s.n_tasks.store(n_tasks, Ordering::Relaxed);
    s.next_task.store(0, Ordering::Relaxed);
    s.active.store(pool.workers, Ordering::Relaxed);
    s.epoch.fetch_add(1, Ordering::Release);
    {
        let sleepers = s.sleepers.lock().unwrap_or_else(|e| e.into_inner());
        if *sleepers > 0 {
            s.wake.notify_all();
        }
    }
    run_tasks(s, task);
    let mut polls = 0u32;
    while s.active.load(Ordering::Acquire) != 0 {
        polls += 1;
        if polls.is_multiple_of(POLLS_PER_YIELD) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    // SAFETY: every worker has finished with the job.
    unsafe { *s.job.get() = None };
    if s.panicked.swap(false, Ordering::Relaxed) {
        panic!("a task of a parallel product panicked on a worker thread");
    }
}

/// `task(i, chunk)` for each `chunk_len`-long chunk of `data` (the last may be shorter), in
/// parallel as [`for_each_task`].
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    chunk_len: usize,
    task: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    struct Base<T>(*mut T);
    // SAFETY: tasks touch disjoint chunks of the slice (below).
    unsafe impl<T: Send> Sync for Base<T> {}
    impl<T> Base<T> {
        // why: a method, so that closures capture the whole (Sync) wrapper, not its raw field.
        fn at(&self, i: usize) -> *mut T {
            self.0.wrapping_add(i)
        }
    }
    let chunk_len = chunk_len.max(1);
    let len = data.len();
    let base = Base(data.as_mut_ptr());
    for_each_task(len.div_ceil(chunk_len), &|i| {
        let start = i * chunk_len;
        let n = chunk_len.min(len - start);
        // SAFETY: each task index is run once, so chunks [start, start + n) are disjoint and lie
        // inside `data`, which is exclusively borrowed for this call.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.at(start), n) };
        task(i, chunk);
    });
}

/// Run `f` on a thread of rayon's global pool (at once when already on one) and return its
/// result.
///
/// why: candle's CPU ops (softmax, RMSNorm, GEMM) hand their work to rayon's pool; called from
/// any other thread, each op is a round trip to a pool thread and back (tens of µs, ~100 per
/// decoded token), while on a pool thread a small op simply runs in place.
pub fn on_rayon_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::join(f, || ()).0
    }
}

fn run_tasks(s: &Shared, task: &Task<'_>) {
    let n = s.n_tasks.load(Ordering::Relaxed);
    loop {
        let i = s.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        task(i);
    }
}

fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = ["CARAMBA_THREADS", "RAYON_NUM_THREADS"]
            .iter()
            .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok().filter(|&n| n > 0))
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads <= 1 {
            return None;
        }
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            n_tasks: AtomicUsize::new(0),
            next_task: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
        });
        let mut started = 0;
        for i in 0..threads - 1 {
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("caramba-spin-{i}"))
                .spawn(move || worker(&s));
            // why: a pool with fewer workers (or none) is still correct, only slower.
            if spawned.is_ok() {
                started += 1;
            }
        }
        (started > 0).then(|| Pool {
            workers: started,
            busy: Mutex::new(()),
            shared,
        })
    })
    .as_ref()
}

fn worker(s: &Shared) {
    // why: the epoch the pool started with, not the current one: a job may already be waiting.
    let mut seen = 0;
    loop {
        let mut idle_since = Instant::now();
        let mut polls = 0u32;
        loop {
            let now = s.epoch.load(Ordering::Acquire);
            if now != seen {
                seen = now;
                break;
            }
            polls += 1;
            if polls.is_multiple_of(POLLS_PER_YIELD) {
                std::thread::yield_now();
                if idle_since.elapsed() > SPIN_FOR {
                    let mut sleepers = s.sleepers.lock().unwrap_or_else(|e| e.into_inner());
                    *sleepers += 1;
                    while s.epoch.load(Ordering::Acquire) == seen {
                        sleepers = s.wake.wait(sleepers).unwrap_or_else(|e| e.into_inner());
                    }
                    *sleepers -= 1;
                    idle_since = Instant::now();
                }
            } else {
                std::hint::spin_loop();
            }
        }
        // SAFETY: the caller published `job` before bumping `epoch` and keeps it alive until this
        // worker decrements `active`.
        if let Some(job) = unsafe { *s.job.get() } {
            // SAFETY: see above.
            let task = unsafe { &*job };
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_tasks(s, task)));
            if ran.is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.active.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for n in [0, 1, 2, 7, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            for_each_task(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n = {n}");
        }
    }

    #[test]
    fn concurrent_callers_each_get_all_their_tasks() {
        let handles: Vec<_> = (0..4)
            .map(|c| {
                std::thread::spawn(move || {
                    for round in 0..200 {
                        let n = 3 + (c + round) % 40;
                        let sum = AtomicUsize::new(0);
                        for_each_task(n, &|i| {
                            sum.fetch_add(i + 1, Ordering::Relaxed);
                        });
                        assert_eq!(sum.load(Ordering::Relaxed), n * (n + 1) / 2);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("caller thread");
        }
    }
}
