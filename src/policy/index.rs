//! The rule index of one environment: which rules can possibly apply to a
//! request, so a decision does not check every rule of a large file.
//!
//! Rules are grouped by issuer. Within an issuer, one top-level claim is
//! chosen among those rules bind to exact values (a scalar, or a list of
//! scalars): the one that leaves the fewest candidates on average (rules
//! not binding it, plus the average number of rules per value), ties
//! broken by name. Each such rule is
//! filed under each of its values; the other rules of the issuer are
//! "unindexed" and always candidates. A rule that is not a candidate
//! certainly does not apply: its issuer differs, or its exact condition on
//! the index claim rejects the token's value. Candidates are returned in
//! file order, so "the first rule that ..." keeps its meaning.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::compile::Rule;
use super::matcher::claim_text;

#[derive(Debug, Default)]
pub(crate) struct Index {
    by_issuer: HashMap<String, IssuerIndex>,
}

#[derive(Debug, Default)]
struct IssuerIndex {
    /// The indexed top-level claim, if any rule binds one exactly.
    claim: Option<String>,
    /// Claim text → rules (ascending) whose exact condition admits it.
    by_value: HashMap<String, Vec<u32>>,
    /// Rules without an exact condition on `claim` (ascending).
    rest: Vec<u32>,
}

impl Index {
    pub(crate) fn build(rules: &[Rule]) -> Index {
        let mut groups: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, rule) in rules.iter().enumerate() {
            groups
                .entry(rule.issuer.as_str())
                .or_default()
                .push(u32::try_from(i).unwrap_or(u32::MAX));
        }
        let mut by_issuer = HashMap::with_capacity(groups.len());
        for (issuer, members) in groups {
            by_issuer.insert(issuer.to_owned(), IssuerIndex::build(rules, &members));
        }
        Index { by_issuer }
    }

    /// Rules (indices into the environment's rules, ascending) that may
    /// apply to a token of `issuer` with `claims`.
    pub(crate) fn candidates(&self, issuer: &str, claims: &Map<String, Value>) -> Vec<usize> {
        let Some(group) = self.by_issuer.get(issuer) else {
            return Vec::new();
        };
        let indexed: &[u32] = group
            .claim
            .as_ref()
            .and_then(|c| claims.get(c))
            .and_then(claim_text)
            .and_then(|text| group.by_value.get(text.as_ref()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        merge(indexed, &group.rest)
    }
}

fn exact_values<'r>(rule: &'r Rule, claim: &str) -> Option<Vec<&'r str>> {
    rule.conditions
        .iter()
        .filter(|c| c.claim.top_level() == Some(claim))
        .find_map(|c| c.matcher.exact_values())
}

impl IssuerIndex {
    fn build(rules: &[Rule], members: &[u32]) -> IssuerIndex {
        // Per top-level claim: how many rules bind it exactly, and how many
        // (rule, value) entries that makes per distinct value.
        let mut stats: HashMap<&str, (usize, HashMap<&str, usize>)> = HashMap::new();
        for &i in members {
            let Some(rule) = rules.get(i as usize) else {
                continue;
            };
            let mut seen: Vec<&str> = Vec::new();
            for c in &rule.conditions {
                let Some(name) = c.claim.top_level() else {
                    continue;
                };
                if seen.contains(&name) {
                    continue;
                }
                if let Some(values) = c.matcher.exact_values() {
                    seen.push(name);
                    let entry = stats.entry(name).or_default();
                    entry.0 += 1;
                    for v in values {
                        *entry.1.entry(v).or_default() += 1;
                    }
                }
            }
        }
        // The claim that leaves the fewest candidates on average: the rules
        // that do not bind it, plus the average bucket size. Ties: by name.
        let cost = |(count, buckets): &(usize, HashMap<&str, usize>)| {
            let entries: usize = buckets.values().sum();
            let avg = entries as f64 / buckets.len().max(1) as f64;
            (members.len() - count) as f64 + avg
        };
        let claim = stats
            .iter()
            .min_by(|a, b| {
                cost(a.1)
                    .partial_cmp(&cost(b.1))
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then_with(|| a.0.cmp(b.0))
            })
            .map(|(name, _)| (*name).to_owned());
        let mut index = IssuerIndex {
            claim: claim.clone(),
            ..IssuerIndex::default()
        };
        for &i in members {
            let Some(rule) = rules.get(i as usize) else {
                continue;
            };
            match claim.as_deref().and_then(|c| exact_values(rule, c)) {
                Some(values) => {
                    for value in values {
                        let list = index.by_value.entry(value.to_owned()).or_default();
                        if list.last() != Some(&i) {
                            list.push(i);
                        }
                    }
                }
                None => index.rest.push(i),
            }
        }
        index
    }
}

/// Merges two ascending lists into one ascending list without duplicates.
fn merge(a: &[u32], b: &[u32]) -> Vec<usize> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x <= y => {
                i += 1;
                if x == y {
                    j += 1;
                }
                *x
            }
            (_, Some(y)) => {
                j += 1;
                *y
            }
            (Some(x), None) => {
                i += 1;
                *x
            }
            (None, None) => break,
        };
        out.push(next as usize);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_selective_claim_is_indexed() {
        let mut src =
            String::from("credentials:\n  db:\n    kv: {mount: s, path: p}\n    ttl: 1m\nrules:\n");
        for i in 0..20 {
            src.push_str(&format!("  - name: r{i}\n    issuer: gh\n    claims: {{environment: prod, ref: main, repository_id: \"{i}\"}}\n    grant: [db]\n"));
        }
        src.push_str(
            "  - name: any\n    issuer: gh\n    claims: {ref: {glob: \"*\"}}\n    grant: [db]\n",
        );
        let set = crate::policy::PolicySet::from_sources(&[("e.yaml".into(), src)], &["gh".into()])
            .expect("ok");
        let env = set.env("e").expect("env");
        let claims = match serde_json::json!({"environment": "prod", "ref": "main", "repository_id": "7"})
        {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        // r7 (by repository_id) and the unindexed glob rule; not all 20.
        assert_eq!(env.index.candidates("gh", &claims), vec![7, 20]);
        assert!(env.index.candidates("other", &claims).is_empty());
    }

    #[test]
    fn merge_keeps_order_without_duplicates() {
        assert_eq!(merge(&[1, 4, 7], &[0, 4, 9]), vec![0, 1, 4, 7, 9]);
        assert_eq!(merge(&[], &[2]), vec![2]);
        assert_eq!(merge(&[3], &[]), vec![3]);
        assert!(merge(&[], &[]).is_empty());
    }
}
