//! `now-millis`: the time a policy sees — the system clock, or a pinned one for reproducible
//! runs of `sluice policy test --now`.

/// Where `now-millis` reads the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The system clock.
    System,
    /// The system clock shifted so that it read `at_start_millis` when the clock was made;
    /// `sluice policy test --now` uses it for reproducible time-dependent policies.
    Pinned {
        /// What the clock read at `origin`.
        at_start_millis: i64,
        /// When it was pinned (system milliseconds).
        origin_millis: i64,
    },
}

fn system_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

impl Clock {
    /// A clock that reads `millis` now and advances in real time.
    pub fn pinned(millis: i64) -> Self {
        Clock::Pinned { at_start_millis: millis, origin_millis: system_millis() }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_millis(&self) -> i64 {
        match *self {
            Clock::System => system_millis(),
            Clock::Pinned { at_start_millis, origin_millis } => {
                at_start_millis.saturating_add(system_millis().saturating_sub(origin_millis))
            }
        }
    }
}
