//! The scheduler: one blocking thread owns the model (candle is synchronous) and serves the jobs
//! of a bounded queue one at a time, in arrival order. A job goes in with [`Scheduler::submit`]
//! (a full queue is a 503 at once), and its text comes back as [`Event`]s on the job's own tokio
//! channel as the tokens are decoded. A handler that goes away (a client that disconnected) drops
//! its receiver: a waiting job then leaves the queue (at the next submit or when its turn comes),
//! and a running one stops at its next token, freeing the model for the next job.
//!
//! Why not batched: `Generator`'s batches are left-padded rows that start together (its
//! `prefill_batch` forgets the session), so a request could not join a running batch between
//! decode steps; continuous batching needs a cache whose rows come and go (see docs/serve.md).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::mpsc;

use super::error::{ApiError, ServeError};
use super::model::{Prepared, ServedModel};
use super::protocol::{FinishReason, Usage};
use crate::infer::speculative::{Draft, DraftSource, SpeculativeGenerator};
use crate::infer::{Generator, StopReason, TextStream};

/// What the model thread sends back about a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// More text (never empty).
    Text(String),
    /// The job finished.
    Done {
        finish_reason: FinishReason,
        usage: Usage,
    },
    /// The model failed on this job (the message is for the client).
    Failed(String),
}

/// One request for the model thread.
pub struct Job {
    /// The response id (`chatcmpl-…`), for the log line.
    pub id: String,
    pub prepared: Prepared,
    pub events: mpsc::UnboundedSender<Event>,
    /// When the request arrived (the log line's time counts from here).
    pub received: Instant,
}

/// The handlers' side of the queue (cheap to clone); the model thread stops once every clone
/// is dropped and the queue is empty.
#[derive(Clone)]
pub struct Scheduler {
    handle: Arc<Handle>,
}

/// Closes the queue when the last [`Scheduler`] goes.
struct Handle {
    queue: Arc<Queue>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.queue.lock().open = false;
        self.queue.ready.notify_all();
    }
}

/// Jobs waiting for the model thread.
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    capacity: usize,
}

struct QueueState {
    jobs: VecDeque<Job>,
    open: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // why: the queue holds no invariant a panic could break half-way (push and pop only).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next job whose client is still there; `None` once closed and drained.
    fn next(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            while let Some(job) = state.jobs.pop_front() {
                if job.events.is_closed() {
                    tracing::info!("{}: client left before its turn", job.id);
                    continue;
                }
                return Some(job);
            }
            if !state.open {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Scheduler {
    /// Start the model thread over `model` with room for `queue` waiting jobs (at least 1).
    pub fn start(
        model: ServedModel,
        queue: usize,
    ) -> Result<(Self, std::thread::JoinHandle<()>), ServeError> {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                open: true,
            }),
            ready: Condvar::new(),
            capacity: queue.max(1),
        });
        let for_thread = queue.clone();
        let thread = std::thread::Builder::new()
            .name("caramba-model".into())
            .spawn(move || serve_jobs(model, &for_thread))
            .map_err(ServeError::Thread)?;
        Ok((
            Self {
                handle: Arc::new(Handle { queue }),
            },
            thread,
        ))
    }

    /// Queue `job`; a 503 when the queue is full. Jobs whose clients have gone are dropped first,
    /// so a disconnected client never holds a place.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        let queue = &self.handle.queue;
        let mut state = queue.lock();
        state.jobs.retain(|j| !j.events.is_closed());
        if !state.open {
            return Err(ApiError::internal("the model thread has stopped"));
        }
        if state.jobs.len() >= queue.capacity {
            return Err(ApiError::overloaded(queue.capacity));
        }
        state.jobs.push_back(job);
        drop(state);
        queue.ready.notify_one();
        Ok(())
    }

    /// Requests waiting (not counting the one being generated).
    pub fn waiting(&self) -> usize {
        self.handle.queue.lock().jobs.len()
    }
}

