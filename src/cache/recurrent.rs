//! `RecurrentState`: the cache of a recurrent layer (an SSM's convolution window and scan state).
//!
//! A recurrent layer needs O(1) memory per sequence, not per token: the state after the last
//! position is all that decoding reads. Rolling back (the generator's `rollback`, speculative
//! decoding's rejected drafts, a failed forward) needs the state at an earlier position, so the
//! states after each of the last [`ROLLBACK_WINDOW`] positions are kept (each a few tensors of
//! (b, d_inner, ·)); truncating further back than that is an error, truncating to 0 a reset.

use std::collections::VecDeque;

use candle_core::{Result, Tensor};

use super::error::CacheError;

/// Positions whose states a [`RecurrentState`] keeps for rollback (speculative drafts and stop
/// strings roll back a few tokens).
pub const ROLLBACK_WINDOW: usize = 32;

/// The states of one recurrent layer after each of its last positions.
#[derive(Debug, Clone, Default)]
pub struct RecurrentState {
    len: usize,
    /// `(position count, the layer's state tensors)`, oldest first; the last is the current.
    states: VecDeque<(usize, Vec<Tensor>)>,
}

impl RecurrentState {
    /// Positions consumed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The state after the last position; `None` when fresh (the layer starts from zeros).
    pub fn current(&self) -> Option<&[Tensor]> {
        self.states.back().map(|(_, s)| s.as_slice())
    }

    /// Record the state after position `len - 1` (positions advance one by one or in a chunk
    /// whose intermediate states the layer may skip; only the recorded ones can be rolled back to).
    pub fn push(&mut self, len: usize, state: Vec<Tensor>) -> Result<()> {
        if len <= self.len {
            candle_core::bail!("recurrent state: position {len} recorded after {}", self.len);
        }
        self.len = len;
        self.states.push_back((len, state));
        while self.states.len() > ROLLBACK_WINDOW {
            self.states.pop_front();
        }
        Ok(())
    }

    /// Go back to the state after the first `len` positions; errors (changing nothing) when it
    /// was not kept.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(CacheError::TruncateBeyondLen {
                requested: len,
                len: self.len,
            }
            .into());
        }
        if len == 0 {
            self.reset();
            return Ok(());
        }
        if !self.states.iter().any(|(l, _)| *l == len) {
            return Err(CacheError::RecurrentRollback {
                requested: len,
                len: self.len,
                window: ROLLBACK_WINDOW,
            }
            .into());
        }
        while self.states.back().is_some_and(|(l, _)| *l > len) {
            self.states.pop_back();
        }
        self.len = len;
        Ok(())
    }

    pub fn reset(&mut self) {
        self.len = 0;
        self.states.clear();
    }

    /// Bytes of the states held (the current one and those kept for rollback).
    pub fn bytes(&self) -> usize {
        self.states
            .iter()
            .flat_map(|(_, s)| s.iter())
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn state(v: f32) -> Vec<Tensor> {
        vec![Tensor::new(&[v], &Device::Cpu).expect("tensor")]
    }

    #[test]
    fn rolls_back_within_its_window_and_no_further() -> Result<()> {
        let mut s = RecurrentState::default();
        for len in 1..=(ROLLBACK_WINDOW + 5) {
            s.push(len, state(len as f32))?;
        }
        let len = ROLLBACK_WINDOW + 5;
        assert_eq!(s.len(), len);
        s.truncate(len - 3)?;
        assert_eq!(
            s.current().expect("state")[0].to_vec1::<f32>()?,
            [(len - 3) as f32]
        );
        let err = s.truncate(2).expect_err("beyond the window").to_string();
        assert!(err.contains("keeps the states of its last"), "{err}");
        assert_eq!(s.len(), len - 3, "a failed truncate changes nothing");
        assert!(s.truncate(len).is_err(), "cannot grow");
        s.truncate(0)?;
        assert!(s.is_empty() && s.current().is_none() && s.bytes() == 0);
        Ok(())
    }
}
