//! Checks of a definition (when the catalogue loads) and of a destination's settings against
//! it (when a pipeline is validated, on both planes).

use serde_json::{Map, Value};

use super::definition::{Auth, BodyFormat, BodyTest, Definition, Setting, SettingKind};
use super::template;
use crate::spec::is_secret_name;

impl Definition {
    /// Everything wrong with the definition itself.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !is_key(&self.id) {
            out.push("id: a-z, 0-9 and _".into());
        }
        if self.docs.is_empty() {
            out.push("docs: cite at least one documentation page".into());
        }
        for (i, s) in self.settings.iter().enumerate() {
            if !is_key(&s.key) {
                out.push(format!("settings[{i}].key: a-z, 0-9 and _"));
            }
            if self.settings[..i].iter().any(|t| t.key == s.key) {
                out.push(format!("settings[{i}].key: duplicate {}", s.key));
            }
            if let Some(pattern) = &s.pattern
                && regex::Regex::new(pattern).is_err()
            {
                out.push(format!("settings[{i}].pattern: not a regular expression"));
            }
            if (s.kind == SettingKind::Enum) == s.values.is_empty() {
                out.push(format!(
                    "settings[{i}].values: an enum lists its values, and only an enum"
                ));
            }
            if let Some(default) = &s.default
                && let Err(problem) = value_problem(s, default)
            {
                out.push(format!("settings[{i}].default: {problem}"));
            }
        }
        if let Some(events) = &self.events {
            for (kind, name) in &events.types {
                if !["track", "page", "screen", "identify", "group", "alias"]
                    .contains(&kind.as_str())
                {
                    out.push(format!("events.types.{kind}: not an event type"));
                }
                template::problems(name, &format!("events.types.{kind}"), &mut out);
            }
        }
        template::problems(&self.payload, "payload", &mut out);
        match (&self.http, &self.warehouse) {
            (Some(http), None) => {
                self.interpolation_problems(&http.url, "http.url", &mut out);
                for (name, value) in &http.headers {
                    self.interpolation_problems(value, &format!("http.headers.{name}"), &mut out);
                }
                if let Some(key) = &http.headers_setting {
                    self.setting_of(key, SettingKind::Headers, "http.headers_setting", &mut out);
                }
                match &http.auth {
                    Some(Auth::Header { value, .. } | Auth::Query { value, .. }) => {
                        self.interpolation_problems(value, "http.auth.value", &mut out);
                    }
                    Some(Auth::Basic { username, password }) => {
                        self.interpolation_problems(username, "http.auth.username", &mut out);
                        self.interpolation_problems(password, "http.auth.password", &mut out);
                    }
                    Some(Auth::Oauth2 {
                        token_url,
                        client_id,
                        client_secret,
                        refresh_token,
                        ..
                    }) => {
                        for (field, text) in [
                            ("token_url", Some(token_url)),
                            ("client_id", Some(client_id)),
                            ("client_secret", Some(client_secret)),
                            ("refresh_token", refresh_token.as_ref()),
                        ] {
                            if let Some(text) = text {
                                self.interpolation_problems(
                                    text,
                                    &format!("http.auth.{field}"),
                                    &mut out,
                                );
                            }
                        }
                    }
                    None => {}
                }
                if let Some(signature) = &http.signature {
                    self.setting_of(
                        &signature.secret,
                        SettingKind::Secret,
                        "http.signature.secret",
                        &mut out,
                    );
                }
                match (http.body.format, &http.body.envelope) {
                    (BodyFormat::Envelope, Some(envelope)) => {
                        template::problems(envelope, "http.body.envelope", &mut out);
                        if !envelope.to_string().contains(r#"{"$events":true}"#) {
                            out.push("http.body.envelope: holds {\"$events\": true}".into());
                        }
                    }
                    (BodyFormat::Envelope, None) => {
                        out.push("http.body.envelope: an envelope template".into())
                    }
                    (_, Some(_)) => {
                        out.push("http.body.envelope: only with format envelope".into())
                    }
                    _ => {}
                }
            }
            (None, Some(warehouse)) => {
                self.setting_of(
                    &warehouse.connection,
                    SettingKind::Secret,
                    "warehouse.connection",
                    &mut out,
                );
                self.setting_of(
                    &warehouse.table,
                    SettingKind::String,
                    "warehouse.table",
                    &mut out,
                );
            }
            _ => out.push("exactly one of http and warehouse".into()),
        }
        let batch = &self.batch;
        if !(1..=10_000).contains(&batch.max_events) {
            out.push("batch.max_events: 1 to 10000".into());
        }
        if let Some(key) = &batch.max_events_setting {
            self.setting_of(
                key,
                SettingKind::Integer,
                "batch.max_events_setting",
                &mut out,
            );
        }
        if batch.max_bytes < 1024 {
            out.push("batch.max_bytes: at least 1024".into());
        }
        if batch.max_wait_ms > 60_000 {
            out.push("batch.max_wait_ms: at most 60000".into());
        }
        for (i, rule) in self.responses.iter().enumerate() {
            for status in &rule.status {
                if status_range(status).is_none() {
                    out.push(format!(
                        "responses[{i}].status: {status} is not a status, Nxx or a range"
                    ));
                }
            }
            for (j, test) in rule.body.iter().enumerate() {
                if tests_set(test) != 1 {
                    out.push(format!("responses[{i}].body[{j}]: exactly one test"));
                }
            }
        }
        for (i, requirement) in self.require.iter().enumerate() {
            if requirement.any_of.is_empty() {
                out.push(format!("require[{i}].any_of: at least one path"));
            }
        }
        out
    }

    /// `{settings.x}` and `{secrets.x}` must name settings (secrets: `secret` settings).
    fn interpolation_problems(&self, text: &str, at: &str, out: &mut Vec<String>) {
        for placeholder in placeholders(text) {
            match placeholder.split_once('.') {
                Some(("settings", key)) if self.setting(key).is_some() => {}
                Some(("secrets", key))
                    if self
                        .setting(key)
                        .is_some_and(|s| s.kind == SettingKind::Secret) => {}
                Some(("secrets", _)) => {
                    out.push(format!("{at}: {{{placeholder}}} names no secret setting"))
                }
                _ => out.push(format!("{at}: {{{placeholder}}} names no setting")),
            }
        }
    }

    fn setting_of(&self, key: &str, kind: SettingKind, at: &str, out: &mut Vec<String>) {
        if !self.setting(key).is_some_and(|s| s.kind == kind) {
            out.push(format!("{at}: {key} is not a {kind:?} setting"));
        }
    }

    /// Checks a destination's settings; `err` gets the setting's path under `at` (such as
    /// `destinations[0].settings`) and the problem.
    pub fn settings_problems(
        &self,
        settings: &Map<String, Value>,
        at: &str,
        err: &mut impl FnMut(String, &str),
    ) {
        for key in settings.keys() {
            if self.setting(key).is_none() {
                let known: Vec<&str> = self.settings.iter().map(|s| s.key.as_str()).collect();
                err(
                    format!("{at}.{key}"),
                    &format!("unknown setting; {} has {}", self.id, known.join(", ")),
                );
            }
        }
        for setting in &self.settings {
            match settings.get(&setting.key) {
                None | Some(Value::Null) if setting.required => {
                    err(format!("{at}.{}", setting.key), "required");
                }
                None | Some(Value::Null) => {}
                Some(Value::Object(headers)) if setting.kind == SettingKind::Headers => {
                    for (name, value) in headers {
                        if let Err(problem) = header_problem(name, value) {
                            err(format!("{at}.{}.{name}", setting.key), problem);
                        }
                    }
                }
                Some(value) => {
                    if let Err(problem) = value_problem(setting, value) {
                        err(format!("{at}.{}", setting.key), &problem);
                    }
                }
            }
        }
    }

    /// The settings with the definition's defaults filled in.
    pub fn with_defaults(&self, settings: &Map<String, Value>) -> Map<String, Value> {
        let mut out = settings.clone();
        out.retain(|_, v| !v.is_null());
        for setting in &self.settings {
            if let Some(default) = &setting.default {
                out.entry(setting.key.clone())
                    .or_insert_with(|| default.clone());
            }
        }
        out
    }
}

