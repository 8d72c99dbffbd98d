//! A session: the client, the budget and the transcript together. [`Session::ask`] is the one
//! way a process talks to the model: the budget admits the request (capping `max_tokens` and
//! the timeout), the request goes into the transcript, then the reply and its usage.

use std::time::Duration;

use super::budget::{Budget, BudgetReport};
use super::client::{ChatClient, Message, Reply, Sampling};
use super::error::AgentError;
use super::persona::Persona;
use super::target::EndpointSpec;
use super::transcript::{Entry, EntryKind, Transcript};

pub struct Session {
    pub client: ChatClient,
    pub budget: Budget,
    pub transcript: Transcript,
    temperature: f64,
    seed: u64,
    timeout: Duration,
}

impl Session {
    pub fn new(client: ChatClient, budget: Budget, transcript: Transcript, endpoint: &EndpointSpec) -> Self {
        Self {
            client,
            budget,
            transcript,
            temperature: endpoint.temperature,
            seed: endpoint.seed,
            timeout: Duration::from_secs_f64(endpoint.timeout_s),
        }
    }

    /// `persona` answers `prompt` (one user message after its system prompt), in at most
    /// `want` tokens.
    pub fn ask(&mut self, persona: &Persona, prompt: &str, want: usize) -> Result<Reply, AgentError> {
        let messages = vec![Message::system(&persona.system_prompt), Message::user(prompt)];
        self.send(&persona.name, messages, want, persona.temperature)
    }

    /// Send `messages` as `speaker`; budget-checked and recorded.
    pub fn send(
        &mut self,
        speaker: &str,
        messages: Vec<Message>,
        want: usize,
        temperature: Option<f64>,
    ) -> Result<Reply, AgentError> {
        let admit = self
            .budget
            .admit(want, self.timeout)
            .map_err(AgentError::Budget)?;
        let mut request = Entry::new(EntryKind::Request, speaker, "");
        request.max_tokens = Some(admit.max_tokens);
        request.messages = Some(messages.clone());
        self.transcript.push(request)?;
        let sampling = Sampling {
            max_tokens: admit.max_tokens,
            temperature: temperature.unwrap_or(self.temperature),
            // why: a different seed per request, still fixed by the manifest's seed.
            seed: self.seed.wrapping_add(self.budget.report().calls as u64),
            timeout: admit.timeout,
        };
        let reply = match self.client.chat(&messages, sampling) {
            Ok(r) => r,
            Err(e) => {
                self.transcript.note(format!("request failed: {e}"))?;
                return Err(e);
            }
        };
        self.budget.charge(&reply.usage);
        let mut entry = Entry::new(EntryKind::Reply, speaker, reply.text.clone());
        entry.usage = Some(reply.usage.clone());
        entry.finish_reason = reply.finish_reason.clone();
        entry.seconds = Some(reply.seconds);
        self.transcript.push(entry)?;
        Ok(reply)
    }

    pub fn report(&self) -> BudgetReport {
        self.budget.report()
    }
}
