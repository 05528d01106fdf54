//! The fault breaker: a policy that faults several calls in a row at one stage is suspended at
//! that stage for a while. While suspended there it is not run at that stage at all — its
//! tenant's failure mode applies at once — so a policy that loops, hoards memory or logs
//! without end on every message costs its CPU deadline a few times, not on every message of its
//! tenant, and other tenants keep the machine. Each stage counts apart: a policy whose rcpt hook
//! loops while its connect hook works (and a tenant's connect hook runs at each of its
//! sessions) is still stopped at rcpt. After the suspension one call — one only, whatever the
//! concurrency — runs again as a trial: a success closes the breaker, another fault suspends it
//! for twice as long (up to [`MAX_SUSPENSION`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::context::Stage;

/// Faults in a row that suspend a policy.
pub const FAULTS_IN_A_ROW: u32 = 5;
/// The first suspension.
pub const FIRST_SUSPENSION: Duration = Duration::from_secs(10);
/// The longest suspension.
pub const MAX_SUSPENSION: Duration = Duration::from_secs(300);

/// One loaded policy's breaker, shared by all its sessions: one state per stage.
#[derive(Debug, Default)]
pub struct Breaker {
    stages: [Mutex<State>; Stage::ALL.len()],
}

#[derive(Debug, Default)]
struct State {
    /// Faults since the last success.
    in_a_row: u32,
    /// Suspended until then.
    until: Option<Instant>,
    /// The length of the last suspension (doubles while faults go on).
    last: Option<Duration>,
    /// When the trial call after a suspension started.
    trial: Option<Instant>,
}

/// A trial older than this is taken as lost (its session went away mid-call) and another
/// call may try.
const TRIAL_LOST_AFTER: Duration = Duration::from_secs(60);

impl Breaker {
    fn state(&self, stage: Stage) -> std::sync::MutexGuard<'_, State> {
        self.stages[stage as usize].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How much longer the policy is suspended at `stage` (None: run it). Once a suspension is
    /// over, the first caller gets None and runs the trial; the others stay suspended until it
    /// ends.
    pub fn suspended(&self, stage: Stage) -> Option<Duration> {
        let mut state = self.state(stage);
        let until = state.until?;
        let now = Instant::now();
        if let Some(left) = until.checked_duration_since(now).filter(|d| !d.is_zero()) {
            return Some(left);
        }
        if state.trial.is_some_and(|t| now.duration_since(t) < TRIAL_LOST_AFTER) {
            return Some(Duration::ZERO);
        }
        state.trial = Some(now);
        None
    }

    /// A call at `stage` succeeded.
    pub fn success(&self, stage: Stage) {
        let mut state = self.state(stage);
        if state.in_a_row != 0 || state.until.is_some() {
            *state = State::default();
        }
    }

    /// A call ended in a way that says nothing of the policy (the store was unreachable): a
    /// trial it was ends without a verdict, and the next call may try again.
    pub fn inconclusive(&self, stage: Stage) {
        self.state(stage).trial = None;
    }

    /// A call at `stage` faulted. Returns the suspension it starts, if it starts one.
    pub fn fault(&self, stage: Stage) -> Option<Duration> {
        let mut state = self.state(stage);
        state.in_a_row = state.in_a_row.saturating_add(1);
        let now = Instant::now();
        let suspend = match state.until {
            None => state.in_a_row >= FAULTS_IN_A_ROW,
            // The trial failed (or a call that began before the suspension ended after it).
            Some(until) => state.trial.is_some() || until <= now,
        };
        if !suspend {
            return None;
        }
        let length = state.last.map_or(FIRST_SUSPENSION, |d| (d * 2).min(MAX_SUSPENSION));
        state.until = Some(now + length);
        state.last = Some(length);
        state.trial = None;
        Some(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_faults_in_a_row_and_a_success_closes_it() {
        let b = Breaker::default();
        for _ in 1..FAULTS_IN_A_ROW {
            assert_eq!(b.fault(Stage::Rcpt), None);
        }
        b.success(Stage::Rcpt);
        for _ in 1..FAULTS_IN_A_ROW {
            assert_eq!(b.fault(Stage::Rcpt), None);
        }
        assert_eq!(b.fault(Stage::Rcpt), Some(FIRST_SUSPENSION));
        assert!(b.suspended(Stage::Rcpt).is_some_and(|d| d <= FIRST_SUSPENSION));
        // Other stages run on, and their successes do not close it.
        assert_eq!(b.suspended(Stage::Connect), None);
        b.success(Stage::Connect);
        assert!(b.suspended(Stage::Rcpt).is_some());
        // Faults of calls already running when it opened do not extend it.
        assert_eq!(b.fault(Stage::Rcpt), None);
        b.success(Stage::Rcpt);
        assert_eq!(b.suspended(Stage::Rcpt), None);
    }

    #[test]
    fn one_trial_at_a_time_and_suspensions_double_while_faults_go_on() {
        let b = Breaker::default();
        let mut state = b.state(Stage::Rcpt);
        state.in_a_row = FAULTS_IN_A_ROW;
        state.last = Some(Duration::from_secs(100));
        state.until = Some(Instant::now());
        drop(state);
        // The suspension is over: one caller runs the trial, the others wait for it.
        assert_eq!(b.suspended(Stage::Rcpt), None);
        assert_eq!(b.suspended(Stage::Rcpt), Some(Duration::ZERO));
        assert_eq!(b.fault(Stage::Rcpt), Some(Duration::from_secs(200)));
        assert!(b.suspended(Stage::Rcpt).is_some_and(|d| d > Duration::from_secs(190)));
        b.state(Stage::Rcpt).until = Some(Instant::now());
        assert_eq!(b.suspended(Stage::Rcpt), None);
        assert_eq!(b.fault(Stage::Rcpt), Some(MAX_SUSPENSION));
        // A trial that meets an unreachable store says nothing: the next call tries again.
        b.state(Stage::Rcpt).until = Some(Instant::now());
        assert_eq!(b.suspended(Stage::Rcpt), None);
        b.inconclusive(Stage::Rcpt);
        assert_eq!(b.suspended(Stage::Rcpt), None);
        assert_eq!(b.fault(Stage::Rcpt), Some(MAX_SUSPENSION));
        // A successful trial closes it.
        b.state(Stage::Rcpt).until = Some(Instant::now());
        assert_eq!(b.suspended(Stage::Rcpt), None);
        b.success(Stage::Rcpt);
        assert_eq!(b.suspended(Stage::Rcpt), None);
        assert_eq!(b.fault(Stage::Rcpt), None);
    }
}
