//! A strict, error-collecting reader over parsed YAML.
//!
//! serde stops at the first error; an operator fixing a config wants every mistake at once, each
//! with its YAML path (`routes[2].upstream`). [`Section`] walks a mapping, flags unknown keys, and
//! records a [`ConfigError`] for each wrong value while the caller keeps going with defaults.
//! The value readers every section shares (file paths, networks, the environment) live here too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::access::Cidr;

/// One problem in a configuration file, located by its YAML path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Where the problem is, e.g. `routes[1].upstream`.
    pub path: String,
    /// What is wrong, in words an operator can act on. Never contains a secret.
    pub message: String,
}

/// Every error found while reading one file.
#[derive(Debug, Default)]
pub struct Diagnostics {
    /// The errors, in the order they were found.
    pub errors: Vec<ConfigError>,
}

impl Diagnostics {
    /// Records an error at `path`.
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Joins a parent path and a key: `""` + `routes` → `routes`, `upstream` + `ca_file` →
/// `upstream.ca_file`.
pub fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// A YAML mapping whose keys have been checked against the allowed set.
pub struct Section<'a> {
    path: String,
    map: &'a Mapping,
}

impl<'a> Section<'a> {
    /// Opens `value` as a mapping at `path`, recording an error for every key not in `allowed`.
    /// Returns `None` (with an error) when `value` is not a mapping.
    pub fn open(
        value: &'a Value,
        path: &str,
        allowed: &[&str],
        diag: &mut Diagnostics,
    ) -> Option<Section<'a>> {
        let Some(map) = value.as_mapping() else {
            let shown = if path.is_empty() { "(top level)" } else { path };
            diag.error(shown, format!("expected a mapping, found {}", kind(value)));
            return None;
        };
        for key in map.keys() {
            match key.as_str() {
                Some(k) if allowed.contains(&k) => {}
                Some(k) => diag.error(
                    child_path(path, k),
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                ),
                None => diag.error(path, "keys must be strings"),
            }
        }
        Some(Section {
            path: path.to_string(),
            map,
        })
    }

    /// This section's own path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of `key` inside this section.
    pub fn path_of(&self, key: &str) -> String {
        child_path(&self.path, key)
    }

    /// The raw value under `key`; an explicit `null` counts as absent.
    pub fn value(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is present (and not null).
    pub fn has(&self, key: &str) -> bool {
        self.value(key).is_some()
    }

    /// A nested section under `key`, if present.
    pub fn section(
        &self,
        key: &str,
        allowed: &[&str],
        diag: &mut Diagnostics,
    ) -> Option<Section<'a>> {
        let value = self.value(key)?;
        Section::open(value, &self.path_of(key), allowed, diag)
    }

    /// A non-empty string under `key`.
    pub fn string(&self, key: &str, diag: &mut Diagnostics) -> Option<String> {
        let value = self.value(key)?;
        match value.as_str() {
            Some("") => {
                diag.error(self.path_of(key), "must not be empty");
                None
            }
            Some(s) => Some(s.to_string()),
            None => {
                diag.error(
                    self.path_of(key),
                    format!("expected a string, found {}", kind(value)),
                );
                None
            }
        }
    }

    /// A boolean under `key`.
    pub fn boolean(&self, key: &str, diag: &mut Diagnostics) -> Option<bool> {
        let value = self.value(key)?;
        let parsed = value.as_bool();
        if parsed.is_none() {
            diag.error(
                self.path_of(key),
                format!("expected true or false, found {}", kind(value)),
            );
        }
        parsed
    }

    /// A whole number in `min..=max` under `key`.
    pub fn number(&self, key: &str, min: u64, max: u64, diag: &mut Diagnostics) -> Option<u64> {
        let value = self.value(key)?;
        match value.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                diag.error(
                    self.path_of(key),
                    format!(
                        "expected a whole number from {min} to {max}, found {}",
                        describe(value)
                    ),
                );
                None
            }
        }
    }

    /// A human duration (`500ms`, `5s`, `10m`, `1h`) under `key`, greater than zero.
    pub fn duration(&self, key: &str, diag: &mut Diagnostics) -> Option<Duration> {
        let value = self.value(key)?;
        let parsed = value
            .as_str()
            .and_then(|s| humantime::parse_duration(s.trim()).ok())
            .filter(|d| !d.is_zero());
        if parsed.is_none() {
            diag.error(
                self.path_of(key),
                format!(
                    "expected a duration greater than zero such as \"5s\" or \"10m\", found {}",
                    describe(value)
                ),
            );
        }
        parsed
    }

    /// The items of a list under `key`, each with its path (`key[i]`). Absent → empty.
    pub fn list(&self, key: &str, diag: &mut Diagnostics) -> Vec<(String, &'a Value)> {
        let Some(value) = self.value(key) else {
            return Vec::new();
        };
        let Some(items) = value.as_sequence() else {
            diag.error(
                self.path_of(key),
                format!("expected a list, found {}", kind(value)),
            );
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| (format!("{}[{i}]", self.path_of(key)), item))
            .collect()
    }

    /// The items of a list of strings under `key`, each parsed by `parse` (whose error is
    /// recorded at the item's path). `hint` says what a string should look like.
    pub fn parsed_list<T>(
        &self,
        key: &str,
        hint: &str,
        parse: impl Fn(&str) -> Result<T, String>,
        diag: &mut Diagnostics,
    ) -> Vec<T> {
        let items = self.list(key, diag);
        items
            .into_iter()
            .filter_map(|(path, value)| match value.as_str().map(&parse) {
                Some(Ok(parsed)) => Some(parsed),
                Some(Err(e)) => {
                    diag.error(path, e);
                    None
                }
                None => {
                    diag.error(path, format!("expected a string ({hint})"));
                    None
                }
            })
            .collect()
    }

    /// Like [`Section::list`], but an absent or empty list is an error: "at least one `what` is
    /// required".
    pub fn non_empty_list(
        &self,
        key: &str,
        what: &str,
        diag: &mut Diagnostics,
    ) -> Vec<(String, &'a Value)> {
        let errors_before = diag.errors.len();
        let items = self.list(key, diag);
        if items.is_empty() && diag.errors.len() == errors_before {
            diag.error(
                self.path_of(key),
                format!("at least one {what} is required"),
            );
        }
        items
    }
}

