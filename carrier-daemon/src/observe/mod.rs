//! What the daemon counts: named event counters (admissions, refusals by
//! reason, evictions, ...), read by `carrierctl counters` over the control
//! socket. The bottom layer: any layer may count, none is imported here.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Event counters since start, by name.
#[derive(Debug, Default)]
pub struct Counters {
    values: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    /// Adds one to `name`.
    pub fn count(&self, name: impl Into<String>) {
        *self.values.lock().unwrap_or_else(PoisonError::into_inner).entry(name.into()).or_insert(0) += 1;
    }

    /// Every counter's value now.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.values.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_name_apart() {
        let counters = Counters::default();
        counters.count("a");
        counters.count("b");
        counters.count(String::from("a"));
        assert_eq!(counters.snapshot(), BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 1)]));
    }
}
