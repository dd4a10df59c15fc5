//! Which alert partitions each instance evaluates: a pure decision from what the lease table
//! shows, made by every instance for itself about once a second ([`crate::crm::partitioned`]).
//!
//! Each instance evaluating alerts keeps an **evaluator** lease, `evaluator:<instance id>`,
//! renewed at every round; one renewed within [`FRESH_MS`] is *fresh*. Each partition `k`
//! belongs to the fresh instance with the highest rendezvous score for `k` (highest random
//! weight hashing: FNV-1a of the instance id and `k`). So every instance that sees the same
//! fresh set reaches the same owner for every partition with no message exchanged, instances
//! joining or leaving move only their share of partitions, and the shares come out even within
//! a few partitions. An instance takes the partitions it owns once their lease is free (or
//! lapsed), and gives up those it holds but no longer owns, so that their owner can take them.
//!
//! An instance that dies stops renewing: within [`FRESH_MS`] the others stop counting it, and
//! each partition it held goes to its new owner as soon as its lease lapses
//! ([`PARTITION_TTL_MS`]). An instance whose evaluation is stuck (its loop blocked) stops
//! renewing its evaluator lease too, so its partitions move though the process lives; any write
//! it makes later is refused by the partition's fence.

use std::collections::{BTreeSet, HashMap};

use crate::domain::partition::ALERT_PARTITIONS;

/// The start of every partition lease's name: `alerts:<k>`.
pub const PARTITION_PREFIX: &str = "alerts:";

/// The start of every evaluator lease's name: `evaluator:<instance id>`.
pub const EVALUATOR_PREFIX: &str = "evaluator:";

/// How long a partition's lease lasts unless renewed: once its holder is gone, how long until
/// another instance may take it. With [`FRESH_MS`] and a round a second, a dead instance's
/// partitions are evaluated elsewhere within about 6 s and a rebuild (the alarm budget is 10 s).
pub const PARTITION_TTL_MS: i64 = 5_000;

/// How long an evaluator lease lasts unless renewed (it is renewed every round).
pub const EVALUATOR_TTL_MS: i64 = 5_000;

/// An evaluator renewed within this long is fresh: counted among the partitions' owners.
pub const FRESH_MS: i64 = 3_000;

/// The lease of partition `k`.
pub fn partition_lease(k: u16) -> String {
    format!("{PARTITION_PREFIX}{k}")
}

/// The partition a lease name is about, if it is a partition lease.
pub fn partition_of_lease(name: &str) -> Option<u16> {
    name.strip_prefix(PARTITION_PREFIX)?
        .parse()
        .ok()
        .filter(|k| *k < ALERT_PARTITIONS)
}

/// The evaluator lease of instance `id`.
pub fn evaluator_lease(id: &str) -> String {
    format!("{EVALUATOR_PREFIX}{id}")
}

/// Whether an evaluator lease expiring at `expires_ms` was renewed within [`FRESH_MS`] of
/// `now_ms`.
pub fn is_fresh(expires_ms: i64, now_ms: i64) -> bool {
    expires_ms - EVALUATOR_TTL_MS > now_ms - FRESH_MS
}

/// Instance `id`'s rendezvous score for partition `k`.
fn score(id: &str, k: u16) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain(k.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for inputs differing only in their last bytes; a final
    // avalanche (from MurmurHash3's fmix64) spreads them.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The owner of partition `k` among `fresh` instances (`None` when there are none).
pub fn owner(fresh: &BTreeSet<String>, k: u16) -> Option<&str> {
    fresh
        .iter()
        .max_by_key(|id| (score(id, k), id.as_str()))
        .map(String::as_str)
}

/// What one instance sees in a round.
#[derive(Debug, Clone)]
pub struct Seen<'a> {
    /// This instance.
    pub me: &'a str,
    /// The fresh evaluators (this instance is counted whatever the table says).
    pub fresh: BTreeSet<String>,
    /// The holder of each partition whose lease is held now.
    pub holders: HashMap<u16, String>,
    /// The partitions this instance evaluates now.
    pub mine: BTreeSet<u16>,
}

/// What to do in a round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moves {
    /// Partitions to take (they are this instance's and free).
    pub take: Vec<u16>,
    /// Partitions held that stay (to be renewed).
    pub keep: Vec<u16>,
    /// Partitions held that are another fresh instance's now: given up for it to take.
    pub give_up: Vec<u16>,
}