/// The YAML kind of a value, for error messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A short rendering of a scalar for error messages (`"abc"`, `42`), or its kind.
pub fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => kind(other).to_string(),
    }
}

/// Looks up an environment variable. Passed in (rather than read from the process) so tests can
/// supply their own environment.
pub type Env = dyn Fn(&str) -> Option<String>;

/// `path` as written in the config: relative paths are relative to `base_dir` (the config
/// file's folder).
pub fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// Records an error unless `path` is a readable file.
pub fn checked_file(path: &Path, field: &str, diag: &mut Diagnostics) -> PathBuf {
    if let Err(e) = std::fs::File::open(path) {
        diag.error(field, format!("cannot read {}: {e}", path.display()));
    }
    path.to_path_buf()
}

/// A list of networks under `key` (absent → empty).
pub fn cidr_list(s: &Section<'_>, key: &str, diag: &mut Diagnostics) -> Vec<Cidr> {
    s.parsed_list(key, "a network like 10.0.0.0/8", Cidr::parse, diag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).expect("test yaml parses")
    }

    #[test]
    fn collects_unknown_keys_and_bad_values_together() {
        let doc = yaml("a: 1\nb: nope\nc: 5x\nzzz: 1\n");
        let mut diag = Diagnostics::default();
        let s = Section::open(&doc, "top", &["a", "b", "c"], &mut diag).expect("mapping");
        assert_eq!(s.number("a", 0, 10, &mut diag), Some(1));
        assert_eq!(s.boolean("b", &mut diag), None);
        assert_eq!(s.duration("c", &mut diag), None);
        let paths: Vec<_> = diag.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["top.zzz", "top.b", "top.c"]);
    }

    #[test]
    fn durations_are_human() {
        let doc = yaml("a: 5s\nb: 10m\nc: 250ms\nd: 0s\n");
        let mut diag = Diagnostics::default();
        let s = Section::open(&doc, "", &["a", "b", "c", "d"], &mut diag).expect("mapping");
        assert_eq!(s.duration("a", &mut diag), Some(Duration::from_secs(5)));
        assert_eq!(s.duration("b", &mut diag), Some(Duration::from_secs(600)));
        assert_eq!(s.duration("c", &mut diag), Some(Duration::from_millis(250)));
        assert_eq!(s.duration("d", &mut diag), None);
        assert_eq!(diag.errors.len(), 1);
    }

    #[test]
    fn list_items_carry_their_index() {
        let doc = yaml("routes: [x, y]\n");
        let mut diag = Diagnostics::default();
        let s = Section::open(&doc, "", &["routes"], &mut diag).expect("mapping");
        let items = s.list("routes", &mut diag);
        assert_eq!(items[1].0, "routes[1]");
    }
}
