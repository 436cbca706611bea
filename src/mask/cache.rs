//! The hints of a value that does not change between jobs, kept for a
//! short while.
//!
//! A KV secret is served unchanged to every job that asks for it, and its
//! hints are the costliest part of a response: for a 2 KiB PEM key, its
//! lines, fourteen base64 forms, the JSON and URL forms, and the secrets
//! inside it. The server keeps them here, for values the caller marks as
//! stable (KV reads; never a dynamic credential, a wrapping token or the
//! revocation handle, which are new for every exchange):
//!
//! - An entry is found by HMAC-SHA-256, under a key drawn at start-up and
//!   never stored, over the label and the value. A value that changed in
//!   Vault (a rotation) is another entry: the hints are never stale, and
//!   Vault is still read on every exchange.
//! - An entry lives `ttl` from when it was computed, not from its last
//!   use; then it is dropped, and its strings are zeroized (they are
//!   [`SecretString`]s) once the last response using them is sent. The
//!   server purges expired entries every second, with or without traffic.
//! - The entries hold at most `max_bytes` of hint text (each form and its
//!   JSON literal, `form.rs`): the oldest go
//!   first, and a value whose hints alone are larger is not kept.
//! - `ttl = 0` turns the cache off.
//!
//! Architecture invariant: a cached entry is exactly what
//! [`ValueHints::compute`] returns for its label and value, so a response
//! is the same with the cache on or off.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ring::hmac;

use super::ValueHints;
use crate::random::RandomUnavailable;
use crate::secret::SecretString;

/// `[masks]` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskCacheSettings {
    /// How long the hints of a stable value are kept (zero: not at all).
    pub ttl: Duration,
    /// The most hint text kept, in bytes.
    pub max_bytes: usize,
}

