//! The `.npy` token reader for every supported dtype and header version, its errors, and the
//! train/val batch sampler.

use std::path::Path;

use candle_core::Device;
use caramba::data::{BatchSampler, DataError, Split, TokenDataset, TokenDtype, TokenFile};
use rand::Rng;

/// A `.npy` written the way NumPy writes it (header padded to 64 bytes), version 1 or 2.
fn write_npy(path: &Path, descr: &str, payload: &[u8], n: usize, version: u8) {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({n},), }}");
    let prefix = if version == 1 { 10 } else { 12 };
    let pad = (64 - (prefix + dict.len() + 1) % 64) % 64;
    let header = format!("{dict}{}\n", " ".repeat(pad));
    let mut bytes = b"\x93NUMPY".to_vec();
    bytes.extend_from_slice(&[version, 0]);
    if version == 1 {
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    bytes.extend_from_slice(header.as_bytes());
    assert_eq!(bytes.len() % 64, 0);
    bytes.extend_from_slice(payload);
    std::fs::write(path, bytes).expect("write npy");
}

fn fresh_ids(n: usize, below: u32) -> Vec<u32> {
    let mut rng = rand::rng();
    (0..n).map(|_| rng.random_range(1..below)).collect()
}

#[test]
fn reads_every_dtype_and_header_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = fresh_ids(1000, 60_000);
    let cases: [(&str, TokenDtype, Vec<u8>); 3] = [
        (
            "<u2",
            TokenDtype::U16,
            ids.iter().flat_map(|&i| (i as u16).to_le_bytes()).collect(),
        ),
        (
            "<i4",
            TokenDtype::I32,
            ids.iter().flat_map(|&i| (i as i32).to_le_bytes()).collect(),
        ),
        (
            "<i8",
            TokenDtype::I64,
            ids.iter().flat_map(|&i| i64::from(i).to_le_bytes()).collect(),
        ),
    ];
    for (descr, dtype, payload) in cases {
        for version in [1, 2] {
            let path = dir.path().join(format!("{}_v{version}.npy", &descr[1..]));
            write_npy(&path, descr, &payload, ids.len(), version);
            let file = TokenFile::open(&path).expect("open");
            assert_eq!((file.len(), file.dtype()), (ids.len(), dtype));
            assert_eq!(file.get(0..ids.len()).expect("all"), ids);
            assert_eq!(file.get(17..42).expect("slice"), ids[17..42]);
            file.validate(60_000).expect("ids below vocab");
            assert!(file.get(990..1001).is_err(), "past the end");
        }
    }
}

#[test]
fn out_of_range_ids_name_the_file_index_and_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ids: Vec<i32> = fresh_ids(500, 256).into_iter().map(|i| i as i32).collect();
    ids[321] = 300;
    let path = dir.path().join("bad.npy");
    write_npy(
        &path,
        "<i4",
        &ids.iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<_>>(),
        ids.len(),
        1,
    );
    let err = TokenDataset::open(&path, 8, 0.1, 256).expect_err("id 300 >= vocab 256");
    let msg = err.to_string();
    assert!(
        msg.contains("bad.npy") && msg.contains("321") && msg.contains("300") && msg.contains("256"),
        "{msg}"
    );

    ids[321] = -5;
    write_npy(
        &path,
        "<i4",
        &ids.iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<_>>(),
        ids.len(),
        1,
    );
    let err = TokenFile::open(&path)
        .expect("open")
        .validate(256)
        .expect_err("negative id");
    assert!(
        matches!(
            err,
            DataError::IdOutOfRange {
                index: 321,
                value: -5,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn bad_files_get_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.npy");
    let err = TokenFile::open(&missing).expect_err("missing");
    assert!(
        matches!(err, DataError::Missing { .. }) && err.to_string().contains("nope.npy"),
        "{err}"
    );

    let f32s = dir.path().join("floats.npy");
    write_npy(&f32s, "<f4", &[0u8; 16], 4, 1);
    let err = TokenFile::open(&f32s).expect_err("float dtype");
    assert!(
        err.to_string().contains("<f4") && err.to_string().contains("floats.npy"),
        "{err}"
    );

    let short = dir.path().join("short.npy");
    write_npy(&short, "<u2", &[1u8; 10], 100, 1);
    assert!(
        TokenFile::open(&short)
            .expect_err("truncated payload")
            .to_string()
            .contains("100 elements")
    );

    let text = dir.path().join("text.npy");
    std::fs::write(&text, "not numpy at all").expect("write");
    assert!(
        TokenFile::open(&text)
            .expect_err("no magic")
            .to_string()
            .contains("magic")
    );
}

#[test]
fn a_block_longer_than_the_data_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = fresh_ids(100, 256);
    let path = dir.path().join("small.npy");
    write_npy(
        &path,
        "<u2",
        &ids.iter()
            .flat_map(|&i| (i as u16).to_le_bytes())
            .collect::<Vec<_>>(),
        100,
        1,
    );
    let err = TokenDataset::open(&path, 100, 0.0, 256).expect_err("block of 100 + 1 target > 100 tokens");
    assert!(
        matches!(
            err,
            DataError::TooShort {
                tokens: 100,
                block_size: 100,
                split: "train",
                ..
            }
        ),
        "{err}"
    );
    let err = TokenDataset::open(&path, 16, 0.1, 256).expect_err("val split of 10 tokens");
    assert!(
        matches!(
            err,
            DataError::TooShort {
                split: "val",
                tokens: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        TokenDataset::open(&path, 16, 1.0, 256).is_err(),
        "val_frac 1 leaves no training data"
    );
}

#[test]
fn batches_are_shifted_blocks_of_their_split_and_resume_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    // why: ids equal to their position (mod 2^16) make every block's origin visible.
    let ids: Vec<u32> = (0..4000).collect();
    let path = dir.path().join("pos.npy");
    write_npy(
        &path,
        "<u2",
        &ids.iter()
            .flat_map(|&i| (i as u16).to_le_bytes())
            .collect::<Vec<_>>(),
        4000,
        1,
    );
    let ds = TokenDataset::open(&path, 32, 0.25, 4000).expect("open");
    assert_eq!((ds.len(Split::Train), ds.len(Split::Val)), (3000, 1000));
    let mut sampler = BatchSampler::new(rand::rng().random());
    for (split, lo, hi) in [(Split::Train, 0, 3000), (Split::Val, 3000, 4000)] {
        let (x, y) = ds.batch(split, 8, &mut sampler, &Device::Cpu).expect("batch");
        assert_eq!(x.dims(), &[8, 32]);
        let (x, y) = (x.to_vec2::<u32>().expect("x"), y.to_vec2::<u32>().expect("y"));
        for (xr, yr) in x.iter().zip(&y) {
            assert!(
                xr[0] >= lo && yr[31] < hi,
                "{split:?} block {}..={} outside {lo}..{hi}",
                xr[0],
                yr[31]
            );
            assert!(
                xr.iter().zip(yr).all(|(a, b)| b == &(a + 1)),
                "y is x shifted by one"
            );
            assert!(xr.windows(2).all(|w| w[1] == w[0] + 1), "contiguous");
        }
    }
    let state = sampler.state();
    let next = ds
        .batch(Split::Train, 4, &mut sampler, &Device::Cpu)
        .expect("batch")
        .0
        .to_vec2::<u32>()
        .expect("x");
    let mut restored = BatchSampler::restore(state);
    let again = ds
        .batch(Split::Train, 4, &mut restored, &Device::Cpu)
        .expect("batch")
        .0
        .to_vec2::<u32>()
        .expect("x");
    assert_eq!(next, again);
}
