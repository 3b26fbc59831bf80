//! The stable error names functions return as `errorType`. The state
//! machine's `Retry`/`Catch` lists match these strings exactly, and a test
//! checks every `ErrorEquals` in `statemachines/` against [`ALL`].

pub const TRANSIENT_STORE_ERROR: &str = "TransientStoreError";
pub const STORE_ERROR: &str = "StoreError";
pub const INVALID_INPUT: &str = "InvalidInput";
pub const CONFIG_ERROR: &str = "ConfigError";
pub const LEDGER_INCONSISTENCY: &str = "LedgerInconsistency";
pub const TRANSIENT_PUBLISH_ERROR: &str = "TransientPublishError";
pub const PUBLISH_ERROR: &str = "PublishError";
/// The rollup found fewer shard summaries than shards: some are still being
/// written (the completion watermark is not reached yet).
pub const RECON_INCOMPLETE: &str = "ReconIncomplete";
/// The run was canceled (or ended) while this unit ran: it stopped at a page
/// boundary, every account it wrote whole. Never retried.
pub const RUN_CANCELED: &str = "RunCanceled";

/// Every name a Tally function can emit.
pub const ALL: &[&str] = &[
    TRANSIENT_STORE_ERROR,
    STORE_ERROR,
    INVALID_INPUT,
    CONFIG_ERROR,
    LEDGER_INCONSISTENCY,
    TRANSIENT_PUBLISH_ERROR,
    PUBLISH_ERROR,
    RECON_INCOMPLETE,
    RUN_CANCELED,
];

/// Names that mean "the same call may succeed if tried again".
pub const TRANSIENT: &[&str] = &[
    TRANSIENT_STORE_ERROR,
    TRANSIENT_PUBLISH_ERROR,
    RECON_INCOMPLETE,
];

/// Errors the Lambda service raises on its own (not the function's code),
/// which the state machine may retry.
pub const LAMBDA_SERVICE: &[&str] = &[
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
];

/// What the Lambda service reports when it stopped a function itself: the
/// invocation ran past its `Timeout` (`Sandbox.Timedout`), its process died
/// (`Runtime.ExitError`: a crash, or a kill), or it passed its `MemorySize`
/// (`Runtime.OutOfMemory`). Every Tally function resumes or repeats its work
/// idempotently, so a state may retry the first two; running out of memory
/// would happen again, so it is caught, never retried.
pub const LAMBDA_RUNTIME: &[&str] = &[
    "Sandbox.Timedout",
    "Runtime.ExitError",
    "Runtime.OutOfMemory",
];
pub const LAMBDA_RUNTIME_RETRIED: &[&str] = &["Sandbox.Timedout", "Runtime.ExitError"];

/// What an `ecs:runTask.sync` state sees when the container's task fails or
/// ECS refuses the call. The ingest task resumes from its checkpoint, so a
/// container state may retry these; no other state may.
pub const ECS_TASK: &[&str] = &[
    "States.TaskFailed",
    "ECS.AmazonECSException",
    "ECS.ServerException",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Every `Retry`/`Catch` of every state, nested Map processors included.
    type Handler<'a> = (&'a str, &'a str, Vec<&'a str>, bool);

    /// (state, Retry or Catch, names, whether the state runs an ECS task).
    fn handlers<'a>(states: &'a Value, out: &mut Vec<Handler<'a>>) {
        for (name, state) in states.as_object().expect("States is an object") {
            let ecs = state["Resource"]
                .as_str()
                .is_some_and(|r| r.contains(":ecs:runTask"));
            for kind in ["Retry", "Catch"] {
                for h in state[kind].as_array().into_iter().flatten() {
                    let names = h["ErrorEquals"]
                        .as_array()
                        .expect("ErrorEquals")
                        .iter()
                        .map(|n| n.as_str().expect("error names are strings"))
                        .collect();
                    out.push((name.as_str(), kind, names, ecs));
                }
            }
            for inner in [&state["ItemProcessor"], &state["Iterator"]] {
                if inner.is_object() {
                    handlers(&inner["States"], out);
                }
            }
            for branch in state["Branches"].as_array().into_iter().flatten() {
                handlers(&branch["States"], out);
            }
        }
    }

    #[test]
    fn every_error_name_in_the_state_machines_is_one_the_code_emits() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../statemachines");
        let mut files = 0;
        for entry in std::fs::read_dir(dir).expect("statemachines/") {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            files += 1;
            let asl: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let mut found = Vec::new();
            handlers(&asl["States"], &mut found);
            assert!(
                !found.is_empty(),
                "{}: no Retry or Catch at all",
                path.display()
            );
            for (state, kind, names, ecs) in found {
                for n in names {
                    let known = ALL.contains(&n)
                        || LAMBDA_SERVICE.contains(&n)
                        || (!ecs && LAMBDA_RUNTIME.contains(&n))
                        || (ecs && ECS_TASK.contains(&n))
                        || n.starts_with("States.");
                    assert!(
                        known,
                        "{}: {state} {kind} matches `{n}`, which no Tally function emits",
                        path.display()
                    );
                    if kind == "Retry" {
                        assert!(
                            TRANSIENT.contains(&n)
                                || LAMBDA_SERVICE.contains(&n)
                                || (!ecs && LAMBDA_RUNTIME_RETRIED.contains(&n))
                                || (ecs && ECS_TASK.contains(&n)),
                            "{}: {state} retries `{n}`, which is not transient",
                            path.display()
                        );
                    }
                }
            }
        }
        assert!(files > 0, "no state machines found in {dir}");
    }
}
