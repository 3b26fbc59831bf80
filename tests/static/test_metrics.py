"""The metrics the template's alarms and dashboard read are the ones the
functions print (Embedded Metric Format, names in shared/tally-aws/src/emf.rs),
with the dimensions the functions give them."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMF = ROOT / "shared/tally-aws/src/emf.rs"


def emitted_names() -> set[str]:
    text = EMF.read_text()
    return set(re.findall(r'pub const [A-Z_]+: &str = "([A-Za-z]+)";', text)) - {"Tally"}


def functions_emitting() -> dict[str, set[str]]:
    """Function name -> metric names it emits: each source file that builds
    `Metrics::new("f")` is f's, and every `names::X` in it counts for f."""
    out: dict[str, set[str]] = {}
    consts = dict(re.findall(r'pub const ([A-Z_]+): &str = "([A-Za-z]+)";', EMF.read_text()))
    for rs in ROOT.glob("functions/*/src/*.rs"):
        text = rs.read_text()
        fns = set(re.findall(r'Metrics::new\("([a-z-]+)"\)', text))
        assert len(fns) <= 1, f"{rs}: metrics of several functions {fns}"
        for fn in fns:
            names = {consts[c] for c in re.findall(r"names::([A-Z_]+)", text) if c in consts}
            out.setdefault(fn, set()).update(names)
    return out


def tally_metrics_in_template(template) -> list[tuple[str, str, str]]:
    """(where, metric, function) of every Tally-namespace metric an alarm or the dashboard reads."""
    found = []
    for lid, res in template["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::CloudWatch::Alarm" and props.get("Namespace") == "Tally":
            fn = next(d["Value"] for d in props["Dimensions"] if d["Name"] == "Function")
            found.append((lid, props["MetricName"], fn))
        if res["Type"] == "AWS::CloudWatch::Dashboard":
            body = props["DashboardBody"]
            text = body["Fn::Sub"] if isinstance(body, dict) else body
            text = re.sub(r"\$\{[^}]+\}", "X", text)
            for w in json.loads(text)["widgets"]:
                for row in w["properties"]["metrics"]:
                    if row[0] == "Tally":
                        dims = dict(zip(row[2::2], row[3::2]))
                        found.append((f"{lid}:{w['properties']['title']}", row[1], dims["Function"]))
    return found


def test_every_metric_read_by_an_alarm_or_the_dashboard_is_emitted_by_that_function(template):
    emitting = functions_emitting()
    assert emitting, "no Metrics::new(...) found in functions/"
    used = tally_metrics_in_template(template)
    assert len(used) >= 15, used
    for where, metric, fn in used:
        assert metric in emitted_names(), f"{where}: {metric} is not an EMF name"
        assert metric in emitting.get(fn, set()), f"{where}: {fn} does not emit {metric} (it emits {sorted(emitting.get(fn, []))})"


def test_the_check_catches_a_metric_no_function_emits(template):
    import copy
    t = copy.deepcopy(template)
    t["Resources"]["CobRunTooLongAlarm"]["Properties"]["MetricName"] = "RunDurationSeconds"
    bad = [u for u in tally_metrics_in_template(t) if u[1] not in emitted_names()]
    assert bad and bad[0][0] == "CobRunTooLongAlarm"
