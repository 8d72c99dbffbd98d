//! `multiplex_chat` (the seed's `brainstorm`): several personas and one shared transcript. A
//! message that starts with or contains `@role` goes to the named personas, in the order named;
//! any other message goes to every persona in a seeded random order. A persona's reply that
//! names another `@role` hands the word to it (at most `max_hops` hand-offs per message), so the
//! team talks among itself. Each persona's request holds its system prompt and the last
//! `history` messages of the shared transcript. Messages come from the manifest (`messages:`,
//! for scripted and tested runs) or, when it has none, from standard input (`/quit` or end of
//! input stops). The shared messages go to `chat.jsonl`; every request and reply to
//! `transcript.jsonl`.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::Message;
use super::error::AgentError;
use super::persona::Persona;
use super::session::Session;
use super::target::ProcessTarget;
use super::transcript::{Entry, EntryKind, Transcript};
use crate::layer::SpecProblem;

/// `process: {type: multiplex_chat, …}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MultiplexChatSpec {
    /// What the team discusses (the first line of the transcript). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The person's messages, in order. Default: none — read them from standard input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    /// Messages of the shared transcript in each request. Default: 40 (the seed's).
    #[serde(default = "default_history")]
    pub history: usize,
    /// Persona-to-persona hand-offs (`@role` in a reply) per message. Default: 1.
    #[serde(default = "default_hops")]
    pub max_hops: usize,
    /// Seed of the broadcast order. Default: 1337.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Tokens of one reply. Default: 128.
    #[serde(default = "default_reply_tokens")]
    pub reply_tokens: usize,
}

fn default_history() -> usize {
    40
}

fn default_hops() -> usize {
    1
}

fn default_seed() -> u64 {
    1337
}

fn default_reply_tokens() -> usize {
    128
}

impl MultiplexChatSpec {
    pub fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        if self.history == 0 {
            out.push(SpecProblem::new("history", "must be at least 1"));
        }
        if self.reply_tokens == 0 {
            out.push(SpecProblem::new("reply_tokens", "must be at least 1"));
        }
        if self.max_hops > 16 {
            out.push(SpecProblem::new("max_hops", "at most 16"));
        }
        for (i, m) in self.messages.iter().enumerate() {
            if m.trim().is_empty() {
                out.push(SpecProblem::new(format!("messages[{i}]"), "the message is empty"));
            }
        }
        out
    }
}

