use std::fmt;

use super::PipelineSpec;

/// A problem with a spec, located by its path (`destinations[2].webhook.url`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpecError {
    /// Where in the spec; empty for the document as a whole.
    pub path: String,
    pub message: String,
    /// The 1-based line in the source text, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl SpecError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            line: None,
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for SpecError {}

fn path_error<E: fmt::Display>(e: serde_path_to_error::Error<E>, line: Option<usize>) -> SpecError {
    let path = e.path().to_string();
    let message = e.inner().to_string();
    // The position is reported separately; keep the message about the content.
    let message = message.split(" at line ").next().unwrap_or(&message);
    // Some deserializers (YAML) put their own path first; say it once.
    let message = match message.split_once(": ") {
        Some((prefix, rest)) if path.starts_with(prefix) => rest.to_owned(),
        _ => message.to_owned(),
    };
    SpecError {
        path: if path == "." { String::new() } else { path },
        message,
        line,
    }
}

/// Parses a spec from JSON text.
pub fn parse_json(text: &str) -> Result<PipelineSpec, SpecError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let spec = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let line = Some(e.inner().line()).filter(|l| *l > 0);
        path_error(e, line)
    })?;
    de.end().map_err(|e| SpecError {
        path: String::new(),
        message: "trailing characters after the spec".into(),
        line: Some(e.line()),
    })?;
    Ok(spec)
}

/// Parses a spec from an already-decoded JSON value (the `spec` of a JSON request body).
pub fn parse_value(value: serde_json::Value) -> Result<PipelineSpec, SpecError> {
    serde_path_to_error::deserialize(value).map_err(|e| path_error(e, None))
}

/// Parses a spec from YAML text (one document). Scalars are typed as in JSON: YAML would read
/// `dataset: 42` into a string field as `"42"`, which hides a mistake, so a number, boolean or
/// null where a string is due is refused with a hint to quote it.
pub fn parse_yaml(text: &str) -> Result<PipelineSpec, SpecError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let spec = serde_path_to_error::deserialize(de).map_err(|e| {
        let line = e.inner().location().map(|l| l.line());
        let raw = e.inner().to_string();
        yaml_syntax(path_error(e, line), &raw)
    })?;
    let value: serde_json::Value = serde_yaml_ng::from_str(text)
        .map_err(|e| SpecError::new("", format!("not a YAML document: {e}")))?;
    parse_value(value).map_err(|mut e| {
        if e.message.contains("expected a string") {
            e.message = format!("{}; quote it if you mean the text", e.message);
        }
        e.line = line_of_path(text, &e.path);
        e
    })?;
    Ok(spec)
}

/// A YAML scanner error in words a person editing the spec can act on, at the line where the
/// mistake is rather than where the scanner gave up.
fn yaml_syntax(mut e: SpecError, raw: &str) -> SpecError {
    // A scanner error is about the text; the path where the reader happened to be (often
    // ending in `?`, a key it could not read) would point at the wrong thing.
    let scanner = raw.contains("while scanning") || raw.starts_with("could not find expected");
    if scanner || e.path.ends_with('?') {
        e.path.clear();
    }
    if let Some(rest) = raw.split("while scanning a simple key at line ").nth(1) {
        let line = rest.split(|c: char| !c.is_ascii_digit()).next();
        if let Some(line) = line.and_then(|l| l.parse().ok()) {
            e.line = Some(line);
        }
        e.message =
            "a key without a colon: write `key: value` (or `key:` with the value indented below)"
                .into();
    } else if e.message.starts_with("could not find expected ':'") {
        e.message = "a key without a colon: write `key: value`".into();
    }
    e
}

/// The first line whose key is each segment of `path` in turn (`archive.dataset`,
/// `destinations[1].webhook.url`): good enough to point at a value in a hand-written document.
fn line_of_path(text: &str, path: &str) -> Option<usize> {
    let keys: Vec<&str> = path
        .split('.')
        .map(|segment| segment.split('[').next().unwrap_or(segment))
        .filter(|k| !k.is_empty())
        .collect();
    let lines: Vec<&str> = text.lines().collect();
    let mut at = 0;
    let mut found = None;
    for key in keys {
        let quoted = format!("\"{key}\"");
        let plain = format!("{key}:");
        let hit = lines.iter().enumerate().skip(at).find(|(_, line)| {
            let t = line
                .trim_start()
                .trim_start_matches("- ")
                .trim_start_matches('{')
                .trim_start();
            t.starts_with(&plain) || t.starts_with(&quoted) || line.contains(&format!("{quoted}:"))
        })?;
        at = hit.0;
        found = Some(hit.0 + 1);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_where_a_string_is_due_is_refused_at_its_line() {
        let yaml = "# the web pipeline\nsources:\n  - name: web\narchive:\n  dataset: 42\n";
        let e = parse_yaml(yaml).expect_err("42 is not a dataset name");
        assert_eq!(e.path, "archive.dataset");
        assert_eq!(e.line, Some(5), "{e:?}");
        assert!(e.message.contains("quote it"), "{}", e.message);
        let json =
            "{\n  \"sources\": [{\"name\": \"web\"}],\n  \"archive\": {\"dataset\": 42}\n}\n";
        assert_eq!(
            parse_yaml(json).expect_err("as JSON too").path,
            "archive.dataset"
        );
        assert!(parse_yaml("sources:\n  - name: web\narchive:\n  dataset: \"42\"\n").is_ok());
    }

    #[test]
    fn a_missing_colon_is_named_at_the_key() {
        let e = parse_yaml("sources:\n  - name: web\narchive\n  dataset: events\n")
            .expect_err("no colon");
        assert!(e.path.is_empty() && e.message.contains("colon"), "{e:?}");
        assert_eq!(e.line, Some(3), "{e:?}");
    }
}
