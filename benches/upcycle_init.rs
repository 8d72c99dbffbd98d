//! How good is the student straight after surgery? For each `dba_init` (and the activation-aware
//! variant of the default), build the student of a manifest's upcycle target from its teacher and
//! report held-out perplexity and the mean attention-output L1 against the teacher — no training.
//!
//!   cargo bench --bench upcycle_init -- presets/smollm2_135m_dba.yml quick
use std::path::PathBuf;

use candle_core::Device;
use caramba::data::{BatchSampler, Split, ensure_prepared};
use caramba::upcycle::student::build_student;
use caramba::upcycle::teacher::load_teacher;
use caramba::upcycle::verify::verify;
use caramba::upcycle::{DbaInit, runner::with_teacher_tokenizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let manifest = PathBuf::from(
        args.first()
            .map_or("presets/smollm2_135m_dba.yml", String::as_str),
    );
    let target_name = args.get(1).map_or("quick", String::as_str);
    let compiled = caramba::compiler::compile(&manifest).map_err(|e| e.plain())?;
    let target = compiled.run_target(Some(target_name)).map_err(|e| e.plain())?;
    let device = Device::Cpu;
    let teacher = load_teacher(target.teacher.as_deref().ok_or("not an upcycle target")?, &device)?;
    let data_spec = with_teacher_tokenizer(&target.data, &teacher)?;
    let data = ensure_prepared(&data_spec, data_spec.val_frac.unwrap_or(0.1), "bytes")?.dataset;
    let batch = target.runs[0].train.batch_size;
    let draw = |n: usize, split: Split, seed: u64| -> Result<Vec<_>, Box<dyn std::error::Error>> {
        let mut s = BatchSampler::new(seed);
        Ok((0..n)
            .map(|_| data.batch(split, batch, &mut s, &device))
            .collect::<Result<Vec<_>, _>>()?)
    };
    let calibration: Vec<_> = draw(target.upcycle.calibration_batches.max(1), Split::Train, 1)?
        .into_iter()
        .map(|(x, _)| x)
        .collect();
    let held_out = draw(
        target.upcycle.verify_batches.max(1),
        if data.has_val() { Split::Val } else { Split::Train },
        2,
    )?;
    println!(
        "teacher {} · student of `{}` · {} held-out batches of {}×{}",
        teacher.loaded.path.display(),
        target.name,
        held_out.len(),
        batch,
        data.block_size()
    );
    println!(
        "{:<28} {:>12} {:>12} {:>14}",
        "init", "student ppl", "ppl ratio", "mean attn L1"
    );
    let variants = [
        ("aligned (activation-aware)", DbaInit::Aligned, true),
        ("aligned (data-free)", DbaInit::Aligned, false),
        ("svd (original, version B)", DbaInit::Svd, false),
        ("random", DbaInit::Random, false),
    ];
    for (name, init, calibrated) in variants {
        let mut cfg = target.upcycle.clone();
        cfg.dba_init = init;
        let calib: &[_] = if calibrated { &calibration } else { &[] };
        let student = build_student(
            &teacher,
            &target.model,
            &cfg,
            1337,
            calib,
            &device,
            candle_core::DType::F32,
        )?;
        let v = verify(
            &teacher.loaded.model,
            &teacher.loaded.spec,
            &student.model,
            &target.model,
            &held_out,
        )?;
        let l1 = v.attention.iter().map(|l| l.mean_l1).sum::<f64>() / v.attention.len().max(1) as f64;
        println!(
            "{:<28} {:>12.2} {:>12.3} {:>14.4}   (teacher ppl {:.2})",
            name, v.student_perplexity, v.perplexity_ratio, l1, v.teacher_perplexity
        );
    }
    Ok(())
}
