//! The YAML tree the configuration layers are applied to before it becomes
//! a typed [`super::Config`]: reading files, setting dotted keys, merging a
//! section file, and the one deserialization, whose errors name the key.

use std::path::Path;

use anyhow::{anyhow, Context};
use serde_yaml_ng::Value;

/// An empty tree (no file).
pub fn empty() -> Value {
    Value::Mapping(Default::default())
}

/// A YAML file as a tree; an empty file is an empty tree.
pub fn read_file(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read config file {} (named by --config or STREAMFORGE_CONFIG; without \
                 either, config/pipeline.yaml is read when it exists)",
            path.display()
        )
    })?;
    let value: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| anyhow!("config file {}: {e}", path.display()))?;
    Ok(if value.is_null() { empty() } else { value })
}

/// A problem for each environment variable `STREAMFORGE_A_B` (one
/// underscore after the prefix) that reads as a key of `shape` with some of
/// its underscores taken as dots: a setting written with single
/// underscores, which would otherwise be ignored without a word. Names
/// that read as no key (`STREAMFORGE_CONFIG`, a secret's variable) are not
/// settings and pass.
pub fn misspelled_settings(env: &[(String, String)], shape: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (var, _) in env {
        let Some(rest) = var.strip_prefix("STREAMFORGE_") else {
            continue;
        };
        if rest.starts_with('_') || rest.is_empty() {
            continue;
        }
        let words: Vec<String> = rest.split('_').map(str::to_ascii_lowercase).collect();
        if words.len() > 12 || words.iter().any(String::is_empty) {
            continue;
        }
        // Each gap between words is an underscore of a key or a dot.
        let key = (0u32..1 << (words.len() - 1)).find_map(|dots| {
            let mut key = words[0].clone();
            for (i, w) in words[1..].iter().enumerate() {
                key.push(if dots >> i & 1 == 1 { '.' } else { '_' });
                key.push_str(w);
            }
            get(shape, &key).filter(|v| !v.is_mapping()).map(|_| key)
        });
        if let Some(key) = key {
            let right = format!(
                "STREAMFORGE__{}",
                key.to_ascii_uppercase().replace('.', "__")
            );
            problems.push(Problem {
                key: key.clone(),
                message: format!(
                    "environment variable {var} is not read: a setting's variable separates sections \
                     with two underscores. Rename it {right}"
                ),
            });
        }
    }
    problems
}

/// Applies `(origin, dotted key, YAML value)` layers in order.
///
/// `shape` is a tree of the same schema whose leaves have the right types
/// (the defaults): where it holds a string, a value that YAML reads as a
/// number or a boolean stays the text it was given, so
/// `STREAMFORGE__KAFKA__TOPIC=2024` names topic "2024" and
/// `--metrics-addr 9464` reaches the check that explains the address form
/// instead of a type error.
pub fn apply(
    tree: &mut Value,
    layers: &[(String, String, String)],
    shape: &Value,
) -> anyhow::Result<()> {
    for (origin, key, value) in layers {
        set_path(tree, key, value, shape).map_err(|e| anyhow!("{origin}: {e}"))?;
    }
    Ok(())
}

/// The node at a dotted key, if there is one.
fn get<'a>(tree: &'a Value, dotted: &str) -> Option<&'a Value> {
    let mut node = tree;
    for part in dotted.split('.') {
        node = node.as_mapping()?.get(Value::String(part.to_string()))?;
    }
    Some(node)
}

/// The string at a dotted key, if there is one.
pub fn get_str(tree: &Value, dotted: &str) -> Option<String> {
    get(tree, dotted)?.as_str().map(str::to_string)
}

/// Merges `section` (a tree read from a section file) into `tree[name]`,
/// its keys over the ones already there.
pub fn merge_into(tree: &mut Value, name: &str, section: Value) {
    let Value::Mapping(root) = tree else { return };
    let slot = root
        .entry(Value::String(name.to_string()))
        .or_insert_with(empty);
    match (slot, section) {
        (Value::Mapping(into), Value::Mapping(from)) => {
            for (k, v) in from {
                into.insert(k, v);
            }
        }
        (slot, section) => *slot = section,
    }
}

/// A problem the typed configuration found in the tree: the dotted key
/// (empty: the whole tree) and what is wrong with its value.
#[derive(Debug)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// At most this many problems are collected before giving up.
const MAX_PROBLEMS: usize = 20;

/// The typed configuration from the tree, or every problem in it: each
/// failing key (unknown, or a value that does not parse) is noted and taken
/// out (its default applies) and the rest deserialized again, so a file
/// with three mistakes reports three.
pub fn deserialize(mut tree: Value) -> Result<super::Config, Vec<Problem>> {
    let mut problems = Vec::new();
    loop {
        let err = match serde_path_to_error::deserialize(tree.clone()) {
            Ok(config) if problems.is_empty() => return Ok(config),
            Ok(_) => return Err(problems),
            Err(e) => e,
        };
        let key = dotted_key(err.path());
        let mut message = plain_types(&err.into_inner().to_string());
        if key.ends_with(".password") && message.starts_with("unknown field") {
            message.push_str(
                ". A password is never a setting (it would end up in files, shell history and \
                 process lists): name where it is with password_env (an environment variable) or \
                 password_file (a file)",
            );
        }
        let removed = !key.is_empty() && remove(&mut tree, &key);
        problems.push(Problem { key, message });
        if !removed || problems.len() >= MAX_PROBLEMS {
            return Err(problems);
        }
    }
}

