//! The review page's HTML: server-rendered, an inline SVG chart, a form,
//! no script. Every text from the log or the policies is escaped.

use std::fmt::Write as _;

use super::stats::Stats;
use crate::audit::{Match, VerifyReport};
use crate::policy::tools::who_can::CredentialAccess;

/// HTML-escapes `s` (text and attribute values).
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the page is made of.
pub(super) struct Page<'a> {
    pub logs: &'a [String],
    pub stats: Result<&'a Stats, String>,
    pub chain: Result<&'a VerifyReport, String>,
    /// environment → who can have what (or why the policies did not load).
    pub who_can: Result<Vec<(String, Vec<CredentialAccess>)>, String>,
    /// The leaked-value lookup's result, after a POST.
    pub lookup: Option<Result<Vec<Match>, String>>,
}

const STYLE: &str = "body{font:14px/1.4 sans-serif;margin:24px;color:#222;max-width:1200px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.num{text-align:right}.ok{color:#1a7f37}.bad{color:#b42318}\
.cards{display:flex;gap:12px}.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px}\
.card b{display:block;font-size:22px}code{background:#f6f6f6;padding:0 3px}";

pub(super) fn render(p: &Page<'_>) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>jobkey review</title><style>{STYLE}</style></head><body><h1>jobkey audit review</h1><p>Read-only. Logs: {}</p>",
        p.logs
            .iter()
            .map(|l| format!("<code>{}</code>", esc(l)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    chain(&mut h, &p.chain, p.stats.as_ref().ok().copied());
    match &p.stats {
        Ok(s) => stats(&mut h, s),
        Err(e) => {
            let _ = write!(
                h,
                "<p class=\"bad\">The log could not be read: {}</p>",
                esc(e)
            );
        }
    }
    who_can(&mut h, &p.who_can);
    lookup(&mut h, p.lookup.as_ref());
    h.push_str("</body></html>\n");
    h
}

fn chain(h: &mut String, chain: &Result<&VerifyReport, String>, stats: Option<&Stats>) {
    h.push_str("<h2>Chain</h2>");
    match chain {
        Ok(r) => {
            let _ = write!(
                h,
                "<p id=\"chain\" class=\"ok\">Chain intact: {} records, last hash <code>{}</code>.</p>",
                r.lines,
                esc(&r.last_hash)
            );
            if let Some(t) = &r.torn {
                let _ = write!(
                    h,
                    "<p class=\"bad\">Line {} is torn (a write was cut off): {}.</p>",
                    t.line,
                    esc(&t.why)
                );
            }
        }
        Err(e) => {
            let _ = write!(
                h,
                "<p id=\"chain\" class=\"bad\">Chain broken: {}</p>",
                esc(e)
            );
        }
    }
    if let Some(s) = stats {
        let checkpoints = s.other_lines.get("checkpoint").copied().unwrap_or(0);
        let _ = write!(h, "<p>Checkpoints: {checkpoints}.");
        for (kind, n) in s.other_lines.iter().filter(|(k, _)| *k != "checkpoint") {
            let _ = write!(h, " Other lines of kind <code>{}</code>: {n}.", esc(kind));
        }
        if s.unreadable > 0 {
            let _ = write!(
                h,
                " <span class=\"bad\">{} line(s) are not audit records.</span>",
                s.unreadable
            );
        }
        h.push_str("</p>");
    }
}

fn stats(h: &mut String, s: &Stats) {
    let _ = write!(
        h,
        "<h2>Exchanges</h2><div class=\"cards\">\
<div class=\"card\" id=\"allowed\"><b>{}</b>allowed</div>\
<div class=\"card\" id=\"denied\"><b>{}</b>denied</div>\
<div class=\"card\" id=\"failed\"><b>{}</b>failed (jobkey or Vault)</div>\
<div class=\"card\" id=\"revocations\"><b>{}</b>revocations ({} credentials)</div></div>",
        s.exchanges_allowed,
        s.exchanges_denied,
        s.exchanges_failed,
        s.revocations,
        s.credentials_revoked
    );
    chart(h, s);
    h.push_str("<h2>Top identities per environment</h2>");
    for (env, ids) in &s.identities {
        let mut top: Vec<(&String, &u64)> = ids.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let _ = write!(
            h,
            "<h3>{}</h3><table class=\"identities\"><tr><th>identity</th><th>allowed exchanges</th></tr>",
            esc(env)
        );
        for (who, n) in top.into_iter().take(10) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"num\">{n}</td></tr>",
                esc(who)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Credentials issued</h2><table id=\"credentials\"><tr><th>credential</th><th>times issued</th><th>by rule</th></tr>");
    for (name, (n, rules)) in &s.credentials {
        let rules: Vec<String> = rules
            .iter()
            .map(|(r, n)| format!("{} ({n})", esc(r)))
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{n}</td><td>{}</td></tr>",
            esc(name),
            rules.join(", ")
        );
    }
    h.push_str(
        "</table><h2>Denial reasons</h2><table id=\"reasons\"><tr><th>code</th><th>count</th></tr>",
    );
    for (code, n) in &s.reasons {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{n}</td></tr>",
            esc(code)
        );
    }
    h.push_str("</table><h3>Recent denials</h3><table id=\"denials\"><tr><th>time</th><th>request</th><th>environment</th><th>identity</th><th>code</th></tr>");
    for d in &s.recent_denials {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.time),
            esc(&d.request_id),
            esc(&d.environment),
            esc(&d.who),
            esc(&d.code)
        );
    }
    h.push_str("</table><p>For one request's full story: <code>jobkey audit show REQUEST_ID --config …</code>.</p>");
}

