//! The run report: one self-contained HTML page (inline CSS and SVG, no
//! script, no network) that shows where a run's time went and what it did.
//!
//! For a COB: the run's status, timings and cause; a timeline of its
//! partitions (start, end, accounts), drawn to scale; the partition table;
//! the posted totals per currency.

use tally_domain::run::{group_thousands, RunRecord, RunStatus, UnitRecord};

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
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

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d2430; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.muted { color: #5b6472; }
.badge { display: inline-block; padding: 2px 8px; border-radius: 10px; font-weight: 600; color: #fff; }
.SUCCESS { background: #1f7a3f; } .FAILURE { background: #b42318; } .CANCELED { background: #8a5a00; }
.EXECUTING, .INITIATED { background: #1d4ed8; }
table { border-collapse: collapse; margin-top: 4px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e3e6ea; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.cause { background: #fdecea; border-left: 4px solid #b42318; padding: 8px 12px; margin-top: 12px; }
svg text { font: 12px system-ui, sans-serif; fill: #1d2430; }
"#;

fn unit_colour(u: &UnitRecord) -> &'static str {
    match u.outcome.as_str() {
        "SUCCEEDED" => "#2e7d4f",
        "CANCELED" => "#c08a1e",
        _ => "#b42318",
    }
}

/// The partitions drawn to scale from the earliest start to the latest end.
fn timeline(r: &RunRecord) -> String {
    let units: Vec<(&String, &UnitRecord)> = r.units.iter().collect();
    let (Some(t0), Some(t1)) = (
        units.iter().map(|(_, u)| u.started_at).min(),
        units.iter().map(|(_, u)| u.ended_at).max(),
    ) else {
        return "<p class=\"muted\">No partition has reported yet.</p>".into();
    };
    let span_ms = (t1 - t0).num_milliseconds().max(1) as f64;
    let (label_w, bar_w, row_h) = (70.0, 640.0, 26.0);
    let height = row_h * units.len() as f64 + 30.0;
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"partition timeline\" width=\"{}\" height=\"{height}\" \
         viewBox=\"0 0 {} {height}\" xmlns=\"http://www.w3.org/2000/svg\">",
        label_w + bar_w + 230.0,
        label_w + bar_w + 230.0
    );
    for (i, (name, u)) in units.iter().enumerate() {
        let y = i as f64 * row_h + 4.0;
        let x = label_w + bar_w * (u.started_at - t0).num_milliseconds() as f64 / span_ms;
        let w = (bar_w * (u.ended_at - u.started_at).num_milliseconds() as f64 / span_ms).max(2.0);
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{:.1}\">{}</text>\
             <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"{}\">\
             <title>{} {} → {}</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\">{} accounts · {}</text>",
            y + 14.0,
            esc(name),
            row_h - 8.0,
            unit_colour(u),
            esc(name),
            ts(u.started_at),
            ts(u.ended_at),
            label_w + bar_w + 8.0,
            y + 14.0,
            group_thousands(u.items),
            secs(u.duration_ms)
        ));
    }
    let axis_y = row_h * units.len() as f64 + 20.0;
    svg.push_str(&format!(
        "<text x=\"{label_w}\" y=\"{axis_y:.1}\" class=\"muted\">0 s</text>\
         <text x=\"{:.1}\" y=\"{axis_y:.1}\" text-anchor=\"end\">{}</text></svg>",
        label_w + bar_w,
        secs(span_ms as u64)
    ));
    svg
}

/// The report of a COB run.
pub fn cob_html(r: &RunRecord) -> String {
    let duration = match (r.started_at, r.ended_at) {
        (Some(s), Some(e)) => secs((e - s).num_milliseconds().max(0) as u64),
        _ => "-".into(),
    };
    let postings: u64 = r.units.values().map(|u| u.postings).sum();
    let slowest = r.slowest_unit().map_or("-".into(), |(n, u)| {
        format!("{} ({})", esc(n), secs(u.duration_ms))
    });
    let mut h = String::new();
    h.push_str(&format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Tally COB {id}</title><style>{STYLE}</style></head><body>\
         <h1>COB run <code>{id}</code> <span class=\"badge {st}\" id=\"status\">{st}</span></h1>\
         <div class=\"muted\">business date {date} · attempt {attempt} · key {key}</div>",
        id = esc(&r.run_id),
        st = r.status.as_str(),
        date = r.business_date,
        attempt = r.attempt,
        key = esc(&r.business_key),
    ));
    if let Some(c) = &r.cause {
        h.push_str(&format!(
            "<div class=\"cause\" id=\"cause\"><b>{}</b> {}</div>",
            esc(&c.error),
            esc(&c.cause)
        ));
    }
    if let Some(d) = &r.duplicate_of {
        h.push_str(&format!(
            "<p class=\"muted\">Started while {} held the date; the ledger posted each day once.</p>",
            esc(d)
        ));
    }
    let opt = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or("-".into(), ts);
    h.push_str(&format!(
        "<h2>Summary</h2><table id=\"summary\">\
         <tr><th>Created</th><td>{}</td></tr>\
         <tr><th>Started</th><td>{}</td></tr>\
         <tr><th>Ended</th><td>{}</td></tr>\
         <tr><th>Duration</th><td>{duration}</td></tr>\
         <tr><th>Partitions</th><td>{} of {}</td></tr>\
         <tr><th>Accounts processed</th><td class=\"num\">{}</td></tr>\
         <tr><th>Postings written</th><td class=\"num\">{}</td></tr>\
         <tr><th>Slowest partition</th><td>{slowest}</td></tr></table>",
        ts(r.created_at),
        opt(r.started_at),
        opt(r.ended_at),
        r.units_done(),
        r.units_total,
        group_thousands(r.items_processed()),
        group_thousands(postings),
    ));
    h.push_str("<h2>Partition timeline</h2>");
    h.push_str(&timeline(r));
    h.push_str(
        "<h2>Partitions</h2><table id=\"partitions\"><tr><th>Partition</th><th>Outcome</th>\
         <th>Start</th><th>End</th><th class=\"num\">Duration</th><th class=\"num\">Accounts</th>\
         <th class=\"num\">Postings</th></tr>",
    );
    for (name, u) in &r.units {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(name),
            esc(&u.outcome),
            ts(u.started_at),
            ts(u.ended_at),
            secs(u.duration_ms),
            group_thousands(u.items),
            group_thousands(u.postings)
        ));
    }
    h.push_str("</table><h2>Totals per currency</h2>");
    if r.totals.is_empty() {
        h.push_str(&format!(
            "<p class=\"muted\" id=\"totals\">No totals: the run {}.</p>",
            if r.status == RunStatus::Success {
                "posted nothing"
            } else {
                "did not complete"
            }
        ));
    } else {
        h.push_str(
            "<table id=\"totals\"><tr><th>Currency</th><th class=\"num\">Interest posted</th>\
             <th class=\"num\">Postings</th></tr>",
        );
        for t in &r.totals {
            h.push_str(&format!(
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&t.currency),
                esc(&t.amount),
                group_thousands(t.postings)
            ));
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_domain::run::{RunCause, RunTotal};

    fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
        s.parse().unwrap()
    }

    fn record() -> RunRecord {
        let mut r = RunRecord::new_cob(
            "2026-11-20".parse().unwrap(),
            1,
            RunStatus::Success,
            t("2026-11-21T01:00:00Z"),
        );
        r.started_at = Some(t("2026-11-21T01:00:01Z"));
        r.ended_at = Some(t("2026-11-21T01:02:01Z"));
        r.units_total = 2;
        for (name, start, end, items) in [
            ("p0", "2026-11-21T01:00:02Z", "2026-11-21T01:01:02Z", 1200),
            ("p1", "2026-11-21T01:00:02Z", "2026-11-21T01:02:00Z", 2500),
        ] {
            r.units.insert(
                name.into(),
                UnitRecord {
                    started_at: t(start),
                    ended_at: t(end),
                    items,
                    postings: items - 3,
                    duration_ms: (t(end) - t(start)).num_milliseconds() as u64,
                    outcome: "SUCCEEDED".into(),
                },
            );
        }
        r.totals = vec![RunTotal {
            currency: "JPY".into(),
            amount: "123456".into(),
            postings: 2,
        }];
        r
    }

    #[test]
    fn the_page_holds_the_figures_and_draws_each_partition_to_scale() {
        let h = cob_html(&record());
        for want in [
            "cob-2026-11-20-a1",
            ">SUCCESS<",
            "2 of 2",
            "3,700",
            "3,694",
            "p1 (118.0 s)",
            "123456",
            "2,500 accounts · 118.0 s",
        ] {
            assert!(h.contains(want), "missing {want}");
        }
        // p1 runs 118 s of a 118 s span: the full 640-pixel bar; p0 about half.
        assert!(h.contains("width=\"640.0\""), "{h}");
        assert!(h.contains("width=\"325.4\""), "{h}");
        // Self-contained: no script, nothing fetched.
        assert!(!h.contains("<script") && !h.contains("src=") && !h.contains("href="));
        assert!(!h.contains("https://"));
    }

    #[test]
    fn text_from_the_record_is_escaped() {
        let mut r = record();
        r.status = RunStatus::Failure;
        r.cause = Some(RunCause {
            error: "<script>alert(1)</script>".into(),
            cause: "a & b".into(),
        });
        let h = cob_html(&r);
        assert!(!h.contains("<script>"));
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && h.contains("a &amp; b"));
    }
}
