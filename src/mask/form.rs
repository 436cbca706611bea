//! One mask: the string, and its JSON string literal made once.
//!
//! A response lists every mask as a JSON string. Escaping them (tens of
//! kilobytes for a PEM key's forms) was the largest cost left of a response
//! once the hints were kept (`cache.rs`); a kept entry now escapes each
//! form once, when it is computed, and responses copy the literal as it is.

use serde_json::value::RawValue;
use zeroize::Zeroize;

use crate::secret::SecretString;

/// A mask string and its JSON literal. Both are zeroized on drop; `Debug`
/// shows neither.
pub(crate) struct Form {
    value: SecretString,
    json: JsonLiteral,
}

impl Form {
    pub(crate) fn new(value: String) -> Form {
        let json = JsonLiteral::of(&value);
        Form {
            value: SecretString::new(value),
            json,
        }
    }

    pub(crate) fn value(&self) -> &SecretString {
        &self.value
    }

    /// The JSON string literal (with its quotes), to be written into a
    /// response as it is; `None` if it could not be made (then the caller
    /// serializes [`value`](Self::value)).
    pub(crate) fn expose_json(&self) -> Option<&RawValue> {
        self.json.0.as_deref()
    }

    /// The length of the JSON literal (what a response writes).
    pub(crate) fn json_len(&self) -> usize {
        self.json
            .0
            .as_ref()
            .map_or(self.value.expose_secret().len() * 2 + 2, |j| j.get().len())
    }

    /// The bytes held (the value and its literal), for the cache's bound.
    pub(crate) fn bytes(&self) -> usize {
        self.value.expose_secret().len() + self.json.0.as_ref().map_or(0, |j| j.get().len())
    }
}

/// serde_json's literal of a string, zeroized on drop.
struct JsonLiteral(Option<Box<RawValue>>);

impl JsonLiteral {
    fn of(value: &str) -> JsonLiteral {
        // Serializing a `str` into a string does not fail; should it, the
        // response serializes the value itself instead.
        JsonLiteral(serde_json::value::to_raw_value(value).ok())
    }
}

impl Drop for JsonLiteral {
    fn drop(&mut self) {
        if let Some(raw) = self.0.take() {
            let text: Box<str> = raw.into();
            String::from(text).zeroize();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_literal_is_what_serde_json_writes_for_the_value() {
        for v in [
            "plain-value",
            "line one\nline \"two\"\t\\",
            "caf\u{e9} \u{1F512} <&> \u{2028}",
            "\u{0}\u{1f}",
        ] {
            let f = Form::new(v.to_owned());
            assert_eq!(f.value().expose_secret(), v);
            let json = f.expose_json().expect("a literal").get();
            assert_eq!(json, serde_json::to_string(v).unwrap());
            assert_eq!(serde_json::from_str::<String>(json).unwrap(), v);
            assert_eq!(f.bytes(), v.len() + json.len());
            assert_eq!(f.json_len(), json.len());
        }
    }
}
