//! Reconciliation shards: which of `shard_count` shards a transaction ID
//! belongs to, and the DynamoDB partition key of a shard.
//!
//! Why shard at all: every transaction of one program and day shares the
//! natural partition key `ProgramID#FileDate`. A million writes under one key
//! make a hot partition (DynamoDB throttles a single partition at roughly
//! 1,000 writes a second whatever the table's capacity), so the items are
//! spread over `ProgramID#FileDate#ShardN` and the matcher reads each shard on
//! its own, in parallel.
//!
//! Why a stable hash: both sides of a transaction (the settlement detail and
//! the internal row) are written by different runs, possibly built by
//! different compilers, and must land in the same shard so that one shard
//! holds both halves of every pair. So the shard is 64-bit FNV-1a of the ID's
//! bytes ([`crate::partition::fnv1a_64`], defined in this crate and pinned by a
//! golden vector), never `std`'s randomly seeded `DefaultHasher`. Changing the
//! hash or the shard count of a `(ProgramID, FileDate)` that is already
//! stored would split pairs across shards: the count is fixed per run.

use crate::partition::fnv1a_64;
use chrono::NaiveDate;

/// Shards per `(ProgramID, FileDate)` unless configured otherwise. 64 keeps a
/// day of a few million transactions at some tens of thousands of items per
/// partition key.
pub const RECON_SHARD_COUNT_DEFAULT: u32 = 64;
/// Upper bound on the shard count: each shard is one matcher task, so this
/// also bounds the fan-out of one reconciliation.
pub const RECON_SHARD_COUNT_MAX: u32 = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reconciliation shard count {0} must be between 1 and {RECON_SHARD_COUNT_MAX}")]
pub struct BadShardCount(pub u32);

/// Accepts a shard count of 1 to [`RECON_SHARD_COUNT_MAX`].
pub fn check_shard_count(shard_count: u32) -> Result<u32, BadShardCount> {
    if (1..=RECON_SHARD_COUNT_MAX).contains(&shard_count) {
        Ok(shard_count)
    } else {
        Err(BadShardCount(shard_count))
    }
}

/// `fnv1a_64(transaction_id) % shard_count`. `shard_count` must have passed
/// [`check_shard_count`] (a zero count panics on the division).
pub fn recon_shard(transaction_id: &str, shard_count: u32) -> u32 {
    (fnv1a_64(transaction_id.as_bytes()) % u64::from(shard_count)) as u32
}

/// The partition key of one shard: `ProgramID#YYYY-MM-DD#N`.
pub fn shard_key(program_id: &str, file_date: NaiveDate, shard: u32) -> String {
    format!("{program_id}#{}#{shard}", file_date.format("%Y-%m-%d"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::date;

    // Computed independently with a few lines of Python implementing FNV-1a
    // 64 from its definition: (id, hash, hash % 64, hash % 1024, hash % 7).
    const GOLDEN: [(&str, u64, u32, u32, u32); 5] = [
        ("TXN-000000000001", 0x2302205182c6ca03, 3, 515, 5),
        ("TXN-000000000002", 0x2302215182c6cbb6, 54, 950, 1),
        ("A", 0xaf63fc4c860222ec, 44, 748, 3),
        ("20261120ACME000042", 0xad6158b37c282403, 3, 3, 2),
        ("visa/0001", 0xfd849f9db472ff72, 50, 882, 6),
    ];

    #[test]
    fn golden_vector_pins_the_shard_of_a_transaction_id() {
        // If this changes, every stored shard is wrong: never change it.
        for (id, hash, s64, s1024, s7) in GOLDEN {
            assert_eq!(fnv1a_64(id.as_bytes()), hash, "{id}");
            assert_eq!(recon_shard(id, RECON_SHARD_COUNT_DEFAULT), s64, "{id}");
            assert_eq!(recon_shard(id, RECON_SHARD_COUNT_MAX), s1024, "{id}");
            assert_eq!(recon_shard(id, 7), s7, "{id}");
        }
    }

    #[test]
    fn the_shard_key_is_program_date_and_shard() {
        assert_eq!(
            shard_key("ACME_1", date("2026-11-20"), 7),
            "ACME_1#2026-11-20#7"
        );
        assert_eq!(shard_key("X", date("2026-01-05"), 0), "X#2026-01-05#0");
    }

    #[test]
    fn shard_counts_must_be_between_one_and_the_maximum() {
        for ok in [1, 2, 64, 1000, RECON_SHARD_COUNT_MAX] {
            assert_eq!(check_shard_count(ok), Ok(ok));
        }
        for bad in [0, RECON_SHARD_COUNT_MAX + 1, u32::MAX] {
            assert_eq!(check_shard_count(bad), Err(BadShardCount(bad)));
        }
    }

    #[test]
    fn every_shard_is_in_range_and_the_spread_is_roughly_even() {
        let mut counts = [0u32; RECON_SHARD_COUNT_DEFAULT as usize];
        for i in 0..64_000 {
            let s = recon_shard(&format!("TXN-{i:012}"), RECON_SHARD_COUNT_DEFAULT);
            counts[s as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
}
