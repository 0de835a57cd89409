//! The epoch ticker: advances the engine's epoch with the wall clock, so a guest's
//! deadline (set in ticks of [`EPOCH_TICK`](super::EPOCH_TICK)) means wall time even on
//! a loaded machine where the thread wakes late. It ticks every `EPOCH_TICK` while a
//! guest call is in flight and once a second otherwise: a long-lived agent with
//! nothing to do wakes once a second, not a hundred times. Entering a call catches the
//! epoch up first, so a deadline set next is counted from now; a path that ran guest
//! code without entering would still be stopped, a second late at most.

use super::EPOCH_TICK;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use wasmtime::{Engine, EngineWeak};

/// How often the epoch advances when no call is in flight.
pub const IDLE_TICK: Duration = Duration::from_secs(1);

struct Ticks {
    done: u128,
    active: usize,
}

pub struct Ticker {
    engine: EngineWeak,
    started: Instant,
    ticks: Mutex<Ticks>,
    wake: Condvar,
    stop: AtomicBool,
}

/// A guest call in flight: the ticker runs at full rate until it is dropped.
pub struct Active(Arc<Ticker>);

impl Drop for Active {
    fn drop(&mut self) {
        if let Ok(mut t) = self.0.ticks.lock() {
            t.active = t.active.saturating_sub(1);
        }
    }
}

impl Ticker {
    /// Start ticking `engine` on a thread of its own (which ends with [`Ticker::stop`]
    /// or when the engine is gone).
    pub fn start(engine: &Engine) -> std::io::Result<Arc<Ticker>> {
        let ticker = Arc::new(Ticker {
            engine: engine.weak(),
            started: Instant::now(),
            ticks: Mutex::new(Ticks { done: 0, active: 0 }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let t = ticker.clone();
        std::thread::Builder::new()
            .name("tenet-epoch".into())
            .spawn(move || t.run())?;
        Ok(ticker)
    }

    /// Advance the epoch to what the wall clock says; false once the engine is gone.
    fn catch_up(&self, t: &mut Ticks) -> bool {
        let Some(engine) = self.engine.upgrade() else {
            return false;
        };
        let due = self.started.elapsed().as_millis() / EPOCH_TICK.as_millis().max(1);
        while t.done < due {
            engine.increment_epoch();
            t.done += 1;
        }
        true
    }

    fn run(&self) {
        let Ok(mut t) = self.ticks.lock() else { return };
        while !self.stop.load(Ordering::Relaxed) {
            let period = if t.active > 0 { EPOCH_TICK } else { IDLE_TICK };
            t = match self.wake.wait_timeout(t, period) {
                Ok((t, _)) => t,
                Err(_) => return,
            };
            if !self.catch_up(&mut t) {
                return;
            }
        }
    }

    /// A guest call starts: the epoch is brought up to now and ticks at full rate
    /// until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> Active {
        if let Ok(mut t) = self.ticks.lock() {
            self.catch_up(&mut t);
            t.active += 1;
        }
        self.wake.notify_one();
        Active(self.clone())
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_follows_the_wall_clock_at_full_rate_only_during_calls() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("engine");
        let ticker = Ticker::start(&engine).expect("ticker");
        // Idle: at most one catch-up a second.
        std::thread::sleep(Duration::from_millis(250));
        let idle = ticker.ticks.lock().expect("lock").done;
        assert!(idle <= 1, "idle ticks advanced {idle} times in 250 ms");
        // Entering catches up at once: the epoch says what the clock says.
        let active = ticker.enter();
        let now = ticker.ticks.lock().expect("lock").done;
        assert!(now >= 24, "caught up to {now} ticks after 250 ms");
        std::thread::sleep(Duration::from_millis(200));
        let later = ticker.ticks.lock().expect("lock").done;
        assert!(later >= now + 15, "full rate while active: {now} → {later}");
        drop(active);
        ticker.stop();
    }
}
