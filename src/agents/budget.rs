//! The budget of a process: completion tokens over all requests, tokens per request, number of
//! requests, and wall time. [`Budget::admit`] is asked before each request (and caps its
//! `max_tokens` and its timeout by what is left); [`Budget::charge`] counts the reply's usage.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::client::Usage;
use super::target::BudgetSpec;

/// Which limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exhausted {
    Tokens,
    Calls,
    WallTime,
}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tokens => "budget.max_tokens (completion tokens) reached",
            Self::Calls => "budget.max_calls (requests) reached",
            Self::WallTime => "budget.wall_time_s reached",
        })
    }
}

/// What one request may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admit {
    pub max_tokens: usize,
    pub timeout: Duration,
}

/// Spent so far, for `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetReport {
    pub calls: usize,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub wall_time_s: f64,
    pub limits: BudgetSpec,
}

/// A running budget.
#[derive(Debug, Clone)]
pub struct Budget {
    spec: BudgetSpec,
    start: Instant,
    calls: usize,
    prompt_tokens: usize,
    completion_tokens: usize,
}

impl Budget {
    pub fn new(spec: BudgetSpec) -> Self {
        Self {
            spec,
            start: Instant::now(),
            calls: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
        }
    }

    /// Time left before `wall_time_s`.
    pub fn time_left(&self) -> Duration {
        Duration::from_secs_f64(self.spec.wall_time_s).saturating_sub(self.start.elapsed())
    }

    /// Whether the wall time is spent (checked between steps that are not requests).
    pub fn check_time(&self) -> Result<(), Exhausted> {
        if self.time_left().is_zero() {
            Err(Exhausted::WallTime)
        } else {
            Ok(())
        }
    }

    /// May a request asking for `want` tokens go out, with which `max_tokens` and timeout.
    pub fn admit(&self, want: usize, request_timeout: Duration) -> Result<Admit, Exhausted> {
        if self.calls >= self.spec.max_calls {
            return Err(Exhausted::Calls);
        }
        let left = self.spec.max_tokens.saturating_sub(self.completion_tokens);
        if left == 0 {
            return Err(Exhausted::Tokens);
        }
        let time = self.time_left();
        if time.is_zero() {
            return Err(Exhausted::WallTime);
        }
        Ok(Admit {
            max_tokens: want.min(self.spec.max_tokens_per_call).min(left).max(1),
            timeout: time.min(request_timeout),
        })
    }

    /// Count one request and its usage.
    pub fn charge(&mut self, usage: &Usage) {
        self.calls += 1;
        self.prompt_tokens += usage.prompt_tokens;
        self.completion_tokens += usage.completion_tokens;
    }

    pub fn report(&self) -> BudgetReport {
        BudgetReport {
            calls: self.calls,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            wall_time_s: self.start.elapsed().as_secs_f64(),
            limits: self.spec.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BudgetSpec {
        BudgetSpec {
            max_tokens: 100,
            max_tokens_per_call: 40,
            max_calls: 3,
            wall_time_s: 60.0,
        }
    }

    fn used(n: usize) -> Usage {
        Usage {
            prompt_tokens: 10,
            completion_tokens: n,
            total_tokens: n + 10,
        }
    }

    #[test]
    fn caps_each_request_by_the_per_call_limit_and_what_is_left() {
        let mut b = Budget::new(spec());
        let t = Duration::from_secs(600);
        assert_eq!(b.admit(500, t).unwrap().max_tokens, 40);
        b.charge(&used(40));
        b.charge(&used(40));
        assert_eq!(b.admit(500, t).unwrap().max_tokens, 20, "100 - 80 left");
        assert!(b.admit(5, t).unwrap().timeout <= Duration::from_secs(60));
    }

    #[test]
    fn stops_at_tokens_calls_and_time() {
        let t = Duration::from_secs(1);
        let mut b = Budget::new(spec());
        b.charge(&used(100));
        assert_eq!(b.admit(1, t), Err(Exhausted::Tokens));
        let mut b = Budget::new(spec());
        for _ in 0..3 {
            b.charge(&used(1));
        }
        assert_eq!(b.admit(1, t), Err(Exhausted::Calls));
        let b = Budget::new(BudgetSpec {
            wall_time_s: 0.0,
            ..spec()
        });
        assert_eq!(b.admit(1, t), Err(Exhausted::WallTime));
        assert_eq!(b.report().calls, 0);
    }
}
