//! The audit record's JSON Schema (`schema/audit-record.schema.json`),
//! generated from [`Event`] and the chain's own fields.

use schemars::JsonSchema;

use super::Event;

/// One line of the audit log as stored: an [`Event`] and its place in
/// the hash chain. Records written by this jobkey carry `version` 2;
/// records without `version` are version 1 (the same fields, none of
/// them required to be present beyond `time`, `seq`, `prev` and `hash`).
#[derive(JsonSchema)]
#[allow(dead_code)]
#[schemars(title = "jobkey audit record")]
struct Record {
    /// Counts up from 1 across the log (and its rotated files).
    seq: u64,
    /// The previous record's `hash` (64 zeros for the first).
    prev: String,
    /// SHA-256 (hex) over `prev`, a newline, and this record's JSON object
    /// without `hash`, keys sorted.
    hash: String,
    #[serde(flatten)]
    event: Event,
}

/// The schema, pretty-printed with a final newline (the test that keeps
/// `schema/audit-record.schema.json` current writes and compares it).
#[cfg(test)]
pub(crate) fn record_schema() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Record>();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The shipped schema is the generated one. To regenerate:
    /// `JOBKEY_WRITE_AUDIT_SCHEMA=1 cargo test --lib audit::schema`.
    #[test]
    fn shipped_schema_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/audit-record.schema.json");
        let generated = record_schema();
        if std::env::var_os("JOBKEY_WRITE_AUDIT_SCHEMA").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let shipped = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            shipped == generated,
            "schema/audit-record.schema.json is stale; regenerate it with `JOBKEY_WRITE_AUDIT_SCHEMA=1 cargo test --lib audit::schema`"
        );
        let v: serde_json::Value = serde_json::from_str(&generated).unwrap();
        for field in [
            "seq",
            "prev",
            "hash",
            "time",
            "version",
            "action",
            "checkpoint",
        ] {
            assert!(v["properties"].get(field).is_some(), "{field}: {v:#}");
        }
        for action in ["exchange", "revoke", "checkpoint", "log_recovered"] {
            assert!(generated.contains(&format!("\"{action}\"")), "{action}");
        }
    }
}
