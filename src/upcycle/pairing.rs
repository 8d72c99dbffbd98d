//! Teacher and student topologies matched leaf by leaf: the k-th layer of one is the k-th layer
//! of the other, whatever their nesting. Every pair must be the same kind of layer, except that a
//! standard/GQA attention may become a decoupled one.

use crate::layer::AttentionSpec;
use crate::model::ModelSpec;
use crate::topology::NodeSpec;

/// A leaf layer and its parameter path prefix (as `LanguageModel::build` names it).
#[derive(Debug, Clone)]
pub struct Leaf<'a> {
    pub path: String,
    pub spec: &'a NodeSpec,
}

/// Leaves of a lowered model in execution order.
pub fn leaves(model: &ModelSpec) -> Vec<Leaf<'_>> {
    let mut out = Vec::new();
    walk(&model.topology, "topology".to_string(), &mut out);
    out
}

fn walk<'a>(node: &'a NodeSpec, path: String, out: &mut Vec<Leaf<'a>>) {
    match node.children() {
        None => out.push(Leaf { path, spec: node }),
        Some((children, repeat)) => {
            let all = std::iter::repeat_n(children, repeat).flatten();
            for (i, child) in all.enumerate() {
                walk(child, format!("{path}.layers.{i}"), out);
            }
        }
    }
}

/// One matched pair.
#[derive(Debug, Clone)]
pub struct Pair<'a> {
    pub teacher: Leaf<'a>,
    pub student: Leaf<'a>,
}

impl Pair<'_> {
    /// The student's decoupled attention spec when this pair is a surgery site.
    pub fn surgery_site(&self) -> Option<(&AttentionSpec, &AttentionSpec)> {
        match (self.teacher.spec, self.student.spec) {
            (NodeSpec::Attention(t), NodeSpec::Attention(s))
                if s.decoupled().is_some() && t.decoupled().is_none() =>
            {
                Some((t, s))
            }
            _ => None,
        }
    }
}

/// Match teacher and student leaves; a clear message when they do not line up.
pub fn pair<'a>(teacher: &'a ModelSpec, student: &'a ModelSpec) -> Result<Vec<Pair<'a>>, String> {
    let (t, s) = (leaves(teacher), leaves(student));
    if t.len() != s.len() {
        return Err(format!(
            "the teacher has {} layers and the student {}: the student must mirror the teacher's layers",
            t.len(),
            s.len()
        ));
    }
    if teacher.tied_embeddings != student.tied_embeddings {
        return Err(format!(
            "the teacher {} its embeddings and the student {}",
            if teacher.tied_embeddings {
                "ties"
            } else {
                "does not tie"
            },
            if student.tied_embeddings {
                "does"
            } else {
                "does not"
            }
        ));
    }
    t.into_iter()
        .zip(s)
        .enumerate()
        .map(|(k, (t, s))| {
            let same_kind = t.spec.type_name() == s.spec.type_name();
            if !same_kind {
                return Err(format!(
                    "layer {k}: teacher `{}` is a {}, student `{}` is a {}",
                    t.path,
                    t.spec.type_name(),
                    s.path,
                    s.spec.type_name()
                ));
            }
            if let (NodeSpec::Attention(ta), NodeSpec::Attention(sa)) = (t.spec, s.spec) {
                if ta.d_model != sa.d_model || ta.n_heads != sa.n_heads || ta.kv_heads() != sa.kv_heads() {
                    return Err(format!(
                        "layer {k} (`{}`): attention shapes differ: teacher d_model {} with {}/{} heads, student {} with {}/{}",
                        s.path,
                        ta.d_model,
                        ta.n_heads,
                        ta.kv_heads(),
                        sa.d_model,
                        sa.n_heads,
                        sa.kv_heads()
                    ));
                }
            }
            Ok(Pair { teacher: t, student: s })
        })
        .collect()
}
