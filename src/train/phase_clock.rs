//! Where a training step's time goes, when `CARAMBA_PROFILE_STEPS=1` asks: the device is
//! synchronized at each phase boundary (data, forward + loss, backward, gradient gathering,
//! clipping, optimizer), so the split is real on asynchronous GPUs — and the steps are slower
//! than unprofiled ones, which is why it is off by default. On a GPU it also reads the memory in
//! use at each boundary: the highest reading after each phase, and the growth from the first
//! profiled step's start to the last's (a leak shows as a steady growth a step).

use std::time::Instant;

use candle_core::Device;

pub struct PhaseClock {
    device: Option<Device>,
    last: Instant,
    totals: Vec<(&'static str, f64)>,
    steps: usize,
    /// GiB in use at the first and the latest step start (GPU only).
    memory_at_start: Option<(f64, f64)>,
    /// Highest GiB in use after each phase (GPU only).
    memory_peaks: Vec<(&'static str, f64)>,
}

impl PhaseClock {
    /// Enabled when `CARAMBA_PROFILE_STEPS` is set to anything but `0` or empty.
    pub fn from_env(device: &Device) -> Self {
        let on = std::env::var("CARAMBA_PROFILE_STEPS").is_ok_and(|v| !v.is_empty() && v != "0");
        Self {
            device: on.then(|| device.clone()),
            last: Instant::now(),
            totals: Vec::new(),
            steps: 0,
            memory_at_start: None,
            memory_peaks: Vec::new(),
        }
    }

    /// Start timing a step.
    pub fn start(&mut self) {
        if let Some(d) = &self.device {
            let _ = d.synchronize();
            if let Some(now) = crate::device::gpu_memory_used_gib(d) {
                let first = self.memory_at_start.map_or(now, |(first, _)| first);
                self.memory_at_start = Some((first, now));
            }
            self.last = Instant::now();
            self.steps += 1;
        }
    }

    /// The phase `name` ended now.
    pub fn lap(&mut self, name: &'static str) {
        let Some(d) = &self.device else { return };
        let _ = d.synchronize();
        let now = Instant::now();
        let secs = (now - self.last).as_secs_f64();
        self.last = now;
        match self.totals.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += secs,
            None => self.totals.push((name, secs)),
        }
        if let Some(gib) = crate::device::gpu_memory_used_gib(d) {
            match self.memory_peaks.iter_mut().find(|(n, _)| *n == name) {
                Some((_, m)) => *m = m.max(gib),
                None => self.memory_peaks.push((name, gib)),
            }
        }
    }

    /// Log the mean milliseconds per step of each phase.
    pub fn report(&self) {
        if self.device.is_none() || self.steps == 0 {
            return;
        }
        let total: f64 = self.totals.iter().map(|(_, t)| t).sum();
        let parts: Vec<String> = self
            .totals
            .iter()
            .map(|(n, t)| {
                format!(
                    "{n} {:.1} ms ({:.0}%)",
                    1e3 * t / self.steps as f64,
                    100.0 * t / total
                )
            })
            .collect();
        tracing::info!(
            steps = self.steps,
            "step profile: {:.1} ms/step = {}",
            1e3 * total / self.steps as f64,
            parts.join(", ")
        );
        if let Some((first, last)) = self.memory_at_start {
            let peaks: Vec<String> = self
                .memory_peaks
                .iter()
                .map(|(n, g)| format!("{n} {g:.2}"))
                .collect();
            let per_step = if self.steps > 1 {
                1024.0 * (last - first) / (self.steps - 1) as f64
            } else {
                0.0
            };
            tracing::info!(
                "GPU memory in use: {first:.2} GiB at the first profiled step's start, {last:.2} at the last ({per_step:+.0} MB a step); highest after each phase (GiB): {}",
                peaks.join(", ")
            );
        }
    }
}
