//! `caramba chat`: talk with a model through its chat template (from `chat_template.jinja`, else
//! `tokenizer_config.json`, else the GGUF metadata), one user message per input line.

use std::io::{BufRead, IsTerminal};

use super::cache::{CacheArgs, resolve_auto};
use super::generate::SamplingArgs;
use super::model::{ModelArgs, load_model, tokenizer};
use super::{CliError, emit, failed};
use crate::infer::{ChatTemplate, GenerateConfig, Generator, Message, StopReason, TextStream};

/// `caramba chat`: an interactive conversation using the model's chat template.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// A system message opening the conversation.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: &ChatArgs) -> Result<(), CliError> {
    let load = args.model.resolve()?;
    let cache = args.cache.resolve();
    let cfg = args.sampling.resolve()?;
    let loaded = load_model(&args.model.model, &load)?;
    let tok = tokenizer(&loaded)?;
    let Some(source) = tok.chat_template.as_deref() else {
        return Err(CliError::usage(miette::miette!(
            help = "use `caramba generate --prompt` for models without one",
            "{}: the model has no chat template",
            loaded.path.display()
        )));
    };
    let name = |id: Option<u32>| id.and_then(|i| tok.token(i)).unwrap_or_default();
    let template = ChatTemplate::new(
        source,
        &name(tok.bos_token_id),
        &name(tok.eos_token_ids.first().copied()),
    )
    .map_err(CliError::usage)?;
    let cfg = GenerateConfig {
        eos_token_ids: tok.eos_token_ids.clone(),
        ..cfg
    };
    let cache = resolve_auto(&cache, &loaded)?;
    let mut generator = Generator::new(&loaded.model, loaded.max_seq_len, loaded.dtype, &loaded.device);
    if let Some(cache) = cache.cache_for(&loaded.model) {
        generator = generator.with_cache(cache);
    }
    let opening: Vec<Message> = args
        .system
        .iter()
        .map(|s| Message::new("system", s.clone()))
        .collect();
    let mut messages = opening.clone();
    let interactive = std::io::stdin().is_terminal();
    let mut out = std::io::stdout().lock();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| failed(format!("reading stdin: {e}")))?;
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = opening.clone();
                generator.reset();
                continue;
            }
            _ => {}
        }
        messages.push(Message::new("user", line));
        let text = template.render(&messages, true).map_err(failed)?;
        let ids = tok.encode(&text, false).map_err(failed)?;
        if ids.is_empty() {
            continue;
        }
        // Keep the cached prefix the new rendering shares; feed only the rest.
        let common = generator
            .tokens()
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count();
        let common = common.min(ids.len() - 1);
        generator
            .rollback(generator.tokens().len() - common)
            .map_err(failed)?;
        let mut stream_text = TextStream::new(tok, args.sampling.stop.clone());
        let mut stream = generator.stream(&ids[common..], &cfg);
        while let Some(t) = stream.next() {
            let t = t.map_err(failed)?;
            if cfg.eos_token_ids.contains(&t) {
                continue;
            }
            let delta = stream_text.push(t).map_err(failed)?;
            if !emit(&mut out, &delta)? {
                return Ok(());
            }
            if stream_text.stopped() {
                stream.stop(StopReason::StopString);
            }
        }
        let tail = stream_text.finish();
        emit(&mut out, &format!("{tail}\n"))?;
        messages.push(Message::new("assistant", stream_text.text().to_string()));
    }
    Ok(())
}