fn chart(h: &mut String, s: &Stats) {
    const W: u64 = 960;
    const H: u64 = 160;
    h.push_str("<h2>Exchanges over time</h2>");
    if s.buckets.is_empty() {
        h.push_str("<p>No exchanges yet.</p>");
        return;
    }
    let max = s
        .buckets
        .iter()
        .map(|b| b.allowed + b.denied + b.errors)
        .max()
        .unwrap_or(1)
        .max(1);
    let n = s.buckets.len() as u64;
    let bw = (W / n).clamp(2, 40);
    let _ = write!(
        h,
        "<svg id=\"chart\" role=\"img\" aria-label=\"exchanges per {} minutes: allowed, denied, failed\" width=\"{W}\" height=\"{}\" viewBox=\"0 0 {W} {}\" xmlns=\"http://www.w3.org/2000/svg\">",
        s.bucket_ms / 60_000,
        H + 20,
        H + 20
    );
    for (i, b) in s.buckets.iter().enumerate() {
        let x = i as u64 * bw;
        let mut y = H;
        for (count, color, what) in [
            (b.allowed, "#2da44e", "allowed"),
            (b.denied, "#cf222e", "denied"),
            (b.errors, "#bf8700", "failed"),
        ] {
            if count == 0 {
                continue;
            }
            let bh = (count * H / max).max(1);
            y -= bh;
            let _ = write!(
                h,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{bh}\" fill=\"{color}\"><title>{count} {what}</title></rect>",
                bw.saturating_sub(1).max(1)
            );
        }
    }
    let first = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(s.buckets[0].start_ms),
    );
    let _ = write!(
        h,
        "<text x=\"0\" y=\"{}\" font-size=\"11\">from {first}, {} min per bar (max {max})</text></svg>\
<p><span style=\"color:#2da44e\">■</span> allowed <span style=\"color:#cf222e\">■</span> denied <span style=\"color:#bf8700\">■</span> failed</p>",
        H + 15,
        s.bucket_ms / 60_000
    );
}

fn who_can(h: &mut String, w: &Result<Vec<(String, Vec<CredentialAccess>)>, String>) {
    h.push_str("<h2>Who can have what</h2>");
    let envs = match w {
        Ok(envs) => envs,
        Err(e) => {
            let _ = write!(
                h,
                "<p class=\"bad\">The policies did not load: {}</p>",
                esc(e)
            );
            return;
        }
    };
    for (env, creds) in envs {
        let _ = write!(
            h,
            "<h3>{}</h3><table class=\"who-can\"><tr><th>credential</th><th>rule</th><th>issuer</th><th>repositories</th><th>refs</th><th>ttl</th></tr>",
            esc(env)
        );
        for c in creds {
            for r in &c.rules {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&c.credential),
                    esc(&r.rule),
                    esc(&r.issuer),
                    esc(&r.identity.repositories.join("; ")),
                    esc(&r.identity.refs.join("; ")),
                    esc(&r.ttl)
                );
            }
        }
        h.push_str("</table>");
    }
}

fn lookup(h: &mut String, result: Option<&Result<Vec<Match>, String>>) {
    h.push_str("<h2 id=\"lookup\">Leaked value lookup</h2>\
<p>Paste a value found in a build log: the page says which exchanges issued it (by keyed fingerprint). The value is not stored, logged or shown.</p>\
<form method=\"post\" action=\"/lookup\" autocomplete=\"off\"><input type=\"password\" name=\"value\" size=\"60\" autocomplete=\"off\"> <button type=\"submit\">Look up</button></form>");
    match result {
        None => {}
        Some(Err(e)) => {
            let _ = write!(h, "<p id=\"lookup-result\" class=\"bad\">{}</p>", esc(e));
        }
        Some(Ok(m)) if m.is_empty() => {
            h.push_str("<p id=\"lookup-result\">No exchange issued this value.</p>");
        }
        Some(Ok(m)) => {
            let _ = write!(
                h,
                "<p id=\"lookup-result\" class=\"bad\">Issued by {} exchange(s):</p><table><tr><th>time</th><th>request</th><th>environment</th><th>credential</th><th>rule</th><th>identity</th></tr>",
                m.len()
            );
            for x in m {
                let who = x
                    .identity
                    .as_ref()
                    .and_then(|i| {
                        ["repository", "project_path", "sub"]
                            .iter()
                            .find_map(|k| i.claim(k))
                    })
                    .map_or_else(|| "?".to_owned(), |v| v.to_text());
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}.{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&x.time),
                    esc(&x.request_id),
                    esc(&x.environment),
                    esc(&x.credential),
                    esc(&x.field),
                    esc(&x.rule),
                    esc(&who)
                );
            }
            h.push_str("</table>");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_log_is_escaped() {
        assert_eq!(
            esc("<script>\"a\"&'b'</script>"),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;"
        );
    }
}