impl Default for MaskCacheSettings {
    fn default() -> Self {
        MaskCacheSettings {
            ttl: Duration::from_secs(30),
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

type Tag = [u8; 32];

/// See the module docs.
pub(crate) struct MaskCache {
    settings: MaskCacheSettings,
    key: hmac::Key,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Tag, Arc<ValueHints>>,
    /// The entries in the order they were computed, which (one `ttl` for
    /// all) is the order they expire in.
    order: VecDeque<(Tag, Instant)>,
    bytes: usize,
}

impl MaskCache {
    pub(crate) fn new(settings: MaskCacheSettings) -> Result<MaskCache, RandomUnavailable> {
        let secret = zeroize::Zeroizing::new(crate::random::bytes::<32>()?);
        Ok(MaskCache {
            settings,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_ref()),
            inner: Mutex::default(),
        })
    }

    /// The hints of a stable `value` labelled `label`: kept ones while they
    /// last, else computed (and kept).
    pub(crate) fn get(&self, label: &str, value: &SecretString) -> Arc<ValueHints> {
        if self.settings.ttl.is_zero() {
            return Arc::new(ValueHints::compute(label, value));
        }
        let tag = self.tag(label, value);
        let now = Instant::now();
        {
            let mut inner = self.lock();
            inner.expire(now, self.settings.ttl);
            if let Some(h) = inner.map.get(&tag) {
                crate::metrics::mask_cache_lookup(true);
                return h.clone();
            }
        }
        crate::metrics::mask_cache_lookup(false);
        // Computed outside the lock: two jobs asking at once may both
        // compute it; the first one keeps it.
        let hints = Arc::new(ValueHints::compute(label, value));
        if hints.bytes() <= self.settings.max_bytes {
            let mut inner = self.lock();
            if !inner.map.contains_key(&tag) {
                inner.bytes += hints.bytes();
                inner.map.insert(tag, hints.clone());
                inner.order.push_back((tag, now));
                while inner.bytes > self.settings.max_bytes {
                    inner.pop_oldest();
                }
                crate::metrics::mask_cache_bytes(inner.bytes);
            }
        }
        hints
    }

    /// Drops the entries older than `ttl` (the server's timer).
    pub(crate) fn purge(&self) {
        let mut inner = self.lock();
        let before = inner.bytes;
        inner.expire(Instant::now(), self.settings.ttl);
        if inner.bytes != before {
            crate::metrics::mask_cache_bytes(inner.bytes);
        }
    }

    /// How many entries and bytes are kept: for the tests.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.map.len(), inner.bytes)
    }

    fn tag(&self, label: &str, value: &SecretString) -> Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        // The label's length first: no label and value can pose as another.
        ctx.update(&(label.len() as u64).to_le_bytes());
        ctx.update(label.as_bytes());
        ctx.update(value.expose_secret().as_bytes());
        let mut tag = [0u8; 32];
        tag.copy_from_slice(ctx.sign().as_ref());
        tag
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

impl Inner {
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some(&(_, at)) = self.order.front() {
            if now.saturating_duration_since(at) < ttl {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((tag, _)) = self.order.pop_front()
            && let Some(h) = self.map.remove(&tag)
        {
            self.bytes -= h.bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::new(s.to_owned())
    }

    fn settings(ttl_ms: u64, max_bytes: usize) -> MaskCacheSettings {
        MaskCacheSettings {
            ttl: Duration::from_millis(ttl_ms),
            max_bytes,
        }
    }

    #[test]
    fn a_kept_entry_is_what_compute_returns() {
        let cache = MaskCache::new(MaskCacheSettings::default()).unwrap();
        let v = secret("line-one-secret\nline-two-secret\npostgres://u:p4ssw0rd-long@db/x");
        let first = cache.get("app.value", &v);
        let again = cache.get("app.value", &v);
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second get is the kept entry"
        );
        let fresh = ValueHints::compute("app.value", &v);
        let texts = |h: &ValueHints| {
            h.forms
                .iter()
                .map(|f| f.value().expose_secret().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(&first), texts(&fresh));
        assert_eq!(first.warnings, fresh.warnings);
        assert_eq!(cache.size(), (1, fresh.bytes()));
    }

    #[test]
    fn another_value_or_label_is_another_entry() {
        let cache = MaskCache::new(MaskCacheSettings::default()).unwrap();
        let a = cache.get("app.password", &secret("rotated-password-1"));
        let b = cache.get("app.password", &secret("rotated-password-2"));
        let c = cache.get("other.password", &secret("rotated-password-1"));
        assert!(
            !Arc::ptr_eq(&a, &b),
            "a rotated value is never served old hints"
        );
        assert!(
            b.forms
                .iter()
                .any(|f| f.value().expose_secret() == "rotated-password-2")
        );
        assert!(
            !b.forms
                .iter()
                .any(|f| f.value().expose_secret() == "rotated-password-1")
        );
        assert!(!Arc::ptr_eq(&a, &c), "the label is part of the key");
        assert_eq!(cache.size().0, 3);
    }

    #[test]
    fn the_label_length_keeps_label_and_value_apart() {
        let cache = MaskCache::new(MaskCacheSettings::default()).unwrap();
        // Same bytes once joined: "ab" + "cdefghijkl" and "abc" + "defghijkl".
        assert_ne!(
            cache.tag("ab", &secret("cdefghijkl")),
            cache.tag("abc", &secret("defghijkl"))
        );
    }

    #[test]
    fn entries_expire_after_ttl_and_purge_drops_them() {
        let cache = MaskCache::new(settings(50, 1 << 20)).unwrap();
        let v = secret("expiring-secret-value");
        let first = cache.get("app.v", &v);
        std::thread::sleep(Duration::from_millis(80));
        cache.purge();
        assert_eq!(cache.size(), (0, 0), "purged after ttl");
        let again = cache.get("app.v", &v);
        assert!(!Arc::ptr_eq(&first, &again), "recomputed after ttl");
    }

    #[test]
    fn the_byte_bound_drops_the_oldest_and_skips_what_never_fits() {
        let one = ValueHints::compute("a.v", &secret("value-number-0001")).bytes();
        // Room for two entries of this size, not three.
        let cache = MaskCache::new(settings(60_000, 2 * one + one / 2)).unwrap();
        let first = cache.get("a.v", &secret("value-number-0001"));
        cache.get("a.v", &secret("value-number-0002"));
        cache.get("a.v", &secret("value-number-0003"));
        let (entries, bytes) = cache.size();
        assert_eq!(entries, 2);
        assert!(bytes <= 2 * one + one / 2);
        let again = cache.get("a.v", &secret("value-number-0001"));
        assert!(!Arc::ptr_eq(&first, &again), "the oldest was dropped");

        let tiny = MaskCache::new(settings(60_000, 8)).unwrap();
        let h = tiny.get("a.v", &secret("value-number-0001"));
        assert!(!h.forms.is_empty(), "hints are still computed");
        assert_eq!(tiny.size(), (0, 0), "but not kept");
    }

    #[test]
    fn zero_ttl_keeps_nothing() {
        let cache = MaskCache::new(settings(0, 1 << 20)).unwrap();
        let v = secret("never-kept-secret");
        let a = cache.get("app.v", &v);
        let b = cache.get("app.v", &v);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(cache.size(), (0, 0));
    }

    #[test]
    fn debug_of_hints_shows_no_value() {
        let cache = MaskCache::new(MaskCacheSettings::default()).unwrap();
        let h = cache.get("app.v", &secret("debug-must-not-show"));
        let shown = format!("{h:?}");
        assert!(!shown.contains("debug-must-not-show"), "{shown}");
    }
}
