//! What a server that strangers can reach needs around `accept`: a count
//! of open connections held within limits (in all and per client address),
//! and a pause after failed accepts. The host's admin server and the
//! gossip data plane both use it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_total` connections were open.
    Total,
    /// `max_per_address` connections were open from the same address.
    PerAddress,
}

/// A refused connection: which limit, and the counts that hit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Over {
    pub refusal: Refusal,
    /// Connections open in all.
    pub total: usize,
    /// Of which from the refused connection's address.
    pub here: usize,
}

/// Open connections, counted against a total and a per-address limit.
pub struct ConnectionLimit {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One open connection's place in its [`ConnectionLimit`]; given back on drop.
pub struct Admitted {
    limit: Arc<ConnectionLimit>,
    address: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.limit.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.address);
            }
        }
    }
}

impl ConnectionLimit {
    /// At most `max_total` open connections, `max_per_address` from one address.
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(ConnectionLimit { max_total, max_per_address, open: Mutex::default() })
    }

    /// The total limit.
    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// The per-address limit.
    pub fn max_per_address(&self) -> usize {
        self.max_per_address
    }

    /// A std mutex held for a few counter updates, never across an await.
    fn lock(&self) -> MutexGuard<'_, Open> {
        crate::sync::lock(&self.open)
    }

    /// Counts a new connection from `address` in, unless a limit is reached
    /// (the total is checked first); the place is given back when the
    /// returned guard drops.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Admitted, Over> {
        let mut open = self.lock();
        let here = open.by_address.get(&address).copied().unwrap_or(0);
        let refusal = if open.total >= self.max_total {
            Some(Refusal::Total)
        } else if here >= self.max_per_address {
            Some(Refusal::PerAddress)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return Err(Over { refusal, total: open.total, here });
        }
        open.total += 1;
        *open.by_address.entry(address).or_default() += 1;
        Ok(Admitted { limit: self.clone(), address })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

/// The pause after failed accepts: a failed `accept` (out of descriptors,
/// say) leaves the connection queued, so trying again at once would spin
/// a core. 10 ms, doubling to 1 s; back to 10 ms after an accept succeeds.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// Starts at the first pause.
    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// An accept succeeded.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The pause to take now; the next one is twice as long (up to 1 s).
    pub fn pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        pause
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_holds_both_limits_and_a_closed_connection_frees_its_place() {
        let limit = ConnectionLimit::new(3, 2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        let a1 = limit.admit(a).unwrap();
        let _a2 = limit.admit(a).unwrap();
        assert_eq!(limit.admit(a).err().map(|o| o.refusal), Some(Refusal::PerAddress));
        let _b1 = limit.admit(b).unwrap();
        assert_eq!(limit.admit(b).err().map(|o| o.refusal), Some(Refusal::Total));
        assert_eq!(limit.open(), 3);
        drop(a1);
        assert_eq!(limit.open(), 2);
        let _a3 = limit.admit(a).unwrap();
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::new();
        let pauses: Vec<u128> = (0..9).map(|_| b.pause().as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.pause(), Duration::from_millis(10));
    }
}
