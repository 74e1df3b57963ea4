//! Bounds on what requests may hold: how long a body may take to arrive, and how many
//! body bytes are handled at once.
//!
//! A body costs several times its size while it is parsed, merged and answered, so the
//! sum of the bodies in flight is what bounds the memory of the process. Each `POST` reserves
//! its declared length (or the largest allowed body when the length is not declared) from a
//! [`BodyBudget`] before reading a byte, and keeps it until its answer is built.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::error::{ApiError, ErrorCode};

/// How long a `POST` waits for its share of the budget before it is told to retry. Short:
/// a waiting client is better off retrying after `Retry-After` than holding its connection.
pub const BUDGET_WAIT: Duration = Duration::from_secs(2);

/// The budget counts in KiB so that budgets of several GiB fit the semaphore's `u32`
/// acquisitions.
const UNIT: usize = 1024;

/// Bytes of request bodies the process handles at once.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total_units: usize,
}

/// A share of the [`BodyBudget`], returned when dropped.
#[derive(Debug)]
pub struct BodyReservation {
    _permit: OwnedSemaphorePermit,
}

impl BodyBudget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: usize) -> Self {
        let total_units = bytes
            .div_ceil(UNIT)
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Self {
            units: Arc::new(Semaphore::new(total_units)),
            total_units,
        }
    }

    /// Reserves `bytes` of the budget, waiting at most `wait` for other requests to give
    /// theirs back; beyond that the client is told to retry (`503 SERVER_BUSY`). A request
    /// larger than the whole budget reserves all of it, so it still runs, alone.
    pub async fn reserve(&self, bytes: usize, wait: Duration) -> Result<BodyReservation, ApiError> {
        let units = bytes.div_ceil(UNIT).clamp(1, self.total_units) as u32;
        let acquire = self.units.clone().acquire_many_owned(units);
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => Ok(BodyReservation { _permit: permit }),
            // The semaphore is never closed; treat it as busy if it ever is.
            Ok(Err(_)) | Err(_) => Err(ApiError::new(
                ErrorCode::ServerBusy,
                format!(
                    "too many request bodies are being handled at once; waited {} s",
                    wait.as_secs()
                ),
            )),
        }
    }

    /// Bytes not reserved now.
    pub fn available_bytes(&self) -> usize {
        self.units.available_permits() * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_beyond_the_budget_wait_then_are_refused() {
        let budget = BodyBudget::new(4 * UNIT);
        let first = budget
            .reserve(3 * UNIT, Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(budget.available_bytes(), UNIT);
        let refused = budget
            .reserve(2 * UNIT, Duration::from_millis(1))
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::ServerBusy);
        drop(first);
        assert_eq!(budget.available_bytes(), 4 * UNIT);
        let _second = budget
            .reserve(2 * UNIT, Duration::from_millis(1))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_body_larger_than_the_budget_takes_all_of_it() {
        let budget = BodyBudget::new(2 * UNIT);
        let all = budget
            .reserve(10 * UNIT, Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(budget.available_bytes(), 0);
        drop(all);
        let _small = budget.reserve(1, Duration::from_millis(1)).await.unwrap();
        assert_eq!(budget.available_bytes(), UNIT);
    }
}
