//! Login throttling: a failure budget per address, an exponential backoff per account, and
//! the bounded tables that remember both.
//!
//! Every login that passes the checks reserves a failure at once, in the same step as the
//! check ([`Throttle::begin`]), and gets it back when it succeeds; so concurrent guesses
//! cannot all pass a check before any of them is counted.
//!
//! An account's backoff does not apply to the addresses it last logged in from
//! ([`KNOWN_ADDRESSES`] per account), so strangers elsewhere who make an account back off do
//! not lock out its owner. A failed login from such an address forgets it.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use super::Limits;

/// Addresses an account last logged in from, exempt from its backoff.
pub(crate) const KNOWN_ADDRESSES: usize = 4;

/// What the per-address limits count as one address: an IPv4 address, or the /64 prefix of an
/// IPv6 address (one subscriber usually holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct AddrGroup(IpAddr);

impl From<IpAddr> for AddrGroup {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => Self(IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !(u128::MAX >> 64)))),
            v4 => Self(v4),
        }
    }
}

impl fmt::Display for AddrGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// An entry that knows when it was last renewed (for expiry and eviction).
trait Stamped {
    fn stamp(&self) -> Instant;
}

/// A map of at most `max` entries, each forgotten `ttl` after its stamp. When a new key
/// arrives at a full table, expired entries go first, then the one with the oldest stamp.
#[derive(Debug)]
struct Table<K, V> {
    map: HashMap<K, V>,
    max: usize,
    ttl: Duration,
}

impl<K: Eq + Hash + Clone, V: Stamped> Table<K, V> {
    fn new(max: usize, ttl: Duration) -> Self {
        Self { map: HashMap::new(), max: max.max(1), ttl }
    }

    fn live(&self, v: &V, now: Instant) -> bool {
        now.saturating_duration_since(v.stamp()) <= self.ttl
    }

    /// The live entry for `key`, or `fresh()` in its place.
    fn entry(&mut self, key: &K, now: Instant, fresh: impl FnOnce() -> V) -> &mut V {
        if self.map.get(key).is_some_and(|v| !self.live(v, now)) {
            self.map.remove(key);
        }
        if !self.map.contains_key(key) && self.map.len() >= self.max {
            let ttl = self.ttl;
            self.map.retain(|_, v| now.saturating_duration_since(v.stamp()) <= ttl);
            if self.map.len() >= self.max {
                let oldest = self.map.iter().min_by_key(|(_, v)| v.stamp()).map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.map.remove(&oldest);
                }
            }
        }
        self.map.entry(key.clone()).or_insert_with(fresh)
    }

    /// The live entry for `key`, if there is one.
    fn get_mut(&mut self, key: &K, now: Instant) -> Option<&mut V> {
        let ttl = self.ttl;
        self.map.get_mut(key).filter(|v| now.saturating_duration_since(v.stamp()) <= ttl)
    }
}

/// Failed logins from one address group within the current window.
#[derive(Debug)]
struct AddrFailures {
    failures: u32,
    since: Instant,
}

impl Stamped for AddrFailures {
    fn stamp(&self) -> Instant {
        self.since
    }
}

/// One account's failed logins and when the next try may be checked.
#[derive(Debug)]
struct AccountFailures {
    failures: u32,
    last: Instant,
    next_try: Instant,
}

impl Stamped for AccountFailures {
    fn stamp(&self) -> Instant {
        self.last
    }
}

/// The address groups an account last logged in from, most recent first.
#[derive(Debug)]
struct Known {
    groups: Vec<AddrGroup>,
    last: Instant,
}

impl Stamped for Known {
    fn stamp(&self) -> Instant {
        self.last
    }
}

/// Why a login is refused without checking its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The address used up its failure budget for the current window.
    Address { retry_in: Duration },
    /// The account backs off after failures.
    Account { retry_in: Duration },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whose, retry_in) = match self {
            Self::Address { retry_in } => ("from your address", retry_in),
            Self::Account { retry_in } => ("for this account", retry_in),
        };
        let secs = retry_in.as_secs() + u64::from(retry_in.subsec_nanos() > 0);
        write!(f, "too many failed logins {whose}; retry in {secs} s")
    }
}

