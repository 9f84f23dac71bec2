//! Where log lines go: formatted by the thread that logs into a shared buffer (one copy under a
//! short lock), and written to stderr by a writer thread, many lines per `write(2)`. A request
//! never waits for the terminal or the log pipeline.
//!
//! - The writer wakes when the buffer goes from empty to not empty, waits [`BATCH_DELAY`] so
//!   that lines logged meanwhile share the write, then writes everything buffered. Idle, it
//!   sleeps without a timer.
//! - At most [`MAX_BUFFERED`] bytes wait; a line that would exceed it is dropped and counted
//!   (`sidecar_log_lines_dropped_total`) rather than block a request. That happens only when
//!   stderr cannot keep up (a stuck log pipeline).
//! - [`Sink::flush`] writes everything buffered before it returns: called when the process
//!   stops (SIGTERM, SIGQUIT, a start-up error), so no line is lost at exit.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Lines logged within this long of the first one in an empty buffer go out in one write.
/// 50 ms, measured against 5 ms at 1 thread (benches/README.md): the writer wakes 20 times a second
/// instead of 200 under load, which took ~10 µs of CPU off each request at c=1 and c=32 (as
/// much as turning the access log off), at 50 ms of delay before a line reaches stderr and
/// ~125 KB buffered at 10,000 requests a second.
pub const BATCH_DELAY: Duration = Duration::from_millis(50);
/// Bytes that may wait for the writer before lines are dropped.
pub const MAX_BUFFERED: usize = 4 * 1024 * 1024;

/// The shared buffer and its writer; see the module docs.
pub struct Sink {
    /// Whether a writer thread runs; without one (`-d`: a fork would lose the thread), each
    /// line is written at once.
    threaded: AtomicBool,
    buffered: Mutex<Vec<u8>>,
    /// Signalled when the buffer stops being empty.
    filled: Condvar,
    /// Held while writing to stderr, so a flush and the writer keep lines in order.
    writing: Mutex<()>,
    /// Lines dropped because the buffer was full.
    pub dropped: AtomicU64,
}

impl Sink {
    /// An empty sink (start its writer with [`Sink::run_writer`] on a thread of its own).
    pub const fn new() -> Sink {
        Sink {
            threaded: AtomicBool::new(false),
            buffered: Mutex::new(Vec::new()),
            filled: Condvar::new(),
            writing: Mutex::new(()),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.buffered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one formatted line (or drops it when [`MAX_BUFFERED`] bytes are waiting); without
    /// a writer thread, writes it.
    pub fn push(&self, line: &[u8]) {
        if !self.threaded.load(Ordering::Relaxed) {
            let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
            return write_out(line);
        }
        let mut buffered = self.lock();
        if buffered.len() + line.len() > MAX_BUFFERED {
            drop(buffered);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::LOG_LINES_DROPPED.inc();
            return;
        }
        let was_empty = buffered.is_empty();
        buffered.extend_from_slice(line);
        drop(buffered);
        if was_empty {
            self.filled.notify_one();
        }
    }

    /// Writes everything buffered now, in order with the writer thread.
    pub fn flush(&self) {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let pending = std::mem::take(&mut *self.lock());
        write_out(&pending);
    }

    /// The writer thread's loop: never returns.
    pub fn run_writer(&self) -> ! {
        self.threaded.store(true, Ordering::Relaxed);
        let mut spare = Vec::new();
        loop {
            {
                let mut buffered = self.lock();
                while buffered.is_empty() {
                    buffered = self
                        .filled
                        .wait(buffered)
                        .unwrap_or_else(|e| e.into_inner());
                }
            }
            std::thread::sleep(BATCH_DELAY);
            let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut *self.lock(), &mut spare);
            write_out(&spare);
            spare.clear();
            // Keep one buffer's worth of capacity, not the largest burst's.
            spare.shrink_to(64 * 1024);
        }
    }
}

fn write_out(bytes: &[u8]) {
    if !bytes.is_empty() {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(bytes);
        let _ = stderr.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_limit_are_dropped_and_counted_not_blocked() {
        let sink = Sink::new();
        sink.threaded.store(true, Ordering::Relaxed);
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..4 {
            sink.push(&line);
        }
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 0);
        sink.push(b"one more\n");
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(sink.lock().len(), MAX_BUFFERED);
    }

    #[test]
    fn a_flush_empties_the_buffer() {
        let sink = Sink::new();
        sink.threaded.store(true, Ordering::Relaxed);
        sink.push(b"");
        sink.flush();
        assert!(sink.lock().is_empty());
    }
}