/// Why a value does not fit its setting.
fn value_problem(setting: &Setting, value: &Value) -> Result<(), String> {
    let hint = |fallback: &str| setting.hint.clone().unwrap_or_else(|| fallback.to_owned());
    match setting.kind {
        SettingKind::String | SettingKind::Url | SettingKind::Secret | SettingKind::Enum => {
            let Some(text) = value.as_str() else {
                return Err(hint("a string"));
            };
            if text.len() > 2048 || text.chars().any(char::is_control) {
                return Err(hint("at most 2048 bytes, without control characters"));
            }
            match setting.kind {
                SettingKind::Url => {
                    if let Some(problem) = crate::spec::url_problem(text) {
                        return Err(problem.to_owned());
                    }
                }
                SettingKind::Secret if !is_secret_name(text) => {
                    return Err(
                        "a secret name: A-Z, 0-9 and _, starting with a letter or _, at most 128"
                            .into(),
                    );
                }
                SettingKind::Enum if !setting.values.iter().any(|v| v == text) => {
                    return Err(hint(&format!("one of {}", setting.values.join(", "))));
                }
                _ => {}
            }
            if let Some(pattern) = &setting.pattern {
                let full = format!("^(?:{pattern})$");
                if !regex::Regex::new(&full).is_ok_and(|re| re.is_match(text)) {
                    return Err(hint(&format!("must match {pattern}")));
                }
            }
            Ok(())
        }
        SettingKind::Boolean if value.is_boolean() => Ok(()),
        SettingKind::Boolean => Err(hint("true or false")),
        SettingKind::Integer => {
            let n = value.as_i64().ok_or_else(|| hint("an integer"))?;
            let (min, max) = (
                setting.min.unwrap_or(i64::MIN),
                setting.max.unwrap_or(i64::MAX),
            );
            if !(min..=max).contains(&n) {
                return Err(format!("must be between {min} and {max}"));
            }
            Ok(())
        }
        SettingKind::Headers => {
            let Some(headers) = value.as_object() else {
                return Err(hint("header name → value"));
            };
            for (name, value) in headers {
                header_problem(name, value).map_err(|p| format!("{name}: {p}"))?;
            }
            Ok(())
        }
    }
}