/// serde's names for number types in words a user reads: "expected usize"
/// becomes "expected a whole number, 0 or more".
fn plain_types(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, words) in [
        ("u8", "a whole number, 0 or more"),
        ("u16", "a whole number, 0 or more"),
        ("u32", "a whole number, 0 or more"),
        ("u64", "a whole number, 0 or more"),
        ("usize", "a whole number, 0 or more"),
        ("i32", "a whole number"),
        ("i64", "a whole number"),
        ("f64", "a number"),
        ("f32", "a number"),
    ] {
        if let Some(at) = out.find(&format!("expected {rust}")) {
            let end = at + "expected ".len() + rust.len();
            if out[end..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric())
            {
                out.replace_range(at + "expected ".len()..end, words);
            }
        }
    }
    out
}

/// The map keys of `path` up to the first list index (a bad list element
/// stands for the whole list).
fn dotted_key(path: &serde_path_to_error::Path) -> String {
    let mut parts = Vec::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Map { key } => parts.push(key.clone()),
            _ => break,
        }
    }
    parts.join(".")
}

/// Removes the node at a dotted key; false when there is none.
fn remove(tree: &mut Value, dotted: &str) -> bool {
    let (parent, last) = match dotted.rsplit_once('.') {
        Some((parent, last)) => (get_mut(tree, parent), last),
        None => (Some(tree), dotted),
    };
    parent
        .and_then(Value::as_mapping_mut)
        .and_then(|m| m.remove(Value::String(last.to_string())))
        .is_some()
}

fn get_mut<'a>(tree: &'a mut Value, dotted: &str) -> Option<&'a mut Value> {
    let mut node = tree;
    for part in dotted.split('.') {
        node = node
            .as_mapping_mut()?
            .get_mut(Value::String(part.to_string()))?;
    }
    Some(node)
}

/// Sets `a.b.c` in a YAML tree to `value` (parsed as YAML, except a scalar
/// for a key `shape` holds as a string: that stays text), creating maps.
pub fn set_path(tree: &mut Value, dotted: &str, value: &str, shape: &Value) -> Result<(), String> {
    let text = || Value::String(value.to_string());
    let parsed = match serde_yaml_ng::from_str::<Value>(value) {
        Ok(Value::Number(_) | Value::Bool(_))
            if get(shape, dotted).is_some_and(Value::is_string) =>
        {
            text()
        }
        Ok(v) => v,
        Err(_) => text(),
    };
    let mut node = tree;
    let mut parts: Vec<&str> = dotted.split('.').collect();
    // Kafka property names hold dots themselves: `kafka.properties.sasl.password`
    // (STREAMFORGE__KAFKA__PROPERTIES__SASL__PASSWORD) is the property `sasl.password`.
    if parts.len() > 3 && parts[..2] == ["kafka", "properties"] {
        let name = &dotted["kafka.properties.".len()..];
        parts.truncate(2);
        parts.push(name);
    }
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            return Err(format!("`{dotted}` is not a key path"));
        }
        if !node.is_mapping() {
            *node = empty();
        }
        let Value::Mapping(map) = node else {
            return Err(format!("`{dotted}` crosses a non-map value"));
        };
        let key = Value::String((*part).to_string());
        if i + 1 == parts.len() {
            map.insert(key, parsed);
            return Ok(());
        }
        node = map.entry(key).or_insert_with(empty);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_types_read_as_words() {
        assert_eq!(
            plain_types("invalid value: integer `-1`, expected usize"),
            "invalid value: integer `-1`, expected a whole number, 0 or more"
        );
        assert_eq!(
            plain_types("invalid type: string \"fast\", expected u64"),
            "invalid type: string \"fast\", expected a whole number, 0 or more"
        );
        assert_eq!(
            plain_types("expected f64 at line 1"),
            "expected a number at line 1"
        );
        assert_eq!(plain_types("expected u64x"), "expected u64x");
        assert_eq!(plain_types("unknown field `x`"), "unknown field `x`");
    }

    #[test]
    fn a_setting_with_single_underscores_is_named_with_its_right_variable() {
        let shape = serde_yaml_ng::to_value(super::super::Config::default()).unwrap();
        let env = |names: &[&str]| -> Vec<(String, String)> {
            names
                .iter()
                .map(|n| (n.to_string(), "x".to_string()))
                .collect()
        };
        let found = misspelled_settings(
            &env(&[
                "STREAMFORGE_WINDOW_SIZE",
                "STREAMFORGE_WINDOW_OUT_OF_ORDERNESS",
                "STREAMFORGE_KAFKA_GROUP_ID",
                "STREAMFORGE_BATCH_SIZE",
                // Not settings: the flags' variables, sections, secrets,
                // the right spelling, other programs' variables.
                "STREAMFORGE_CONFIG",
                "STREAMFORGE_STATE_DIR",
                "STREAMFORGE_WINDOW",
                "STREAMFORGE_SASL_PASSWORD",
                "STREAMFORGE__WINDOW__SIZE",
                "STREAMFORGE_",
                "STREAMFORGE_WINDOW__SIZE",
                "KAFKA_BROKERS",
            ]),
            &shape,
        );
        let named: Vec<(&str, bool)> = found
            .iter()
            .map(|p| {
                let right = format!(
                    "STREAMFORGE__{}",
                    p.key.to_ascii_uppercase().replace('.', "__")
                );
                (
                    p.key.as_str(),
                    p.message.ends_with(&format!("Rename it {right}")),
                )
            })
            .collect();
        assert_eq!(
            named,
            [
                ("window.size", true),
                ("window.out_of_orderness", true),
                ("kafka.group_id", true),
                ("batch_size", true)
            ]
        );
    }
}
