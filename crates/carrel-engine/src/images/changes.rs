//! `--change` / `-c` instructions of `import` and `commit`: the Dockerfile instructions that only
//! change the image config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER,
//! VOLUME, WORKDIR), applied as Docker applies them.

use std::collections::BTreeMap;

use super::config::RunConfig;
use crate::{EngineError, Result};

fn err(msg: String) -> EngineError {
    EngineError::InvalidArgument(msg)
}

/// Apply each change to `config`, in order.
pub fn apply_changes(config: &mut RunConfig, changes: &[String]) -> Result<()> {
    for change in changes {
        apply_one(config, change)?;
    }
    Ok(())
}

fn apply_one(config: &mut RunConfig, change: &str) -> Result<()> {
    let line = change.trim();
    if line.is_empty() {
        return Ok(());
    }
    let (instr, rest) = match line.split_once(char::is_whitespace) {
        Some((i, r)) => (i, r.trim()),
        None => (line, ""),
    };
    let upper = instr.to_ascii_uppercase();
    match upper.as_str() {
        "CMD" => config.cmd = Some(command_form(rest)),
        "ENTRYPOINT" => config.entrypoint = Some(command_form(rest)),
        "ENV" => {
            let env = config.env.get_or_insert_with(Vec::new);
            for (k, v) in key_values(rest, "ENV")? {
                env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
                env.push(format!("{k}={v}"));
            }
        }
        "LABEL" => {
            let labels = config.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in key_values(rest, "LABEL")? {
                labels.insert(k, v);
            }
        }
        "EXPOSE" => {
            if rest.is_empty() {
                return Err(err("EXPOSE requires at least one argument".into()));
            }
            let ports = config.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in rest.split_whitespace() {
                let p = if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                };
                ports.insert(p, serde_json::json!({}));
            }
        }
        "VOLUME" => {
            let vols = config.volumes.get_or_insert_with(BTreeMap::new);
            let list = match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) => v,
                Err(_) => rest.split_whitespace().map(String::from).collect(),
            };
            if list.is_empty() || list.iter().any(|v| v.trim().is_empty()) {
                return Err(err("VOLUME specified can not be an empty string".into()));
            }
            for v in list {
                vols.insert(v, serde_json::json!({}));
            }
        }
        "WORKDIR" => {
            if rest.is_empty() {
                return Err(err("WORKDIR requires exactly one argument".into()));
            }
            config.working_dir = if rest.starts_with('/') || config.working_dir.is_empty() {
                carrel_core::fs::clean_absolute(std::path::Path::new(&format!("/{rest}")))
                    .display()
                    .to_string()
            } else {
                carrel_core::fs::clean_absolute(
                    &std::path::Path::new(&config.working_dir).join(rest),
                )
                .display()
                .to_string()
            };
        }
        "USER" => {
            if rest.is_empty() {
                return Err(err("USER requires exactly one argument".into()));
            }
            config.user = rest.to_string();
        }
        "STOPSIGNAL" => {
            if rest.is_empty() {
                return Err(err("STOPSIGNAL requires exactly one argument".into()));
            }
            config.stop_signal = Some(rest.to_string());
        }
        "ONBUILD" => config
            .on_build
            .get_or_insert_with(Vec::new)
            .push(rest.to_string()),
        "FROM" | "RUN" | "COPY" | "ADD" | "ARG" | "MAINTAINER" | "HEALTHCHECK" | "SHELL" => {
            return Err(err(format!("{upper} is not a valid change command")));
        }
        _ => {
            return Err(err(format!(
                "dockerfile parse error on line 1: unknown instruction: {instr}"
            )));
        }
    }
    Ok(())
}

/// JSON form (`["sh", "-c", "x"]`) or shell form (`echo hi` → `["/bin/sh", "-c", "echo hi"]`).
fn command_form(rest: &str) -> Vec<String> {
    if rest.starts_with('[')
        && let Ok(v) = serde_json::from_str::<Vec<String>>(rest)
    {
        return v;
    }
    vec!["/bin/sh".into(), "-c".into(), rest.to_string()]
}

/// `k=v k2="v 2"` pairs, or the legacy `k v with spaces` form.
fn key_values(rest: &str, instr: &str) -> Result<Vec<(String, String)>> {
    if rest.is_empty() {
        return Err(err(format!("{instr} requires at least one argument")));
    }
    let words = split_words(rest);
    if !words.first().is_some_and(|w| w.contains('=')) {
        let (k, v) = match rest.split_once(char::is_whitespace) {
            Some((k, v)) => (k.to_string(), v.trim().to_string()),
            None => return Err(err(format!("{instr} must have two arguments"))),
        };
        return Ok(vec![(k, v)]);
    }
    let mut out = Vec::new();
    for w in words {
        match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            _ => {
                return Err(err(format!(
                    "{instr} names can not be blank or contain only '=': {w}"
                )));
            }
        }
    }
    Ok(out)
}

/// Split on whitespace, honouring double and single quotes and backslash escapes.
fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (q, '\\') if q != Some('\'') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(changes: &[&str]) -> Result<RunConfig> {
        let mut c = RunConfig::default();
        apply_changes(
            &mut c,
            &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )?;
        Ok(c)
    }

    #[test]
    fn applies_docker_changes() {
        let c = apply(&[
            r#"CMD ["sh", "-c", "echo hi"]"#,
            "ENTRYPOINT /bin/run it",
            "ENV A=1 B=\"two words\"",
            "ENV C three four",
            "ENV A=override",
            "LABEL x=y",
            "EXPOSE 80 53/udp",
            "VOLUME /data /logs",
            "WORKDIR /app",
            "WORKDIR sub",
            "USER 1000:1000",
            "STOPSIGNAL SIGINT",
        ])
        .unwrap();
        assert_eq!(c.cmd.unwrap(), vec!["sh", "-c", "echo hi"]);
        assert_eq!(c.entrypoint.unwrap(), vec!["/bin/sh", "-c", "/bin/run it"]);
        assert_eq!(
            c.env.unwrap(),
            vec!["B=two words", "C=three four", "A=override"]
        );
        assert_eq!(c.labels.unwrap()["x"], "y");
        assert!(c.exposed_ports.as_ref().unwrap().contains_key("80/tcp"));
        assert!(c.exposed_ports.unwrap().contains_key("53/udp"));
        assert_eq!(c.volumes.unwrap().len(), 2);
        assert_eq!(c.working_dir, "/app/sub");
        assert_eq!(c.user, "1000:1000");
        assert_eq!(c.stop_signal.unwrap(), "SIGINT");
    }

    #[test]
    fn refuses_bad_changes() {
        assert_eq!(
            apply(&["RUN echo"]).unwrap_err().to_string(),
            "RUN is not a valid change command"
        );
        assert!(
            apply(&["BOGUS x"])
                .unwrap_err()
                .to_string()
                .contains("unknown instruction: BOGUS")
        );
        assert!(apply(&["ENV"]).is_err());
        assert!(apply(&["ENV =x"]).is_err());
    }
}