fn header_problem(name: &str, value: &Value) -> Result<(), &'static str> {
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err("not a valid header name");
    }
    match value.as_str() {
        Some(v) if !v.chars().any(|c| c.is_control() && c != '\t') => Ok(()),
        _ => Err("header values must not contain control characters"),
    }
}

fn tests_set(test: &BodyTest) -> usize {
    [
        test.exists.is_some(),
        test.equals.is_some(),
        test.not_equals.is_some(),
        !test.one_of.is_empty(),
        test.non_empty.is_some(),
        test.between.is_some(),
        test.less_than_sent.is_some(),
    ]
    .into_iter()
    .filter(|set| *set)
    .count()
}

/// `200`, `2xx` or `400-499` as an inclusive range.
pub fn status_range(status: &str) -> Option<(u16, u16)> {
    let range = if let Some(first) = status.strip_suffix("xx") {
        let d: u16 = first.parse().ok()?;
        (d * 100, d * 100 + 99)
    } else if let Some((a, b)) = status.split_once('-') {
        (a.trim().parse().ok()?, b.trim().parse().ok()?)
    } else {
        let s: u16 = status.parse().ok()?;
        (s, s)
    };
    (100 <= range.0 && range.0 <= range.1 && range.1 <= 599).then_some(range)
}

/// The `{…}` placeholders of a string.
pub fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    text.split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(inner, _)| inner))
}

fn is_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
