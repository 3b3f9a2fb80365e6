//! Run outcomes: which of an envoy's queued reports are stored as rows of their own,
//! and which are counted as repeats of the row before them.
//!
//! A converged envoy reports the same thing on every run, down to its timings. A row
//! per run would cost a write per envoy per check-in (100,000 envoys at 15 s: 576
//! million rows a day) and tell nothing the first row did not. So each report's
//! *outcome* — the report without its `duration_ms` fields — is compared with the run
//! before it: a run with the same outcome is counted on the row that first reported
//! it (how many, the newest one's sequence number and time), and only a run with a new
//! outcome is stored as a row. The count of an envoy's newest row is kept on the
//! envoy's own row, which every check-in rewrites anyway, and moves to the report's
//! row when a different outcome ends the streak.

use sha2::{Digest as _, Sha256};
use vigo_store::{NewReport, Repeats};

/// SHA-256 of a report's outcome.
pub type Outcome = [u8; 32];

/// A report's outcome, `None` when the text is not JSON. Timings are left out:
/// `duration_ms` of the run's summary and of each resource.
pub fn outcome(json: &str) -> Option<Outcome> {
    let mut v: serde_json::Value = serde_json::from_str(json).ok()?;
    if let Some(run) = v.as_object_mut() {
        if let Some(serde_json::Value::Object(summary)) = run.get_mut("summary") {
            summary.shift_remove("duration_ms");
        }
        if let Some(serde_json::Value::Array(resources)) = run.get_mut("resources") {
            for r in resources.iter_mut().filter_map(serde_json::Value::as_object_mut) {
                r.shift_remove("duration_ms");
            }
        }
    }
    // Hashed as it is written out, without an intermediate buffer.
    let mut hasher = Sha256::new();
    serde_json::to_writer(&mut hasher, &v).ok()?;
    Some(hasher.finalize().into())
}

/// The outcome of a stored report read back from the store, where it is JSON by
/// construction; any other text stands for an outcome of its own.
pub fn stored_outcome(json: &str) -> Outcome {
    outcome(json).unwrap_or_else(|| Sha256::digest(json.as_bytes()).into())
}

/// An envoy's newest report row and the runs that repeated it since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Streak {
    /// The row's sequence number and outcome.
    pub seq: u64,
    pub outcome: Outcome,
    pub repeats: Option<Repeats>,
}

impl Streak {
    /// The newest run the streak covers.
    pub fn reach(&self) -> u64 {
        self.repeats.and_then(|r| u64::try_from(r.last_seq).ok()).unwrap_or(self.seq).max(self.seq)
    }
}

/// A new report, usable and parsed: `(seq, JSON, outcome)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub seq: i64,
    pub json: String,
    pub outcome: Outcome,
}

/// What one delivery of reports writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Runs with a new outcome, in order; the last one is the streak's row.
    pub rows: Vec<NewReport>,
    /// An earlier row whose streak these runs ended, with its repeats.
    pub closes: Option<(i64, Repeats)>,
}

