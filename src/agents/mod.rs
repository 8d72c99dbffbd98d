//! Agents: process targets (`type: process`) that talk to a language model over OpenAI's HTTP
//! protocol — [`paper_write`], [`paper_review`], [`multiplex_chat`] and [`research_loop`], the
//! seed's agent workflows (`reference/caramba.md` §10.7).
//!
//! A process runs as: [`runner`] opens its run directory `runs/<name>/<target>/`; [`endpoint`]
//! connects to the manifest's `endpoint.url`, or starts `caramba serve` in-process on a free
//! localhost port; a [`session::Session`] sends chat requests through the [`client`] under a
//! [`budget`] (tokens, calls, wall time) and records every request and reply in the
//! [`transcript`]; the process writes its outputs atomically. A small model (SmolLM2-135M) writes
//! poor papers: the machinery — prompts, budgets, transcripts, outputs — is what the tests check.
//! See docs/agents.md.

pub mod budget;
pub mod client;
pub mod endpoint;
pub mod error;
pub mod facts;
pub mod lenient_json;
pub mod multiplex_chat;
pub mod paper_review;
pub mod paper_write;
pub mod persona;
pub mod research_loop;
pub mod runner;
pub mod session;
pub mod target;
pub mod transcript;
pub mod verdict;

use serde::{Deserialize, Serialize};

pub use error::AgentError;
pub use multiplex_chat::MultiplexChatSpec;
pub use paper_review::PaperReviewSpec;
pub use paper_write::PaperWriteSpec;
pub use research_loop::ResearchLoopSpec;
pub use runner::{ProcessOutcome, run_process};
pub use target::{BudgetSpec, EndpointSpec, ProcessTarget};

/// What a process target does: `process: {type: paper_write, …}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProcessSpec {
    /// Draft paper sections (Markdown or LaTeX) from a run's `report.json` and artifacts.
    PaperWrite(PaperWriteSpec),
    /// A structured JSON verdict on a paper at a strictness level.
    PaperReview(PaperReviewSpec),
    /// Several personas, `@name` routing, one shared transcript (the seed's `brainstorm` too).
    #[serde(alias = "brainstorm")]
    MultiplexChat(MultiplexChatSpec),
    /// Propose a manifest change, run it, read the result; N rounds under a budget.
    ResearchLoop(ResearchLoopSpec),
}

impl ProcessSpec {
    /// The `type:` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PaperWrite(_) => "paper_write",
            Self::PaperReview(_) => "paper_review",
            Self::MultiplexChat(_) => "multiplex_chat",
            Self::ResearchLoop(_) => "research_loop",
        }
    }

    /// The team roles this process speaks through, when it needs fixed ones (the chat takes
    /// every role of its team instead).
    pub fn roles(&self) -> &'static [&'static str] {
        match self {
            Self::PaperWrite(_) => &["writer"],
            Self::PaperReview(_) => &["reviewer"],
            Self::ResearchLoop(_) => &["researcher"],
            Self::MultiplexChat(_) => &[],
        }
    }

    /// Inconsistencies in the process's own fields (paths relative to `process`).
    pub fn problems(&self) -> Vec<crate::layer::SpecProblem> {
        match self {
            Self::PaperWrite(s) => s.problems(),
            Self::PaperReview(s) => s.problems(),
            Self::MultiplexChat(s) => s.problems(),
            Self::ResearchLoop(s) => s.problems(),
        }
    }
}
