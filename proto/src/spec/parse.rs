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

/// Parses a spec from YAML text (one document).
pub fn parse_yaml(text: &str) -> Result<PipelineSpec, SpecError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let line = e.inner().location().map(|l| l.line());
        path_error(e, line)
    })
}