/// The team roles `text` addresses (`@role`), in order of first mention, each once.
pub fn mentions(text: &str, roles: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (at, _) in text.match_indices('@') {
        let name: String = text[at + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        if roles.contains(&name) && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Who answers a message from the person: the roles it names, else all in a seeded order.
pub fn route(text: &str, roles: &[String], seed: u64) -> Vec<String> {
    let named = mentions(text, roles);
    if !named.is_empty() {
        return named;
    }
    let mut all = roles.to_vec();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    all.shuffle(&mut rng);
    all
}

/// The request of `role`: its system prompt (and who it is in the chat), then the last
/// `history` shared messages.
pub fn persona_messages(
    persona: &Persona,
    role: &str,
    roles: &[String],
    shared: &[(String, String)],
    history: usize,
) -> Vec<Message> {
    let others: Vec<String> = roles
        .iter()
        .filter(|r| *r != role)
        .map(|r| format!("@{r}"))
        .collect();
    let system = format!(
        "{}\nYou are @{role} in a group chat with the user{}. Write only @{role}'s next message, briefly. Address a teammate as @name when you want their answer.",
        persona.system_prompt,
        if others.is_empty() {
            String::new()
        } else {
            format!(" and {}", others.join(", "))
        }
    );
    let start = shared.len().saturating_sub(history);
    let lines: Vec<String> = shared[start..]
        .iter()
        .map(|(who, text)| format!("[{who}]: {text}"))
        .collect();
    let user = format!(
        "The conversation so far:\n{}\n\nWrite @{role}'s next message.",
        lines.join("\n")
    );
    vec![Message::system(system), Message::user(user)]
}

/// Run the chat into `dir`; `summary.json`'s process part.
pub fn run(
    spec: &MultiplexChatSpec,
    target: &ProcessTarget,
    s: &mut Session,
    dir: &Path,
) -> Result<Value, AgentError> {
    let roles: Vec<String> = target.team.keys().cloned().collect();
    let mut personas = Vec::new();
    for role in &roles {
        let p = target
            .persona(role)
            .ok_or_else(|| AgentError::input(Path::new(&format!("team.{role}")), "no such persona"))?;
        personas.push((role.clone(), p));
    }
    let mut chat = Transcript::new(&dir.join("chat.jsonl"));
    let mut shared: Vec<(String, String)> = Vec::new();
    if let Some(topic) = &spec.topic {
        chat.push(Entry::new(EntryKind::Note, "topic", topic.clone()))?;
        shared.push(("topic".into(), topic.clone()));
    }
    let interactive = spec.messages.is_empty();
    let mut scripted = spec.messages.iter().cloned();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut stopped: Option<String> = None;
    let mut turns = 0usize;
    let mut replies = 0usize;
    'messages: loop {
        let text = if interactive {
            match lines.next() {
                Some(Ok(l)) if l.trim() == "/quit" => break,
                Some(Ok(l)) if l.trim().is_empty() => continue,
                Some(Ok(l)) => l,
                _ => break,
            }
        } else {
            match scripted.next() {
                Some(m) => m,
                None => break,
            }
        };
        turns += 1;
        chat.push(Entry::new(EntryKind::User, "user", text.clone()))?;
        s.transcript
            .push(Entry::new(EntryKind::User, "user", text.clone()))?;
        shared.push(("user".into(), text.clone()));
        let mut queue: VecDeque<String> = route(&text, &roles, spec.seed.wrapping_add(turns as u64)).into();
        let mut hops = 0;
        while let Some(role) = queue.pop_front() {
            let Some((_, persona)) = personas.iter().find(|(r, _)| *r == role) else {
                continue;
            };
            let messages = persona_messages(persona, &role, &roles, &shared, spec.history);
            let reply = match s.send(&role, messages, spec.reply_tokens, persona.temperature) {
                Ok(r) => r,
                Err(AgentError::Budget(why)) => {
                    s.transcript.note(format!("chat stopped: {why}"))?;
                    stopped = Some(why.to_string());
                    break 'messages;
                }
                Err(e) => return Err(e),
            };
            replies += 1;
            let said = reply.text.trim().to_string();
            if interactive {
                println!("[@{role}] {said}");
            }
            chat.push(Entry::new(EntryKind::Reply, &role, said.clone()))?;
            shared.push((format!("@{role}"), said.clone()));
            if hops < spec.max_hops {
                for next in mentions(&said, &roles) {
                    if next != role && !queue.contains(&next) && hops < spec.max_hops {
                        hops += 1;
                        queue.push_back(next);
                    }
                }
            }
        }
    }
    Ok(json!({
        "chat": "chat.jsonl",
        "roles": roles,
        "messages": turns,
        "replies": replies,
        "stopped": stopped,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> Vec<String> {
        vec!["engineer".into(), "skeptic".into(), "theorist".into()]
    }

    #[test]
    fn at_mentions_route_to_the_named_roles_in_order() {
        assert_eq!(
            route("@skeptic is it real? @engineer cost?", &roles(), 1),
            vec!["skeptic", "engineer"]
        );
        assert_eq!(route("@skeptic @skeptic again", &roles(), 1), vec!["skeptic"]);
        assert_eq!(
            mentions("mail me@nobody or @theorist-", &roles()),
            Vec::<String>::new()
        );
        assert_eq!(mentions("ask @theorist.", &roles()), vec!["theorist"]);
    }

    #[test]
    fn a_broadcast_reaches_everyone_in_a_seeded_order() {
        let a = route("what next?", &roles(), 7);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, roles());
        assert_eq!(a, route("what next?", &roles(), 7), "same seed, same order");
    }

    #[test]
    fn a_request_holds_the_persona_and_the_last_messages() {
        let p = Persona {
            name: "skeptic".into(),
            system_prompt: "Doubt.".into(),
            temperature: None,
        };
        let shared: Vec<(String, String)> = (0..50).map(|i| ("user".to_string(), format!("m{i}"))).collect();
        let m = persona_messages(&p, "skeptic", &roles(), &shared, 40);
        assert_eq!(m.len(), 2);
        assert!(
            m[0].content.starts_with(
                "Doubt.\nYou are @skeptic in a group chat with the user and @engineer, @theorist."
            )
        );
        assert!(!m[1].content.contains("[user]: m9\n"), "older than 40 left out");
        assert!(m[1].content.contains("[user]: m10\n"));
        assert!(
            m[1].content
                .ends_with("[user]: m49\n\nWrite @skeptic's next message.")
        );
    }
}
