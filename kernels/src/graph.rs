//! Recorded decode steps: the launches of one decode step captured once in a CUDA graph and
//! replayed for every following step of the same shape, so a step costs one graph launch on
//! the host instead of a dozen launches per layer.
//!
//! A replay repeats the recorded launches exactly: the same kernels, buffers and arguments.
//! What changes from step to step lives in device memory, staged before the replay by
//! [`Gpu::stage`]: the token ids, positions, block tables and logit rows. The launch arguments
//! that depend on the step are its row count and the chunk count of the split-K attention
//! grid, rounded up to a power of two ([`shapes::split_grid_chunks`]); the pair keys the
//! recording. Eager launches use the same grid, so a replayed step computes exactly what the
//! eager one does, bit for bit. Only passes of decode rows that all get logits are recorded.
//!
//! Recording is an optimisation: if capture or instantiation fails (an old driver, a launch
//! the capture refuses), the failure is logged, the sequence stops recording and the step
//! runs eagerly; nothing is lost.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;

use crate::error::{shape, Error, Result};
use crate::gpu::Gpu;
use crate::ops::KvPool;

/// The decode steps recorded on one pool, keyed by (rows, attention chunks).
#[derive(Default)]
pub struct StepGraphs {
    graphs: Vec<((usize, usize), CudaGraph)>,
    failed: bool,
}

// SAFETY: CUDA graph handles may be used from any thread provided calls on one graph are not
// concurrent (CUDA's "graph objects are not internally synchronized"). A `StepGraphs` is only
// reached through `&mut KvPool` (exclusive), so moving it to another thread cannot make two
// threads use one graph at once. It is not `Sync`.
unsafe impl Send for StepGraphs {}

/// Whether steps are recorded, and how often that happened (per device).
#[derive(Debug)]
pub(crate) struct GraphSwitch {
    enabled: AtomicBool,
    recorded: AtomicUsize,
    replayed: AtomicUsize,
}

impl GraphSwitch {
    pub(crate) fn new() -> Self {
        GraphSwitch {
            enabled: AtomicBool::new(true),
            recorded: AtomicUsize::new(0),
            replayed: AtomicUsize::new(0),
        }
    }
}

/// How many decode steps a device recorded and replayed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphCounts {
    /// Steps captured into a graph (each also ran once).
    pub recorded: usize,
    /// Steps run by replaying a recorded graph.
    pub replayed: usize,
}

impl Gpu {
    /// Turns recording of decode steps on (the default) or off. Off, every step is launched
    /// eagerly; the results are identical either way.
    pub fn set_graphs(&self, on: bool) {
        self.graph_switch.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether decode steps are recorded.
    pub fn graphs(&self) -> bool {
        self.graph_switch.enabled.load(Ordering::Relaxed)
    }

    /// Steps recorded and replayed on this device so far.
    pub fn graph_counts(&self) -> GraphCounts {
        GraphCounts {
            recorded: self.graph_switch.recorded.load(Ordering::Relaxed),
            replayed: self.graph_switch.replayed.load(Ordering::Relaxed),
        }
    }

    /// Runs `step`, the launches of one pass over the inputs staged in `cache`. A pass of decode
    /// rows is recorded in a CUDA graph the first time for its rows and attention grid and
    /// replayed afterwards without calling `step`; anything else runs `step` eagerly. An error
    /// of `step` is returned as it is; a failure to record falls back to running eagerly.
    ///
    /// `step` must issue only launches and device-to-device work on this device's stream,
    /// with buffers that outlive `cache` and arguments that depend on nothing but the staged
    /// inputs' grid; it must not copy from or to the host.
    pub fn step<E: From<Error>>(
        &self,
        cache: &mut KvPool,
        step: &mut dyn FnMut(&mut KvPool) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let staged = cache.staged()?;
        let decode_only = staged.prompt_rows == 0 && staged.logit_rows == staged.rows;
        if !decode_only || !self.graphs() || cache.graphs.failed {
            return step(cache);
        }
        let key = (staged.rows, cache.split_chunks()?);
        if let Some((_, graph)) = cache.graphs.graphs.iter().find(|(k, _)| *k == key) {
            graph.launch().map_err(Error::from)?;
            self.graph_switch.replayed.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut graphs = std::mem::take(&mut cache.graphs);
        let recorded = self.record(cache, step);
        let result = match recorded {
            Ok(Ok(graph)) => {
                let launched = graph.launch();
                graphs.graphs.push((key, graph));
                self.graph_switch.recorded.fetch_add(1, Ordering::Relaxed);
                launched.map_err(|e| E::from(Error::from(e)))
            }
            Ok(Err(e)) => {
                tracing::warn!("recording the decode step failed ({e}); launching it eagerly");
                graphs.failed = true;
                step(cache)
            }
            Err(e) => Err(e),
        };
        cache.graphs = graphs;
        result
    }

    /// Captures what `step` launches on the stream into an instantiated graph (not run).
    /// Outer error: `step`'s own; inner: the capture's. A capture that failed comes first:
    /// once a capture is invalidated every later launch of `step` fails too, and that is the
    /// capture's failure (the caller then runs `step` eagerly), not `step`'s.
    fn record<E>(
        &self,
        cache: &mut KvPool,
        step: &mut dyn FnMut(&mut KvPool) -> std::result::Result<(), E>,
    ) -> std::result::Result<Result<CudaGraph>, E> {
        // Thread-local mode: a call from this thread the capture cannot hold (a synchronous
        // copy, an allocation) fails the capture instead of silently running.
        if let Err(e) = self
            .stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        {
            return Ok(Err(e.into()));
        }
        let ran = step(cache);
        let ended = self.stream.end_capture(CUgraphInstantiate_flags(0));
        match (ran, ended) {
            (_, Err(e)) => Ok(Err(e.into())),
            (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(Some(graph))) => Ok(Ok(graph)),
            (Ok(()), Ok(None)) => Ok(Err(shape("decode step", "the capture recorded no graph"))),
        }
    }
}
