//! CloudWatch Embedded Metric Format: one JSON line on stdout per metric
//! set, which Lambda's log pipeline turns into metrics with no API call (and
//! no IAM grant). The line is also a structured log line: it carries the
//! run id and any other property given.
//!
//! Namespace `Tally`; every set has the dimension `Function` and may add
//! one more (`Status` for reconciliation counts). Names and units are the
//! contract the template's alarms and dashboard read; they are constants.

use serde_json::{json, Map, Value};

pub const NAMESPACE: &str = "Tally";

pub mod names {
    pub const RUN_DURATION_MS: &str = "RunDurationMs";
    pub const PARTITION_COUNT: &str = "PartitionCount";
    pub const PARTITION_DURATION_MS: &str = "PartitionDurationMs";
    pub const SLOWEST_PARTITION_MS: &str = "SlowestPartitionMs";
    pub const ACCOUNTS_PROCESSED: &str = "AccountsProcessed";
    pub const POSTINGS_WRITTEN: &str = "PostingsWritten";
    pub const RUNS_SUCCEEDED: &str = "RunsSucceeded";
    pub const RUNS_FAILED: &str = "RunsFailed";
    pub const RUNS_CANCELED: &str = "RunsCanceled";
    pub const WRITE_RETRIES: &str = "ThrottledWriteRetries";
    pub const RECORDS_INGESTED: &str = "RecordsIngested";
    pub const RECON_RECORDS: &str = "ReconRecords";
    pub const RUNS_CORRECTED: &str = "RunsCorrected";
    pub const RUNS_UNREADABLE: &str = "RunsUnreadable";
    pub const DEADLINE_MISSED: &str = "CobDeadlineMissed";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One metric set: dimensions, values and properties, printed as one line.
#[derive(Debug, Clone)]
pub struct Metrics {
    dimensions: Vec<(String, String)>,
    values: Vec<(&'static str, Unit, f64)>,
    properties: Map<String, Value>,
}

impl Metrics {
    /// A set for `function` (the `Function` dimension).
    pub fn new(function: &str) -> Metrics {
        Metrics {
            dimensions: vec![("Function".into(), function.into())],
            values: Vec::new(),
            properties: Map::new(),
        }
    }

    pub fn dimension(mut self, name: &str, value: &str) -> Metrics {
        self.dimensions.push((name.into(), value.into()));
        self
    }

    pub fn count(mut self, name: &'static str, v: u64) -> Metrics {
        self.values.push((name, Unit::Count, v as f64));
        self
    }

    pub fn ms(mut self, name: &'static str, v: u64) -> Metrics {
        self.values.push((name, Unit::Milliseconds, v as f64));
        self
    }

    /// A property: searchable in Logs Insights, not a metric (run ids).
    pub fn property(mut self, name: &str, v: impl Into<Value>) -> Metrics {
        self.properties.insert(name.into(), v.into());
        self
    }

    /// The EMF line at `timestamp_ms` (milliseconds since the epoch).
    pub fn line(&self, timestamp_ms: i64) -> String {
        let mut root = self.properties.clone();
        for (k, v) in &self.dimensions {
            root.insert(k.clone(), Value::String(v.clone()));
        }
        for (name, _, v) in &self.values {
            root.insert((*name).into(), json!(v));
        }
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [self.dimensions.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()],
                    "Metrics": self.values.iter()
                        .map(|(n, u, _)| json!({"Name": n, "Unit": u.as_str()}))
                        .collect::<Vec<_>>(),
                }],
            }),
        );
        Value::Object(root).to_string()
    }

    /// Prints the line on stdout (Lambda sends stdout to CloudWatch Logs).
    pub fn emit(&self) {
        println!("{}", self.line(chrono::Utc::now().timestamp_millis()));
    }
}

/// Checks that `line` is a well-formed EMF line: every declared metric is a
/// number at the top level, every dimension a string. Returns the object.
/// Used by the tests that parse what the functions print.
pub fn parse_line(line: &str) -> Result<Map<String, Value>, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(root) = v else {
        return Err("not an object".into());
    };
    let aws = root.get("_aws").ok_or("no _aws")?;
    if !aws["Timestamp"].is_i64() {
        return Err("_aws.Timestamp is not an integer".into());
    }
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .ok_or("no CloudWatchMetrics")?;
    for d in directives {
        if d["Namespace"].as_str().is_none() {
            return Err("a directive without Namespace".into());
        }
        for set in d["Dimensions"].as_array().ok_or("no Dimensions")? {
            for name in set.as_array().ok_or("a dimension set is not a list")? {
                let name = name.as_str().ok_or("a dimension name is not a string")?;
                if !root.get(name).is_some_and(Value::is_string) {
                    return Err(format!("dimension {name} is not a string member"));
                }
            }
        }
        for m in d["Metrics"].as_array().ok_or("no Metrics")? {
            let name = m["Name"].as_str().ok_or("a metric without Name")?;
            if !root.get(name).is_some_and(Value::is_number) {
                return Err(format!("metric {name} is not a number member"));
            }
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_declares_each_metric_and_carries_its_value_and_properties() {
        let line = Metrics::new("cob-partition")
            .ms(names::PARTITION_DURATION_MS, 1250)
            .count(names::ACCOUNTS_PROCESSED, 4000)
            .property("run_id", "cob-2026-11-20-a1")
            .property("partition", 3)
            .line(1_763_700_000_000);
        let m = parse_line(&line).unwrap();
        assert_eq!(m["Function"], "cob-partition");
        assert_eq!(m["PartitionDurationMs"], 1250.0);
        assert_eq!(m["AccountsProcessed"], 4000.0);
        assert_eq!(m["run_id"], "cob-2026-11-20-a1");
        let d = &m["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(d["Namespace"], "Tally");
        assert_eq!(d["Dimensions"], json!([["Function"]]));
        assert_eq!(
            d["Metrics"],
            json!([
                {"Name": "PartitionDurationMs", "Unit": "Milliseconds"},
                {"Name": "AccountsProcessed", "Unit": "Count"}
            ])
        );
        assert_eq!(m["_aws"]["Timestamp"], 1_763_700_000_000i64);
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_second_dimension_is_declared_with_the_first() {
        let line = Metrics::new("recon-rollup")
            .dimension("Status", "MATCHED")
            .count(names::RECON_RECORDS, 7)
            .line(0);
        let m = parse_line(&line).unwrap();
        assert_eq!(
            m["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function", "Status"]])
        );
    }

    #[test]
    fn malformed_lines_are_refused_with_the_reason() {
        assert!(parse_line("{}").unwrap_err().contains("_aws"));
        let bad = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"Tally","Dimensions":[["Function"]],"Metrics":[{"Name":"X"}]}]},"Function":"f"}"#;
        assert!(parse_line(bad).unwrap_err().contains("metric X"));
        let bad = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"Tally","Dimensions":[["Function"]],"Metrics":[]}]}}"#;
        assert!(parse_line(bad).unwrap_err().contains("dimension Function"));
    }
}
