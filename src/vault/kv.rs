//! KV version 2 reads.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroize;

use super::auth::ClientHandle;
use super::error::VaultError;
use super::http;
use crate::secret::SecretString;

/// Checks a mount or secret path before it becomes part of a request URL.
///
/// Paths may be built from policy templates filled with token claims, so they
/// are refused locally when they could address something other than a secret
/// under `mount`: empty, `.` or `..` segments, and characters that would end
/// the path (`?`, `#`), be decoded by Vault (`%`), or break the request line
/// (whitespace, control characters, `\`).
pub(crate) fn check_path(kind: &str, value: &str) -> Result<(), VaultError> {
    let bad = |why: &str| VaultError::InvalidPath {
        reason: format!("{kind} {value:?}: {why}"),
    };
    let trimmed = value.trim_matches('/');
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '?' | '#' | '%' | '\\'))
    {
        return Err(bad(&format!("character {c:?} is not allowed")));
    }
    if trimmed
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(bad("empty, '.' or '..' segment"));
    }
    Ok(())
}

/// KV v2's `data`: the secret's fields (its `metadata` is not read).
#[derive(Deserialize)]
struct Versioned {
    data: Option<serde_json::Map<String, Value>>,
}

/// Reads `mount`/`path` and returns all fields, or only `fields`.
///
/// One GET of `<mount>/data/<path>` through [`http::call`], parsed once
/// into the fields. (vaultrs' `kv2::read` went through rustify's endpoint
/// machinery, a request conversion and a second parse: about a tenth of
/// an exchange's CPU in `make bench`'s profile.)
pub(crate) async fn read(
    client: &ClientHandle,
    mount: &str,
    path: &str,
    fields: Option<&[String]>,
) -> Result<BTreeMap<String, SecretString>, VaultError> {
    check_path("mount", mount)?;
    check_path("path", path)?;
    let mount = mount.trim_matches('/');
    let path = path.trim_matches('/');
    let what = format!("secret {mount}/{path}");
    let answer: http::Envelope<Versioned> = http::call(
        client,
        Method::GET,
        &format!("{mount}/data/{path}"),
        None,
        &what,
    )
    .await?;
    let data = answer
        .data
        .and_then(|v| v.data)
        .ok_or_else(|| VaultError::BadResponse {
            reason: format!("empty answer for {what}"),
        })?;
    select(data, fields, &what)
}

/// Turns the secret's `data` into `SecretString`s and keeps the wanted fields.
/// String values are moved (not copied) into `SecretString`; other JSON values
/// become their JSON text. Values that are not returned are zeroized.
fn select(
    data: serde_json::Map<String, Value>,
    fields: Option<&[String]>,
    what: &str,
) -> Result<BTreeMap<String, SecretString>, VaultError> {
    let mut all: BTreeMap<String, SecretString> =
        data.into_iter().map(|(k, v)| (k, into_secret(v))).collect();
    let Some(fields) = fields else {
        return Ok(all);
    };
    let mut out = BTreeMap::new();
    for f in fields {
        match all.remove(f) {
            Some(v) => {
                out.insert(f.clone(), v);
            }
            None if out.contains_key(f) => {} // asked twice
            None => {
                return Err(VaultError::NotFound {
                    what: format!("field {f:?} in {what}"),
                });
            }
        }
    }
    Ok(out) // `all` (the unwanted fields) is dropped, and zeroized, here.
}

fn into_secret(v: Value) -> SecretString {
    match v {
        Value::String(s) => SecretString::new(s),
        mut other => {
            let text = other.to_string();
            zeroize_value(&mut other);
            SecretString::new(text)
        }
    }
}

/// Best effort: wipes the strings inside a JSON value before it is dropped.
fn zeroize_value(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(zeroize_value),
        Value::Object(map) => map.values_mut().for_each(zeroize_value),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data() -> serde_json::Map<String, Value> {
        match json!({"user": "app", "password": "pw-1", "port": 5432, "tags": ["a", "b"], "none": null})
        {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn all_fields_and_non_strings_as_json_text() {
        let out = select(data(), None, "s").unwrap();
        assert_eq!(out.len(), 5);
        assert_eq!(out["password"].expose_secret(), "pw-1");
        assert_eq!(out["port"].expose_secret(), "5432");
        assert_eq!(out["tags"].expose_secret(), r#"["a","b"]"#);
        assert_eq!(out["none"].expose_secret(), "null");
    }

    #[test]
    fn selected_fields_only_and_missing_field_is_not_found_by_name() {
        let want = vec!["user".to_owned(), "password".to_owned()];
        let out = select(data(), Some(&want), "s").unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["password", "user"]);

        let want = vec!["user".to_owned(), "nope".to_owned()];
        let e = select(data(), Some(&want), "secret secret/x").unwrap_err();
        assert!(matches!(&e, VaultError::NotFound { what } if what.contains("\"nope\"")));
        assert!(!e.to_string().contains("pw-1"));

        let want = vec!["user".to_owned(), "user".to_owned()];
        assert_eq!(select(data(), Some(&want), "s").unwrap().len(), 1);
    }

    #[test]
    fn paths_that_could_escape_the_mount_are_refused() {
        for p in [
            "",
            "/",
            "a//b",
            "../sys/seal",
            "a/../../b",
            "a/./b",
            "a?x=1",
            "a#b",
            "a%2e%2e",
            "a b",
            "a\nb",
            "a\\b",
        ] {
            assert!(
                matches!(check_path("path", p), Err(VaultError::InvalidPath { .. })),
                "{p:?}"
            );
        }
        for p in ["app/db", "/app/db/", "team-1/svc_a/prod.eu", "x"] {
            assert_eq!(check_path("path", p), Ok(()), "{p:?}");
        }
    }
}