/// A login allowed to be checked, with a failure reserved for it.
#[derive(Debug)]
pub(crate) struct Attempt {
    group: AddrGroup,
    account: String,
    known: bool,
}

/// How long an account waits before its next login is checked.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    /// Failures without a wait.
    free: u32,
    /// The first wait; each further failure doubles it.
    first: Duration,
    /// The longest wait.
    max: Duration,
}

impl Backoff {
    /// The wait after an account's `failures`-th failure.
    fn after(self, failures: u32) -> Duration {
        match failures.checked_sub(self.free) {
            None => Duration::ZERO,
            Some(n) => self.first.saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX)).min(self.max),
        }
    }
}

/// The failure budgets and backoffs of all logins.
#[derive(Debug)]
pub(crate) struct Throttle {
    addresses: Table<AddrGroup, AddrFailures>,
    accounts: Table<String, AccountFailures>,
    known: Table<String, Known>,
    /// Failures per address group and window.
    per_address: u32,
    /// The per-address window (also how long account failures are remembered).
    window: Duration,
    backoff: Backoff,
}

impl Throttle {
    pub(crate) fn new(limits: &Limits) -> Self {
        let window = limits.login_lockout;
        let entries = limits.login_table_entries;
        Self {
            addresses: Table::new(entries, window),
            accounts: Table::new(entries, window),
            known: Table::new(entries, Duration::MAX),
            per_address: limits.max_login_failures_per_ip,
            window,
            backoff: Backoff { free: limits.max_login_failures, first: limits.login_backoff, max: window },
        }
    }

    /// Checks that a login for `account` from `group` may be checked now and, in the same
    /// step, counts it as failed until [`succeeded`](Self::succeeded) or
    /// [`cancelled`](Self::cancelled) says otherwise.
    pub(crate) fn begin(
        &mut self,
        group: AddrGroup,
        account: &str,
        now: Instant,
    ) -> Result<Attempt, Refusal> {
        let account = account.to_string();
        let known = self.known.get_mut(&account, now).is_some_and(|k| k.groups.contains(&group));
        let addr = self.addresses.entry(&group, now, || AddrFailures { failures: 0, since: now });
        if !known && addr.failures >= self.per_address {
            let retry_in = self.window.saturating_sub(now.saturating_duration_since(addr.since));
            return Err(Refusal::Address { retry_in });
        }
        let acct =
            self.accounts.entry(&account, now, || AccountFailures { failures: 0, last: now, next_try: now });
        if !known && now < acct.next_try {
            return Err(Refusal::Account { retry_in: acct.next_try - now });
        }
        acct.failures = acct.failures.saturating_add(1);
        acct.last = now;
        acct.next_try = acct.next_try.max(later(now, self.backoff.after(acct.failures)));
        addr.failures = addr.failures.saturating_add(1);
        Ok(Attempt { group, account, known })
    }

    /// The secret was right: the reserved failure is returned, the account's failures are
    /// forgotten and `group` becomes one of its known addresses.
    pub(crate) fn succeeded(&mut self, attempt: Attempt, now: Instant) {
        self.refund_address(attempt.group, now);
        self.accounts.map.remove(&attempt.account);
        let known = self.known.entry(&attempt.account, now, || Known { groups: Vec::new(), last: now });
        known.last = now;
        known.groups.retain(|g| *g != attempt.group);
        known.groups.insert(0, attempt.group);
        known.groups.truncate(KNOWN_ADDRESSES);
    }

    /// The secret was wrong: the failure stays counted, and a known address is known no more.
    pub(crate) fn failed(&mut self, attempt: Attempt, now: Instant) {
        if attempt.known {
            if let Some(k) = self.known.get_mut(&attempt.account, now) {
                k.groups.retain(|g| *g != attempt.group);
            }
        }
    }

    /// The secret was never checked (the server was busy): the reserved failure is returned
    /// (a backoff it started stays).
    pub(crate) fn cancelled(&mut self, attempt: Attempt, now: Instant) {
        self.refund_address(attempt.group, now);
        if let Some(a) = self.accounts.get_mut(&attempt.account, now) {
            a.failures = a.failures.saturating_sub(1);
        }
    }

