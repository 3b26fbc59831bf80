//! The run report: one self-contained HTML page (inline CSS and SVG, no
//! script, no network) that shows where a run's time went and what it did.
//!
//! For a COB: the run's status, timings and cause; a timeline of its
//! partitions (start, end, accounts), drawn to scale; the partition table;
//! the posted totals per currency.
//!
//! For a reconciliation: the run's status, timings and cause; the records
//! of each side; a timeline of its shards; the breaks by status and
//! currency; the exceptions table (the first [`EXCEPTIONS_SHOWN_MAX`], the
//! rest in the exceptions CSV beside the report).

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
/// Unit names in natural order (`s2` before `s10`).
fn natural(name: &str) -> (&str, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, n) = name.split_at(name.len() - digits);
    (stem, n.parse().unwrap_or(0))
}

fn timeline(r: &RunRecord, items: &str) -> String {
    let mut units: Vec<(&String, &UnitRecord)> = r.units.iter().collect();
    units.sort_by_key(|(n, _)| natural(n));
    let (Some(t0), Some(t1)) = (
        units.iter().map(|(_, u)| u.started_at).min(),
        units.iter().map(|(_, u)| u.ended_at).max(),
    ) else {
        return "<p class=\"muted\">No unit has reported yet.</p>".into();
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
             <text x=\"{:.1}\" y=\"{:.1}\">{} {items} · {}</text>",
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
    head(&mut h, r, "COB");
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
    h.push_str(&timeline(r, "accounts"));
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

/// Exception rows a reconciliation page shows; the CSV has them all.
pub const EXCEPTIONS_SHOWN_MAX: usize = 1_000;

/// The page's head, title line and the cause, for both kinds of run.
fn head(h: &mut String, r: &RunRecord, what: &str) {
    h.push_str(&format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Tally {what} {id}</title><style>{STYLE}</style></head><body>\
         <h1>{what} run <code>{id}</code> <span class=\"badge {st}\" id=\"status\">{st}</span></h1>\
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
}

fn json_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The report of a reconciliation run; `report` is its stored report, when
/// the run got that far.
pub fn recon_html(r: &RunRecord, report: Option<&tally_domain::recon::rollup::Report>) -> String {
    let mut h = String::new();
    head(&mut h, r, "Reconciliation");
    let opt = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or("-".into(), ts);
    let duration = match (r.started_at, r.ended_at) {
        (Some(s), Some(e)) => secs((e - s).num_milliseconds().max(0) as u64),
        _ => "-".into(),
    };
    let side = |s: &str| group_thousands(r.progress.get(s).copied().unwrap_or(0));
    h.push_str(&format!(
        "<h2>Summary</h2><table id=\"summary\">\
         <tr><th>Created</th><td>{}</td></tr>\
         <tr><th>Started</th><td>{}</td></tr>\
         <tr><th>Ended</th><td>{}</td></tr>\
         <tr><th>Duration</th><td>{duration}</td></tr>\
         <tr><th>Settlement records in</th><td class=\"num\">{}</td></tr>\
         <tr><th>Internal records in</th><td class=\"num\">{}</td></tr>\
         <tr><th>Shards matched</th><td>{} of {}</td></tr>\
         <tr><th>Executions</th><td>{}</td></tr>\
         <tr><th>Report</th><td>{}</td></tr></table>",
        ts(r.created_at),
        opt(r.started_at),
        opt(r.ended_at),
        side("settlement"),
        side("internal"),
        r.units_done(),
        r.units_total,
        r.executions.len(),
        r.report_key.as_deref().map_or("-".into(), esc),
    ));
    if !r.idle.is_empty() {
        h.push_str(
            "<h2>Landings with nothing to do</h2><table id=\"idle\">\
             <tr><th>Execution</th><th>Found</th><th>Detail</th></tr>",
        );
        for (name, c) in &r.idle {
            h.push_str(&format!(
                "<tr class=\"idle\"><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(name),
                esc(&c.error),
                esc(&c.cause)
            ));
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Shard timeline</h2>");
    h.push_str(&timeline(r, "records"));
    let Some(rep) = report else {
        h.push_str("<h2>Breaks</h2><p class=\"muted\" id=\"breaks\">No report: the run did not reconcile.</p></body></html>\n");
        return h;
    };
    h.push_str(&format!(
        "<h2>Breaks by status and currency</h2>\
         <p>Report <b id=\"report-status\">{}</b> · control totals <b id=\"control\">{}</b></p>\
         <table id=\"breaks\"><tr><th>Currency</th><th class=\"num\">Matched</th>\
         <th class=\"num\">Mismatched</th><th class=\"num\">Unmatched settlement</th>\
         <th class=\"num\">Unmatched internal</th><th class=\"num\">Internal net</th>\
         <th class=\"num\">Settlement net</th><th class=\"num\">Difference</th></tr>",
        json_name(&rep.status),
        if rep.control_totals_agree {
            "agree"
        } else {
            "DO NOT AGREE"
        },
    ));
    for c in &rep.currencies {
        h.push_str(&format!(
            "<tr data-currency=\"{cur}\"><td>{cur}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            group_thousands(c.matched),
            group_thousands(c.mismatched),
            group_thousands(c.unmatched_settlement),
            group_thousands(c.unmatched_internal),
            c.internal_net,
            c.settlement_net,
            c.difference,
            cur = esc(c.currency.code()),
        ));
    }
    let n = rep.exceptions.len();
    h.push_str(&format!(
        "</table><h2>Exceptions ({})</h2><table id=\"exceptions\"><tr><th>Transaction</th>\
         <th>Status</th><th>Fields</th><th>Currency</th><th class=\"num\">Internal</th>\
         <th class=\"num\">Settlement</th></tr>",
        group_thousands(n as u64)
    ));
    let amount = |a: Option<rust_decimal::Decimal>| a.map_or("-".into(), |a| a.to_string());
    for e in rep.exceptions.iter().take(EXCEPTIONS_SHOWN_MAX) {
        let fields: Vec<String> = e.fields.iter().map(json_name).collect();
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            esc(&e.transaction_id),
            esc(&json_name(&e.status)),
            esc(&fields.join(", ")),
            esc(e.currency.code()),
            amount(e.internal_amount),
            amount(e.settlement_amount),
        ));
    }
    h.push_str("</table>");
    if n > EXCEPTIONS_SHOWN_MAX {
        h.push_str(&format!(
            "<p class=\"muted\" id=\"more\">{} more in the exceptions CSV beside the report.</p>",
            group_thousands((n - EXCEPTIONS_SHOWN_MAX) as u64)
        ));
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

    #[test]
    fn a_reconciliation_page_shows_its_breaks_by_status_and_currency_and_its_exceptions() {
        use tally_domain::recon::sample::{expected_report, SampleSpec};
        let spec = SampleSpec::new("ACME", "2026-11-20".parse().unwrap(), 3_000, 7);
        let rep = expected_report(&spec);
        // A run id with markup in it (names are validated upstream; the page
        // must not rely on that).
        let mut r = RunRecord::new_recon("ACME<&>", spec.file_date, 1, t("2026-11-21T01:00:00Z"));
        r.status = RunStatus::Success;
        r.units_total = 1;
        r.progress.insert("settlement".into(), 3_000);
        r.units.insert(
            "s0".into(),
            UnitRecord {
                started_at: t("2026-11-21T01:00:05Z"),
                ended_at: t("2026-11-21T01:00:07Z"),
                items: 5_990,
                postings: 0,
                duration_ms: 2_000,
                outcome: "SUCCEEDED".into(),
            },
        );
        let h = recon_html(&r, Some(&rep));
        assert!(
            h.contains("recon-ACME&lt;&amp;&gt;-2026-11-20-a1"),
            "program escaped"
        );
        assert!(!h.contains("ACME<&>"));
        assert!(h.contains("5,990 records · 2.0 s"));
        assert_eq!(natural("s10"), ("s", 10));
        assert!(natural("s2") < natural("s10") && natural("p9") < natural("s0"));
        for c in &rep.currencies {
            let row = format!(
                "<tr data-currency=\"{cur}\"><td>{cur}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
                group_thousands(c.matched),
                group_thousands(c.mismatched),
                cur = c.currency.code()
            );
            assert!(h.contains(&row), "missing {row}");
        }
        assert!(!rep.exceptions.is_empty(), "the sample injects breaks");
        let rows = h.matches("<tr><td>").count(); // exception rows (the others start <tr><th> or <tr data-)
        assert_eq!(rows, rep.exceptions.len().min(EXCEPTIONS_SHOWN_MAX));
        assert!(h.contains(&rep.exceptions[0].transaction_id));
        assert!(!h.contains("id=\"idle\""), "no landing was idle");
        // No report: said so, no breaks table.
        r.status = RunStatus::Canceled;
        let h = recon_html(&r, None);
        assert!(h.contains("the run did not reconcile") && !h.contains("data-currency"));
    }

    #[test]
    fn a_reconciliation_page_lists_the_landings_that_had_nothing_to_do() {
        let mut r = RunRecord::new_recon(
            "ACME",
            "2026-11-20".parse().unwrap(),
            2,
            t("2026-11-21T01:00:00Z"),
        );
        r.status = RunStatus::Success;
        r.idle.insert(
            "e-7".into(),
            RunCause {
                error: "Superseded".into(),
                cause: "settlement/ACME/2026-11-20/v7.dat: version 7 <older> than 8".into(),
            },
        );
        let h = recon_html(&r, None);
        assert!(h.contains("<h2>Landings with nothing to do</h2>"));
        assert_eq!(h.matches("<tr class=\"idle\">").count(), 1);
        assert!(h.contains("<code>e-7</code></td><td>Superseded</td><td>settlement/ACME/2026-11-20/v7.dat: version 7 &lt;older&gt; than 8</td>"), "{h}");
    }
}
