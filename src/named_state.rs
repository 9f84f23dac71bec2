//! State kept by name for the life of the process, shared by every snapshot that names it: a
//! credential refresh rebuilds every virtual key, and its request counts must carry on (a key's
//! rate-limit window).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One `T` per name, made on first use.
pub struct NamedState<T> {
    by_name: Mutex<HashMap<String, Arc<T>>>,
}

impl<T> Default for NamedState<T> {
    fn default() -> Self {
        NamedState {
            by_name: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Default> NamedState<T> {
    /// The state of `name`, the same one every time.
    pub fn get(&self, name: &str) -> Arc<T> {
        let mut by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        by_name.entry(name.to_string()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_name_keeps_its_state_and_names_do_not_share() {
        let states: NamedState<AtomicU32> = NamedState::default();
        states.get("a").fetch_add(1, Ordering::Relaxed);
        assert_eq!(states.get("a").load(Ordering::Relaxed), 1);
        assert_eq!(states.get("b").load(Ordering::Relaxed), 0);
    }
}
