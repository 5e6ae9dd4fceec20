//! Stdout for log lines, written in batches.
//!
//! Writing each line with its own `write(2)` costs a system call per line and, when stdout is a pipe (as in every
//! container), a wake-up of the reader per line; on a small hop that is a good part of the request's cost. Handing
//! each line to a writer thread over a channel is worse: the thread is woken per line. Here lines are appended to a
//! buffer under a mutex (a copy, no system call), and a thread writes the buffer out once per [`FLUSH_INTERVAL`]
//! (woken once per batch, parked while nothing is logged).
//!
//! Order is kept. A line reaches stdout at most [`FLUSH_INTERVAL`] after it was logged. When the buffer is full the
//! logging thread writes it out itself, so memory stays bounded and nothing is dropped. [`BatchGuard`] writes out
//! what is left when dropped; only a hard kill loses the last interval's lines.

use std::{
    io::{self, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread,
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// Longest time a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// Buffer size past which the logging thread writes the buffer out itself.
pub const BUFFER_LIMIT: usize = 256 * 1024;

#[derive(Debug, Default)]
struct State {
    buffer: Vec<u8>,
    stopping: bool,
}

#[derive(Debug)]
struct Shared<W> {
    state: Mutex<State>,
    /// Signalled when the buffer stops being empty, and at shutdown.
    pending: Condvar,
    /// Held while writing, so batches come out in the order they were taken.
    output: Mutex<W>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W: Write> Shared<W> {
    /// Writes out everything buffered so far.
    fn flush(&self) -> io::Result<()> {
        let mut output = lock(&self.output);
        let batch = std::mem::take(&mut lock(&self.state).buffer);
        if batch.is_empty() {
            return Ok(());
        }
        output.write_all(&batch)?;
        output.flush()
    }

    fn append(&self, line: &[u8]) -> io::Result<()> {
        let mut state = lock(&self.state);
        if state.buffer.len() + line.len() > BUFFER_LIMIT {
            drop(state);
            self.flush()?;
            state = lock(&self.state);
        }
        let was_empty = state.buffer.is_empty();
        state.buffer.extend_from_slice(line);
        drop(state);
        if was_empty {
            self.pending.notify_one();
        }
        Ok(())
    }

    fn run(&self) {
        loop {
            {
                let state = lock(&self.state);
                let state = self
                    .pending
                    .wait_while(state, |s| s.buffer.is_empty() && !s.stopping)
                    .unwrap_or_else(PoisonError::into_inner);
                if state.stopping {
                    break;
                }
            }
            // Let the batch fill up before writing it.
            thread::sleep(FLUSH_INTERVAL);
            if let Err(err) = self.flush() {
                eprintln!("log writer: cannot write the log: {err}");
            }
        }
    }
}

/// The [`MakeWriter`] handing lines to the batch.
#[derive(Debug)]
pub struct Batched<W> {
    shared: Arc<Shared<W>>,
}

/// Stops the writer thread and writes out what is buffered, when dropped.
#[derive(Debug)]
pub struct BatchGuard<W: Write> {
    shared: Arc<Shared<W>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl<W: Write> Drop for BatchGuard<W> {
    fn drop(&mut self) {
        lock(&self.shared.state).stopping = true;
        self.shared.pending.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = self.shared.flush();
    }
}

/// Batches lines for `sink` (stdout in the agents) and starts the thread writing them.
pub fn writer<W: Write + Send + 'static>(sink: W) -> io::Result<(Batched<W>, BatchGuard<W>)> {
    let shared = Arc::new(Shared { state: Mutex::default(), pending: Condvar::new(), output: Mutex::new(sink) });
    let worker = shared.clone();
    let thread = thread::Builder::new().name("log-writer".to_owned()).spawn(move || worker.run())?;
    Ok((Batched { shared: shared.clone() }, BatchGuard { shared, thread: Some(thread) }))
}

/// One log line's writer (tracing-subscriber formats a whole line, then writes it at once).
#[derive(Debug)]
pub struct LineWriter<'a, W> {
    shared: &'a Shared<W>,
}

impl<W: Write> Write for LineWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for Batched<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { shared: &self.shared }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A sink the test can read while the writer holds it.
    #[derive(Debug, Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.0).clone()).unwrap()
        }
    }

    #[test]
    fn lines_arrive_in_order_within_the_interval_and_the_rest_on_drop() {
        let sink = Sink::default();
        let (batched, guard) = writer(sink.clone()).unwrap();
        for i in 0..100 {
            batched.make_writer().write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.text().lines().count() < 100 {
            assert!(Instant::now() < deadline, "lines not written within 5 s");
            thread::sleep(FLUSH_INTERVAL);
        }
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(sink.text(), expected);

        batched.make_writer().write_all(b"last\n").unwrap();
        drop(guard);
        assert!(sink.text().ends_with("line 99\nlast\n"), "the guard writes out the rest");
    }

    #[test]
    fn a_full_buffer_is_written_by_the_logging_thread_itself() {
        let sink = Sink::default();
        let (batched, _guard) = writer(sink.clone()).unwrap();
        let line = vec![b'x'; 1000];
        for _ in 0..(BUFFER_LIMIT / 1000 + 1) {
            batched.make_writer().write_all(&line).unwrap();
        }
        // No waiting: the append that overflowed the buffer wrote it out first.
        assert!(lock(&sink.0).len() >= BUFFER_LIMIT - 1000, "{} bytes written", lock(&sink.0).len());
    }
}