    fn refund_address(&mut self, group: AddrGroup, now: Instant) {
        if let Some(a) = self.addresses.get_mut(&group, now) {
            a.failures = a.failures.saturating_sub(1);
            if a.failures == 0 {
                self.addresses.map.remove(&group);
            }
        }
    }
}

/// `now + d`, or about a century later if that overflows.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).or_else(|| now.checked_add(Duration::from_secs(u32::MAX.into()))).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_login_failures: 2,
            max_login_failures_per_ip: 4,
            login_backoff: Duration::from_secs(1),
            login_lockout: Duration::from_secs(60),
            login_table_entries: 3,
            ..Limits::default()
        }
    }

    fn group(s: &str) -> AddrGroup {
        AddrGroup::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn ipv6_addresses_are_grouped_by_64() {
        assert_eq!(group("2001:db8:1:2:aaaa::1"), group("2001:db8:1:2:bbbb::2"));
        assert_ne!(group("2001:db8:1:2::1"), group("2001:db8:1:3::1"));
        assert_eq!(group("::ffff:192.0.2.7"), group("192.0.2.7"));
        assert_ne!(group("192.0.2.7"), group("192.0.2.8"));
        assert_eq!(group("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn tables_are_bounded_and_expire() {
        let t0 = Instant::now();
        let mut t: Table<u32, AddrFailures> = Table::new(3, Duration::from_secs(10));
        for k in 0..10 {
            t.entry(&k, t0 + Duration::from_secs(k.into()), || AddrFailures {
                failures: k,
                since: t0 + Duration::from_secs(k.into()),
            });
            assert!(t.map.len() <= 3);
        }
        // The oldest went first.
        assert!(t.map.contains_key(&9) && t.map.contains_key(&8) && t.map.contains_key(&7));
        // Past its time to live an entry starts afresh.
        let late = t0 + Duration::from_secs(30);
        assert!(t.get_mut(&9, late).is_none());
        assert_eq!(t.entry(&9, late, || AddrFailures { failures: 0, since: late }).failures, 0);
    }

    #[test]
    fn accounts_back_off_exponentially_and_known_addresses_are_exempt() {
        let mut th = Throttle::new(&limits());
        let t0 = Instant::now();
        let (home, away) = (group("192.0.2.1"), group("198.51.100.1"));
        let a = th.begin(home, "alice", t0).unwrap();
        th.succeeded(a, t0);
        // Two failures free, then 1 s, 2 s, 4 s...
        for (i, wait) in [0, 1, 2, 4].into_iter().enumerate() {
            let t = t0 + Duration::from_secs(10 * i as u64);
            let a = th.begin(away, "alice", t).unwrap();
            th.failed(a, t);
            assert_eq!(th.accounts.map["alice"].next_try - t, Duration::from_secs(wait));
        }
        // The address used up its budget of 4, whatever the account.
        let t = t0 + Duration::from_secs(31);
        assert_eq!(
            th.begin(away, "bob", t).map(|_| ()),
            Err(Refusal::Address { retry_in: Duration::from_secs(29) })
        );
        assert!(matches!(th.begin(group("203.0.113.9"), "alice", t), Err(Refusal::Account { .. })));
        // Alice's own address is exempt; one failure from it ends that.
        let a = th.begin(home, "alice", t).unwrap();
        th.failed(a, t);
        assert!(matches!(th.begin(home, "alice", t), Err(Refusal::Account { .. })));
    }

    #[test]
    fn check_and_count_are_one_step() {
        let mut th = Throttle::new(&limits());
        let t = Instant::now();
        let g = group("192.0.2.1");
        // Two logins in flight at once use up the free failures: the third waits.
        let (a, b) = (th.begin(g, "bob", t).unwrap(), th.begin(g, "bob", t).unwrap());
        assert!(matches!(th.begin(g, "bob", t), Err(Refusal::Account { .. })));
        th.cancelled(a, t);
        th.succeeded(b, t);
        assert!(th.begin(g, "bob", t).is_ok());
    }
}
