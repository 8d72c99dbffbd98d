//! `PlainKv`: one attention layer's keys and values in a plain dtype (f32, f16, bf16).
//!
//! Storage is a preallocated (b, kv_heads, capacity, head_dim) buffer per K and V that doubles when
//! full (amortized O(1) appends, never an O(n²) chain of concatenations). Reads are views.

use candle_core::{Result, Tensor};

/// Keys and values of one attention layer, in a plain dtype.
#[derive(Debug, Default, Clone)]
pub struct PlainKv {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

impl PlainKv {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append k, v of shape (b, kv_heads, t, head_dim); returns the full cached (k, v) views.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        let needed = self.len + t;
        self.k = Some(grow_and_write(self.k.take(), k, self.len, needed)?);
        self.v = Some(grow_and_write(self.v.take(), v, self.len, needed)?);
        self.len = needed;
        self.view()
    }

    /// The cached (k, v), each (b, kv_heads, len, head_dim).
    pub fn view(&self) -> Result<(Tensor, Tensor)> {
        match (&self.k, &self.v) {
            (Some(k), Some(v)) => Ok((k.narrow(2, 0, self.len)?, v.narrow(2, 0, self.len)?)),
            _ => candle_core::bail!("the KV cache is empty"),
        }
    }

    /// Drop everything after the first `len` positions.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            candle_core::bail!("cannot truncate a KV cache of {} positions to {len}", self.len);
        }
        self.len = len;
        Ok(())
    }

    /// Bytes held by the live part of the cache (capacity slack excluded).
    pub fn bytes(&self) -> usize {
        let per = |t: &Option<Tensor>| {
            t.as_ref().map_or(0, |t| {
                let (b, h, _, d) = t.dims4().unwrap_or((0, 0, 0, 0));
                b * h * self.len * d * t.dtype().size_in_bytes()
            })
        };
        per(&self.k) + per(&self.v)
    }
}

fn grow_and_write(buf: Option<Tensor>, new: &Tensor, at: usize, needed: usize) -> Result<Tensor> {
    let (b, h, t, d) = new.dims4()?;
    let buf = match buf {
        Some(buf) if buf.dim(2)? >= needed => buf,
        old => {
            let capacity = needed.next_power_of_two().max(64);
            let grown = Tensor::zeros((b, h, capacity, d), new.dtype(), new.device())?;
            if let Some(old) = old {
                if at > 0 {
                    grown.slice_set(&old.narrow(2, 0, at)?.contiguous()?, 2, 0)?;
                }
            }
            grown
        }
    };
    debug_assert_eq!(t + at, needed);
    buf.slice_set(&new.contiguous()?, 2, at)?;
    Ok(buf)
}
