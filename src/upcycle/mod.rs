//! The flagship: Llama → Decoupled Bottleneck Attention by surgery, then distillation.

pub mod surgery;

pub use surgery::{DbaInit, SurgeryError, TeacherAttention, surgery};
