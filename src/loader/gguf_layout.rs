//! The checks a GGUF file's header must pass before any tensor is read, after llama.cpp's
//! `gguf_init_from_file`: the magic is `GGUF` as bytes (candle also takes the byte-swapped
//! form, then reads the rest little-endian and gets garbage), the alignment is a power of two, and
//! every tensor's byte range — computed with checked arithmetic — is aligned, lies inside the
//! file, and neither overlaps another tensor nor leaves a gap of an alignment unit or more.
//!
//! why the gap rule: writers (llama.cpp, gguf-py, candle) lay tensors out back to back, padded
//! to the alignment. A tensor whose type was changed to a smaller one (or whose offset moved)
//! leaves unused bytes, and then decodes to numbers that were never written (NaN perplexity).

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};

/// GGUF's default alignment of tensor data (`general.alignment` overrides it).
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Why a GGUF header cannot be trusted: a message, and the tensor it is about (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutProblem {
    pub tensor: Option<String>,
    pub message: String,
}

impl LayoutProblem {
    fn file(message: impl Into<String>) -> Self {
        Self {
            tensor: None,
            message: message.into(),
        }
    }

    fn tensor(name: &str, message: impl Into<String>) -> Self {
        Self {
            tensor: Some(name.to_string()),
            message: message.into(),
        }
    }
}

/// The file's first four bytes must spell `GGUF`.
pub fn check_magic(first: [u8; 4]) -> Result<(), LayoutProblem> {
    if &first == b"GGUF" {
        return Ok(());
    }
    let why = if &first == b"FUGG" {
        " (byte-swapped: a big-endian GGUF, which caramba does not read)"
    } else {
        ""
    };
    Err(LayoutProblem::file(format!(
        "the magic is {first:02x?}, not `GGUF`{why}"
    )))
}

/// Bytes of a tensor of `dims` values of type `t`, when the rows split into whole blocks and the
/// count fits in a `u64`.
pub fn checked_tensor_bytes(dims: &[usize], t: GgmlDType) -> Result<u64, String> {
    let mut elems: u64 = 1;
    for &d in dims {
        elems = elems
            .checked_mul(d as u64)
            .ok_or_else(|| format!("its shape {dims:?} has more values than fit in 64 bits"))?;
    }
    let block = t.block_size() as u64;
    // why: candle keeps dims outermost first, so the row (GGML's ne[0]) is the last one.
    let row = dims.last().copied().unwrap_or(1) as u64;
    if row % block != 0 {
        return Err(format!(
            "rows of {row} values do not split into {t:?} blocks of {block} (a changed tensor type?)"
        ));
    }
    (elems / block)
        .checked_mul(t.type_size() as u64)
        .ok_or_else(|| format!("its shape {dims:?} has more bytes than fit in 64 bits"))
}

/// The alignment `content` declares (llama.cpp: a non-zero power of two).
fn alignment(content: &Content) -> Result<u64, LayoutProblem> {
    let a = match content.metadata.get("general.alignment") {
        None => return Ok(DEFAULT_ALIGNMENT),
        Some(Value::U8(v)) => u64::from(*v),
        Some(Value::U16(v)) => u64::from(*v),
        Some(Value::U32(v)) => u64::from(*v),
        Some(Value::I8(v)) => u64::try_from(*v).unwrap_or(0),
        Some(Value::I16(v)) => u64::try_from(*v).unwrap_or(0),
        Some(Value::I32(v)) => u64::try_from(*v).unwrap_or(0),
        Some(_) => DEFAULT_ALIGNMENT,
    };
    if a == 0 || !a.is_power_of_two() {
        return Err(LayoutProblem::file(format!(
            "general.alignment is {a}, not a power of two"
        )));
    }
    Ok(a)
}

/// Check every tensor's byte range in a file of `file_size` bytes (see the module docs).
pub fn check_layout(content: &Content, file_size: u64) -> Result<(), LayoutProblem> {
    let align = alignment(content)?;
    let base = content.tensor_data_offset;
    let mut ranges: Vec<(u64, u64, &str)> = Vec::with_capacity(content.tensor_infos.len());
    for (name, info) in &content.tensor_infos {
        let TensorInfo {
            shape,
            offset,
            ggml_dtype,
        } = info;
        let bytes =
            checked_tensor_bytes(shape.dims(), *ggml_dtype).map_err(|m| LayoutProblem::tensor(name, m))?;
        if offset % align != 0 {
            return Err(LayoutProblem::tensor(
                name,
                format!("its data offset {offset} is not a multiple of the alignment {align}"),
            ));
        }
        let end = base
            .checked_add(*offset)
            .and_then(|start| start.checked_add(bytes))
            .filter(|end| *end <= file_size)
            .ok_or_else(|| {
                LayoutProblem::tensor(
                    name,
                    format!(
                        "its {bytes} bytes at offset {offset} (after the {base}-byte header) end past \
                         the file's {file_size} bytes (truncated download?)"
                    ),
                )
            })?;
        ranges.push((base + offset, end, name));
    }
    ranges.sort_unstable();
    let mut expected = base;
    let mut previous: Option<&str> = None;
    for (start, end, name) in ranges {
        if start < expected && previous.is_some() {
            return Err(LayoutProblem::tensor(
                name,
                format!(
                    "its data overlaps tensor `{}`'s",
                    previous.expect("checked is_some")
                ),
            ));
        }
        if start - expected >= align {
            let after = previous.map_or("the header".to_string(), |p| format!("tensor `{p}`"));
            return Err(LayoutProblem::tensor(
                name,
                format!(
                    "{} unused bytes lie between {after} and its data (a changed tensor type or offset?)",
                    start - expected
                ),
            ));
        }
        expected = end.next_multiple_of(align);
        previous = Some(name);
    }
    if let Some(last) = previous
        && file_size.saturating_sub(expected) >= align
    {
        return Err(LayoutProblem::tensor(
            last,
            format!(
                "{} unused bytes follow its data at the end of the file (a changed tensor type or offset?)",
                file_size - expected
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_must_be_gguf_bytes() {
        assert!(check_magic(*b"GGUF").is_ok());
        let e = check_magic(*b"FUGG").expect_err("swapped");
        assert!(e.message.contains("byte-swapped"), "{e:?}");
        assert!(check_magic([0; 4]).is_err());
    }

    #[test]
    fn sizes_that_overflow_are_errors() {
        assert_eq!(checked_tensor_bytes(&[3, 64], GgmlDType::F32), Ok(3 * 64 * 4));
        assert_eq!(checked_tensor_bytes(&[2, 64], GgmlDType::Q8_0), Ok(2 * 2 * 34));
        assert!(checked_tensor_bytes(&[usize::MAX, 4], GgmlDType::F32).is_err());
        assert!(checked_tensor_bytes(&[1 << 40, 1 << 30], GgmlDType::F32).is_err());
        assert!(checked_tensor_bytes(&[2, 33], GgmlDType::Q8_0).is_err());
    }
}
