//! Panics the relay contains — a library that panics on a malformed message, record or
//! signature — are its input's fault, not a crash: they are logged once, as one warning line
//! by whoever contains them, and never print the standard panic message or a backtrace. Every
//! other panic (a bug) still does. [`install`] sets the process's panic hook; [`contain`] and
//! [`Contained`] run work whose panics are contained, and give back the panic's message and
//! place.

use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

thread_local! {
    /// Set while contained work runs on this thread.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
    /// What the last contained panic on this thread said, and where.
    static LAST: Cell<Option<String>> = const { Cell::new(None) };
}

type Hook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

/// Route contained panics away from the standard hook (which still reports the others).
/// Idempotent.
pub fn install() {
    static DEFAULT: OnceLock<()> = OnceLock::new();
    DEFAULT.get_or_init(|| {
        let default: Hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CONTAINED.with(Cell::get) {
                LAST.with(|last| last.set(Some(describe(info))));
            } else {
                default(info);
            }
        }));
    });
}

/// One line: the panic's message and where it happened.
fn describe(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    let message = message.replace(['\r', '\n'], " ");
    match info.location() {
        Some(place) => format!("{message} (at {}:{})", place.file(), place.line()),
        None => message,
    }
}

/// Run `work`; a panic in it is contained and its description given back.
pub fn contain<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    let outer = CONTAINED.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(work));
    CONTAINED.with(|c| c.set(outer));
    result.map_err(|_| LAST.with(Cell::take).unwrap_or_else(|| "a panic".to_string()))
}

/// A future whose panics are contained: polled with [`contain`], it ends with the panic's
/// description instead of unwinding into its caller.
pub struct Contained<F> {
    future: Pin<Box<F>>,
}

impl<F: Future> Contained<F> {
    /// Contain `future`'s panics.
    pub fn new(future: F) -> Self {
        Self { future: Box::pin(future) }
    }
}

impl<F: Future> Future for Contained<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.future.as_mut();
        match contain(|| future.poll(cx)) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(why) => Poll::Ready(Err(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contained_panic_gives_its_message_and_place() {
        install();
        let caught = contain(|| -> u32 { panic!("index out of range") }).expect_err("panicked");
        assert!(caught.starts_with("index out of range (at "), "{caught}");
        assert!(caught.contains("panics.rs:"), "{caught}");
        assert_eq!(contain(|| 7).ok(), Some(7));
    }

    #[tokio::test]
    async fn a_contained_future_ends_with_the_panic() {
        install();
        let caught = Contained::new(async {
            tokio::task::yield_now().await;
            let v: Vec<u8> = Vec::new();
            v[3]
        })
        .await
        .expect_err("panicked");
        assert!(caught.contains("index out of bounds"), "{caught}");
    }
}