/// The model thread: run jobs until the queue is closed and drained.
fn serve_jobs(model: ServedModel, queue: &Queue) {
    while let Some(job) = queue.next() {
        // why: a panic in a kernel on some input must cost that request, not the server.
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| run(&model, &job)))
            .unwrap_or_else(|_| Err("the model panicked on this request".into()));
        let ms = job.received.elapsed().as_secs_f64() * 1e3;
        match ran {
            Ok(Ran::Finished { finish_reason, usage }) => {
                tracing::info!(
                    "{}: {} prompt + {} completion tokens in {ms:.0} ms ({finish_reason:?})",
                    job.id,
                    usage.prompt_tokens,
                    usage.completion_tokens
                );
                let _ = job.events.send(Event::Done { finish_reason, usage });
            }
            Ok(Ran::ClientGone { usage }) => tracing::info!(
                "{}: client disconnected after {} prompt + {} completion tokens, {ms:.0} ms",
                job.id,
                usage.prompt_tokens,
                usage.completion_tokens
            ),
            Err(message) => {
                tracing::warn!("{}: failed after {ms:.0} ms: {message}", job.id);
                let _ = job.events.send(Event::Failed(message));
            }
        }
    }
}

/// How a job ended.
enum Ran {
    Finished {
        finish_reason: FinishReason,
        usage: Usage,
    },
    ClientGone {
        usage: Usage,
    },
}

/// Sends text to the job's client and tracks stop strings and disconnection.
struct Sink<'a> {
    job: &'a Job,
    text: TextStream<'a>,
    produced: usize,
    gone: bool,
}

impl Sink<'_> {
    /// Take one generated token; false when generation should end (stop string, client gone).
    fn push(&mut self, t: u32) -> Result<bool, String> {
        self.produced += 1;
        if self.job.prepared.cfg.eos_token_ids.contains(&t) {
            return Ok(true);
        }
        let delta = self.text.push(t).map_err(|e| e.to_string())?;
        self.send(delta);
        Ok(!self.gone && !self.text.stopped())
    }

    fn send(&mut self, delta: String) {
        if (!delta.is_empty() && self.job.events.send(Event::Text(delta)).is_err())
            || self.job.events.is_closed()
        {
            self.gone = true;
        }
    }

    /// Flush held-back text; the outcome for `reason`.
    fn finish(mut self, reason: Option<StopReason>) -> Ran {
        let tail = self.text.finish();
        self.send(tail);
        let usage = Usage::new(self.job.prepared.prompt.len(), self.produced);
        if self.gone {
            return Ran::ClientGone { usage };
        }
        let finish_reason = match reason {
            _ if self.text.stopped() => FinishReason::Stop,
            Some(StopReason::MaxTokens) => FinishReason::Length,
            Some(StopReason::Eos | StopReason::StopString) | None => FinishReason::Stop,
        };
        Ran::Finished { finish_reason, usage }
    }
}

/// Generate for one job, plainly or speculatively.
fn run(model: &ServedModel, job: &Job) -> Result<Ran, String> {
    let loaded = &model.loaded;
    let tok = loaded
        .tokenizer
        .as_ref()
        .ok_or_else(|| "the model has no tokenizer".to_string())?;
    let Prepared { prompt, cfg, stop } = &job.prepared;
    let mut sink = Sink {
        job,
        text: TextStream::new(tok, stop.clone()),
        produced: 0,
        gone: false,
    };
    if let Some(d) = &model.draft {
        let draft = match (&d.source, &d.model) {
            (DraftSource::SelfLayers(n), _) => Draft::SelfLayers(*n),
            (DraftSource::Model(_), Some(m)) => Draft::Model(&m.model),
            (DraftSource::Model(src), None) => return Err(format!("the draft {src} is not loaded")),
        };
        let mut generator = SpeculativeGenerator::new(
            &loaded.model,
            draft,
            d.cfg.clone(),
            loaded.max_seq_len,
            &loaded.device,
            |m| model.cache.cache_or_plain(m),
        )
        .map_err(|e| e.to_string())?;
        let mut failure = None;
        let (_, reason) = generator
            .generate_with(prompt, cfg, |t| {
                sink.push(t).unwrap_or_else(|e| {
                    failure = Some(e);
                    false
                })
            })
            .map_err(|e| e.to_string())?;
        if let Some(e) = failure {
            return Err(e);
        }
        return Ok(sink.finish(Some(reason)));
    }
    let pad = tok.eos_token_ids.first().copied().unwrap_or(0);
    let mut generator =
        Generator::new(&loaded.model, loaded.max_seq_len, loaded.dtype, &loaded.device).with_pad_id(pad);
    if let Some(cache) = model.cache.cache_for(&loaded.model) {
        generator = generator.with_cache(cache);
    }
    let mut stream = generator.stream(prompt, cfg);
    while let Some(t) = stream.next() {
        let t = t.map_err(|e| e.to_string())?;
        if !sink.push(t)? {
            stream.stop(StopReason::StopString);
            break;
        }
    }
    let reason = stream.stop_reason();
    Ok(sink.finish(reason))
}