/// The round's moves for `seen.me`.
pub fn decide(seen: &Seen<'_>) -> Moves {
    let mut fresh = seen.fresh.clone();
    fresh.insert(seen.me.to_owned());
    let mut moves = Moves::default();
    for k in 0..ALERT_PARTITIONS {
        let mine = owner(&fresh, k) == Some(seen.me);
        if seen.mine.contains(&k) {
            if mine {
                moves.keep.push(k);
            } else {
                moves.give_up.push(k);
            }
        } else if mine && !seen.holders.contains_key(&k) {
            moves.take.push(k);
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn shares(fresh: &BTreeSet<String>) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for k in 0..ALERT_PARTITIONS {
            *out.entry(owner(fresh, k).unwrap().to_owned()).or_default() += 1;
        }
        out
    }

    #[test]
    fn every_partition_has_one_owner_and_the_shares_are_near_even() {
        for n in 1..=5usize {
            let ids: Vec<String> = (0..n).map(|i| format!("host-{i}-{}", 4000 + i)).collect();
            let fresh: BTreeSet<String> = ids.iter().cloned().collect();
            let shares = shares(&fresh);
            assert_eq!(
                shares.values().sum::<usize>(),
                usize::from(ALERT_PARTITIONS)
            );
            let fair = usize::from(ALERT_PARTITIONS) / n;
            for id in &ids {
                let got = shares.get(id).copied().unwrap_or(0);
                assert!(
                    got + fair / 2 + 3 >= fair && got <= fair + fair / 2 + 3,
                    "{n} instances: {id} owns {got}, fair {fair}: {shares:?}"
                );
            }
        }
    }

    #[test]
    fn an_instance_leaving_moves_only_its_own_partitions() {
        let three = set(&["a:1", "b:2", "c:3"]);
        let two = set(&["a:1", "b:2"]);
        for k in 0..ALERT_PARTITIONS {
            let before = owner(&three, k).unwrap();
            let after = owner(&two, k).unwrap();
            if before != "c:3" {
                assert_eq!(before, after, "partition {k} moved needlessly");
            }
        }
    }

    #[test]
    fn a_round_takes_free_partitions_it_owns_keeps_its_own_and_gives_up_the_rest() {
        let fresh = set(&["a", "b"]);
        let owned_by_a: BTreeSet<u16> = (0..ALERT_PARTITIONS)
            .filter(|k| owner(&fresh, *k) == Some("a"))
            .collect();
        let owned_by_b: BTreeSet<u16> = (0..ALERT_PARTITIONS)
            .filter(|k| owner(&fresh, *k) == Some("b"))
            .collect();
        assert!(!owned_by_a.is_empty() && !owned_by_b.is_empty());
        // `a` evaluated everything alone; `b` has just joined and holds nothing.
        let all: BTreeSet<u16> = (0..ALERT_PARTITIONS).collect();
        let holders = all.iter().map(|k| (*k, "a".to_owned())).collect();
        let a = decide(&Seen {
            me: "a",
            fresh: fresh.clone(),
            holders,
            mine: all.clone(),
        });
        assert_eq!(a.take, Vec::<u16>::new());
        assert_eq!(a.keep, owned_by_a.iter().copied().collect::<Vec<_>>());
        assert_eq!(a.give_up, owned_by_b.iter().copied().collect::<Vec<_>>());
        // `b` takes its own once `a` has given them up, not before.
        let holders: HashMap<u16, String> =
            owned_by_a.iter().map(|k| (*k, "a".to_owned())).collect();
        let b = decide(&Seen {
            me: "b",
            fresh: fresh.clone(),
            holders: holders.clone(),
            mine: BTreeSet::new(),
        });
        assert_eq!(b.take, owned_by_b.iter().copied().collect::<Vec<_>>());
        let mut still_held = holders;
        still_held.insert(*owned_by_b.first().unwrap(), "a".to_owned());
        let b = decide(&Seen {
            me: "b",
            fresh,
            holders: still_held,
            mine: BTreeSet::new(),
        });
        assert!(!b.take.contains(owned_by_b.first().unwrap()));
    }

    #[test]
    fn an_instance_counts_itself_even_before_its_own_lease_shows() {
        let d = decide(&Seen {
            me: "alone",
            fresh: BTreeSet::new(),
            holders: HashMap::new(),
            mine: BTreeSet::new(),
        });
        assert_eq!(d.take.len(), usize::from(ALERT_PARTITIONS));
    }

    #[test]
    fn freshness_is_a_renewal_within_the_window() {
        let now = 1_000_000;
        assert!(is_fresh(now + EVALUATOR_TTL_MS, now));
        assert!(is_fresh(now + EVALUATOR_TTL_MS - FRESH_MS + 1, now));
        assert!(!is_fresh(now + EVALUATOR_TTL_MS - FRESH_MS, now));
        assert!(!is_fresh(0, now));
        assert_eq!(partition_of_lease(&partition_lease(7)), Some(7));
        assert_eq!(partition_of_lease("alerts:32"), None);
        assert_eq!(partition_of_lease("outbox:webhook"), None);
    }
}
