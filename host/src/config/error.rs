//! Configuration errors that say where: the file, the line (and column, for syntax and type
//! errors) and the key, e.g. `sluice.toml: line 7: tenant[1] (b).failure_mode: `tempfail` or
//! `continue`, not "explode"`.

use toml::de::{DeTable, DeValue};

/// A configuration error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {}", self.located())]
pub struct ConfigError {
    /// The file (or "embedded default configuration").
    pub source_name: String,
    /// The line of the key, when it could be found.
    pub line: Option<usize>,
    /// The column, for syntax and type errors.
    pub column: Option<usize>,
    /// The key, as a path such as `tenant[1] (b).failure_mode`, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about the file as a whole (it cannot be read).
    pub fn file(source_name: &str, message: String) -> Self {
        Self { source_name: source_name.to_string(), line: None, column: None, key: None, message }
    }

    /// An error the checks found about `key`, located in `text`.
    pub(super) fn at_key(source_name: &str, text: &str, key: String, message: String) -> Self {
        Self {
            source_name: source_name.to_string(),
            line: key_line(text, &key),
            column: None,
            key: Some(key),
            message,
        }
    }

    /// A syntax or type error of the TOML reader, located in `text`.
    pub(super) fn toml(source_name: &str, text: &str, error: &toml::de::Error) -> Self {
        let message = error.message().trim().to_string();
        let (mut line, mut column, mut key) = (None, None, None);
        if let Some(span) = error.span() {
            let before = &text[..span.start.min(text.len())];
            line = Some(before.matches('\n').count() + 1);
            column = Some(before.rsplit('\n').next().map(|l| l.chars().count() + 1).unwrap_or(1));
            key = key_at(text, span.start);
            // An element of an array: the reader points at the array; the message names the
            // value, which tells the element.
            if let Some((index, element_line)) = key.as_deref().and_then(|k| element_named(text, k, &message))
            {
                key = key.map(|k| format!("{k}[{index}]"));
                (line, column) = (Some(element_line), None);
            }
        }
        Self { source_name: source_name.to_string(), line, column, key, message }
    }

    fn located(&self) -> String {
        let mut out = String::new();
        match (self.line, self.column) {
            (Some(line), Some(column)) => out.push_str(&format!("line {line}, column {column}: ")),
            (Some(line), None) => out.push_str(&format!("line {line}: ")),
            _ => {}
        }
        if let Some(key) = &self.key
            && !self.message.contains(key.as_str())
        {
            out.push_str(key);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        out
    }
}

/// A path step's name and, for an array, its index: `tenant[2] (label)` → (`tenant`, 2).
fn step(part: &str) -> (&str, Option<usize>) {
    let part = part.split(" (").next().unwrap_or(part);
    match part.split_once('[') {
        Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
        None => (part, None),
    }
}

/// The line of the key a check names, such as `tenant[1] (example).policy[0].config.x` (the
/// deepest part of the path that is in the file, when the last key is missing).
pub(super) fn key_line(text: &str, path: &str) -> Option<usize> {
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut value: Option<&DeValue<'_>> = None;
    let mut span = None;
    for part in path.split('.') {
        let (name, index) = step(part);
        if let Some(DeValue::Table(t)) = value {
            table = t;
        }
        let Some((key, found)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name) else { break };
        span = Some(key.span());
        value = Some(found.get_ref());
        if let Some(i) = index {
            let DeValue::Array(items) = found.get_ref() else { break };
            let Some(item) = items.get(i) else { break };
            span = Some(item.span());
            value = Some(item.get_ref());
        }
    }
    let start = span?.start.min(text.len());
    Some(text[..start].matches('\n').count() + 1)
}

/// The key whose value holds byte `at` of `text`, as a path (`tenant[1] (b).failure_mode`).
fn key_at(text: &str, at: usize) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    let mut path = String::new();
    let mut table = doc.get_ref();
    loop {
        // The key whose value (or, for a table, whose entries) contains the position; failing
        // that, the last key before it.
        let mut best = None;
        for (key, value) in table.iter() {
            let inside =
                value.span().contains(&at) || (key.span().start <= at && contains_deep(value.get_ref(), at));
            if inside {
                best = Some((key, value));
                break;
            }
        }
        let (key, value) = best?;
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key.get_ref());
        match value.get_ref() {
            DeValue::Table(inner) => table = inner,
            DeValue::Array(items) => {
                let Some((i, item)) = items
                    .iter()
                    .enumerate()
                    .find(|(_, item)| item.span().contains(&at) || contains_deep(item.get_ref(), at))
                else {
                    return Some(path);
                };
                path.push_str(&format!("[{i}]"));
                let DeValue::Table(inner) = item.get_ref() else { return Some(path) };
                if let Some(name) = inner.iter().find(|(k, _)| k.get_ref() == "name")
                    && let DeValue::String(name) = name.1.get_ref()
                {
                    path.push_str(&format!(" ({name})"));
                }
                table = inner;
            }
            _ => return Some(path),
        }
    }
}

/// Whether some value inside `value` spans byte `at`.
fn contains_deep(value: &DeValue<'_>, at: usize) -> bool {
    match value {
        DeValue::Table(table) => table
            .iter()
            .any(|(k, v)| k.span().contains(&at) || v.span().contains(&at) || contains_deep(v.get_ref(), at)),
        DeValue::Array(items) => {
            items.iter().any(|item| item.span().contains(&at) || contains_deep(item.get_ref(), at))
        }
        _ => false,
    }
}

/// The element of the array at `path` whose string value `message` quotes: (index, line).
fn element_named(text: &str, path: &str, message: &str) -> Option<(usize, usize)> {
    let doc = DeTable::parse(text).ok()?;
    let mut value: Option<&DeValue<'_>> = None;
    let mut table = doc.get_ref();
    for part in path.split('.') {
        let (name, index) = step(part);
        if let Some(DeValue::Table(t)) = value {
            table = t;
        }
        let (_, found) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
        value = Some(found.get_ref());
        if let Some(i) = index {
            let DeValue::Array(items) = found.get_ref() else { return None };
            value = Some(items.get(i)?.get_ref());
        }
    }
    let DeValue::Array(items) = value? else { return None };
    items.iter().enumerate().find_map(|(i, item)| match item.get_ref() {
        DeValue::String(s) if message.contains(&format!("{s:?}")) => {
            let start = item.span().start.min(text.len());
            Some((i, text[..start].matches('\n').count() + 1))
        }
        _ => None,
    })
}