/// Sorts `runs` (new reports of one delivery, in sequence order, received at `at`)
/// into rows and repeats after `streak`, the envoy's newest row so far. Returns what
/// to write and the streak after it (`streak` again when `runs` is empty).
pub fn plan(streak: Option<Streak>, runs: Vec<Run>, at: i64) -> (Plan, Option<Streak>) {
    let mut current = streak;
    let mut plan = Plan::default();
    for run in runs {
        let Ok(seq) = u64::try_from(run.seq) else { continue };
        match current.as_mut() {
            Some(s) if s.outcome == run.outcome => {
                let count = s.repeats.map_or(0, |r| r.count) + 1;
                s.repeats = Some(Repeats { count, last_seq: run.seq, last_at: at });
            }
            _ => {
                // The streak ends: its repeats go on its row, stored in this delivery
                // or an earlier one.
                if let Some(ended) = current {
                    match plan.rows.last_mut() {
                        Some(row) if u64::try_from(row.seq).ok() == Some(ended.seq) => row.repeats = ended.repeats,
                        _ => {
                            plan.closes = ended.repeats.map(|r| (i64::try_from(ended.seq).unwrap_or(i64::MAX), r));
                        }
                    }
                }
                current = Some(Streak { seq, outcome: run.outcome, repeats: None });
                plan.rows.push(NewReport { seq: run.seq, json: run.json, repeats: None });
            }
        }
    }
    (plan, current)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONVERGED: &str = r#"{"mode":"enforce","resources":[{"module":"m","name":"motd","type":"file","status":"unchanged","changes":[],"duration_ms":3}],"summary":{"total":1,"unchanged":1,"changed":0,"failed":0,"skipped":0,"duration_ms":4}}"#;

    fn run(seq: i64, json: &str) -> Run {
        Run { seq, json: json.to_owned(), outcome: outcome(json).expect("JSON") }
    }

    fn repeats(count: i64, last_seq: i64, last_at: i64) -> Option<Repeats> {
        Some(Repeats { count, last_seq, last_at })
    }

    #[test]
    fn timings_are_not_part_of_the_outcome() {
        let slower = CONVERGED.replace("\"duration_ms\":3", "\"duration_ms\":900").replace(":4}}", ":950}}");
        assert_ne!(slower, CONVERGED);
        assert_eq!(outcome(&slower), outcome(CONVERGED));
        let drifted = CONVERGED.replace("\"unchanged\",", "\"changed\",");
        assert_ne!(outcome(&drifted), outcome(CONVERGED), "a status is part of it");
        let nested = CONVERGED.replace("\"changes\":[]", "\"changes\":[{\"duration_ms\":1}]");
        assert_ne!(outcome(&nested), outcome(CONVERGED), "only the run's and each resource's timing is left out");
        assert_eq!(outcome("{cut"), None);
        assert_eq!(outcome("[1, 2]"), outcome("[1,2]"), "any JSON has an outcome");
        assert_eq!(stored_outcome(CONVERGED), outcome(CONVERGED).expect("JSON"));
        assert_ne!(stored_outcome("{cut"), stored_outcome("{cat"));
    }

    #[test]
    fn repeats_are_counted_until_the_outcome_changes() {
        let a = CONVERGED;
        let b = r#"{"error":"policy does not validate"}"#;
        // The first delivery: a row.
        let (first, streak) = plan(None, vec![run(1, a)], 10);
        assert_eq!(first.rows, [NewReport { seq: 1, json: a.to_owned(), repeats: None }]);
        assert_eq!(first.closes, None);
        let streak = streak.expect("streak");
        assert_eq!((streak.seq, streak.repeats, streak.reach()), (1, None, 1));

        // Two more runs like it: counted, nothing stored.
        let (second, streak) = plan(Some(streak), vec![run(2, a), run(3, a)], 20);
        assert_eq!(second, Plan::default());
        let streak = streak.expect("streak");
        assert_eq!((streak.seq, streak.repeats, streak.reach()), (1, repeats(2, 3, 20), 3));

        // A backlog: run 4 repeats, 5 differs (closing row 1), 6 repeats 5, 7 differs
        // (closing row 5 in this delivery), 8 repeats 7 and stays open.
        let (third, streak) = plan(Some(streak), vec![run(4, a), run(5, b), run(6, b), run(7, a), run(8, a)], 30);
        assert_eq!(third.closes, Some((1, Repeats { count: 3, last_seq: 4, last_at: 30 })));
        let rows: Vec<(i64, Option<Repeats>)> = third.rows.iter().map(|r| (r.seq, r.repeats)).collect();
        assert_eq!(rows, [(5, repeats(1, 6, 30)), (7, None)]);
        let streak = streak.expect("streak");
        assert_eq!((streak.seq, streak.repeats, streak.reach()), (7, repeats(1, 8, 30), 8));

        // Nothing delivered: the streak is unchanged.
        assert_eq!(plan(Some(streak), vec![], 40), (Plan::default(), Some(streak)));
    }

    #[test]
    fn a_new_outcome_after_a_row_without_repeats_closes_nothing() {
        let (_, streak) = plan(None, vec![run(1, "{\"a\":1}")], 1);
        let (next, streak) = plan(streak, vec![run(2, "{\"a\":2}")], 2);
        assert_eq!((next.closes, next.rows.len()), (None, 1));
        assert_eq!(streak.map(|s| (s.seq, s.repeats)), Some((2, None)));
    }
}
